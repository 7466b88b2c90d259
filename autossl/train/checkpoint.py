"""Checkpoint I/O: atomic writes (temporary file, fsync, rename) and safe reads (weights_only)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from ..core.io import atomic_torch_save, load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """A crash or a full disk mid-save never leaves a truncated `last.ckpt`: the old file stays
    until the new one is complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def check_writable(folder: str | Path) -> Path:
    """Fail early, in one line, when the output folder cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"output folder {folder} is not writable ({err.strerror}); "
                              f"set checkpoint.dir (or --out) to a folder you can write") from None
    return folder
