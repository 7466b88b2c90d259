"""Loading files that may come from anywhere: tensors only, never arbitrary pickled code."""
from __future__ import annotations

from pathlib import Path

import torch


class UnsafeCheckpointError(RuntimeError):
    pass


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
