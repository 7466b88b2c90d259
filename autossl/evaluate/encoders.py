"""Whatever the user calls "the model" -> the feature extractor (an nn.Module: images -> [B, D]).

Accepted: an autossl method (its backbone), a bare nn.Module, a training checkpoint (.ckpt, read
with weights_only=True), a run folder holding last.ckpt, or an exported .safetensors backbone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from ..backbones import load
from ..methods import SSLMethod
from ..methods.checkpoint import method_from_checkpoint


def load_encoder(model: Any) -> tuple[nn.Module, dict]:
    """(feature extractor, {'source': ..., 'method': ..., 'backbone': ...}) for any accepted model."""
    if isinstance(model, (str, Path)):
        return _from_path(Path(model))
    if isinstance(model, SSLMethod):
        return model.backbone, {"source": type(model).__name__, "method": model.name,
                                "backbone": model.backbone.spec.get("name")}
    if isinstance(model, nn.Module):
        spec = getattr(model, "spec", None)
        return model, {"source": type(model).__name__, "backbone": spec.get("name") if isinstance(spec, dict) else None}
    raise TypeError(f"cannot evaluate a {type(model).__name__}; give an autossl method, an nn.Module backbone, "
                    f"a .ckpt checkpoint, a run folder or a .safetensors file")


def model_name(model: Any, info: dict) -> str:
    """A short label for tables: the run folder or file name for paths, the class name otherwise."""
    if isinstance(model, (str, Path)):
        p = Path(model)
        return p.parent.name if p.name == "last.ckpt" else p.stem if p.is_file() else p.name
    return str(info.get("method") or info.get("source"))


def _from_path(path: Path) -> tuple[nn.Module, dict]:
    if path.is_dir():
        ckpt = path / "last.ckpt"
        if not ckpt.is_file():
            found = sorted(path.glob("*.ckpt")) + sorted(path.glob("*.safetensors"))
            if not found:
                raise FileNotFoundError(f"no last.ckpt, .ckpt or .safetensors file in {path}; point at a run folder "
                                        f"written by `autossl pretrain` or at a checkpoint file")
            ckpt = found[-1]
        path = ckpt
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}; give a .ckpt checkpoint, a run folder or a .safetensors file")
    if path.suffix == ".safetensors":
        backbone = load(path)
        return backbone, {"source": str(path), "backbone": backbone.spec.get("name")}
    return _from_checkpoint(path)


def _from_checkpoint(path: Path) -> tuple[nn.Module, dict]:
    method = method_from_checkpoint(path)
    return method.backbone, {"source": str(path), "method": method.name, "backbone": method.backbone.spec.get("name")}
