"""From a training checkpoint to the backbone alone (safetensors), or back to a full method."""
from __future__ import annotations

from pathlib import Path

from ..backbones import Backbone, create_backbone, save
from .safe_load import load_checkpoint


def backbone_from_checkpoint(path: str | Path) -> Backbone:
    """Rebuild the backbone described in an autossl checkpoint and load its trained weights."""
    ckpt = load_checkpoint(path)
    info = ckpt.get("autossl")
    if not info:
        raise ValueError(f"{path} is not an autossl training checkpoint (no 'autossl' entry); "
                         f"export checkpoints written by `autossl pretrain` or an autossl method")
    backbone = create_backbone(**info["backbone"])
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    backbone.load_state_dict(state)
    return backbone


def method_from_checkpoint(path: str | Path):
    """The full method (heads, probe) with its trained weights, from an autossl checkpoint."""
    from ..methods import get_method

    ckpt = load_checkpoint(path)
    info = ckpt.get("autossl") if isinstance(ckpt, dict) else None
    if not info or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an autossl training checkpoint (no 'autossl' entry); give a checkpoint "
                         f"written by an autossl method, or export weights with `autossl export`")
    # pretrained=False: the checkpoint's weights replace them anyway; compile=False: using it needs no graph capture
    model = get_method(info["method"])(**{**ckpt.get("hyper_parameters", {}), "pretrained": False, "compile": False})
    model.load_state_dict(ckpt["state_dict"])
    return model


def export_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    """`autossl export CKPT --out backbone.safetensors`."""
    return save(backbone_from_checkpoint(checkpoint), out)
