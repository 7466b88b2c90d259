"""Files: atomic writes (a crash never leaves half a file) and safe reads (tensors only, never
pickled code). Every layer that writes or reads user files goes through here."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import torch


class UnsafeCheckpointError(RuntimeError):
    pass


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see the old
    file or the new one, never a truncated one. The temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load with weights_only=True: a pickle that would run code is refused with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError and friends
        if "weights_only" in str(err) or "Unsupported global" in str(err) or "UnpicklingError" in type(err).__name__:
            raise UnsafeCheckpointError(f"refusing to load {path}: it contains pickled objects that could run code "
                                        f"(only tensors and plain values are allowed)") from None
        raise


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights_only); unwraps {'state_dict': ...}."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = load_checkpoint(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return obj
