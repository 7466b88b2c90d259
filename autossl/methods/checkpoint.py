"""From an autossl training checkpoint back to its backbone or its whole method (read weights-only).

Lives with the methods, below evaluation and training, because both need it: evaluation scores a
checkpoint's backbone, `autossl export` writes it as safetensors."""
from __future__ import annotations

from pathlib import Path

from ..backbones import Backbone, create_backbone
from ..core.io import load_checkpoint
from ..core.registry import METHODS


def _autossl_checkpoint(path: str | Path) -> dict:
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not ckpt.get("autossl") or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an autossl training checkpoint (no 'autossl' entry); give a checkpoint "
                         f"written by `autossl pretrain` or an autossl method, or export weights with `autossl export`")
    return ckpt


def backbone_from_checkpoint(path: str | Path) -> Backbone:
    """Rebuild the backbone described in an autossl checkpoint and load its trained weights."""
    ckpt = _autossl_checkpoint(path)
    backbone = create_backbone(**ckpt["autossl"]["backbone"])
    prefix = "backbone."
    backbone.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    return backbone


def method_from_checkpoint(path: str | Path):
    """The full method (heads, probe) with its trained weights, from an autossl checkpoint."""
    ckpt = _autossl_checkpoint(path)
    cls = METHODS.get(ckpt["autossl"]["method"])
    # pretrained=False: the checkpoint's weights replace them anyway; compile=False: using it needs no graph capture
    model = cls(**{**ckpt.get("hyper_parameters", {}), "pretrained": False, "compile": False})
    model.on_load_checkpoint(ckpt)  # builds what the checkpoint holds beyond the constructor (the probe)
    model.load_state_dict(ckpt["state_dict"])
    return model


def head_state_from_checkpoint(path: str | Path, prefix: str = "decoder.") -> dict:
    """The weights of one head of a trained method (e.g. the MAE/FCMAE decoder), prefix removed."""
    ckpt = _autossl_checkpoint(path)
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path} has no '{prefix.rstrip('.')}' weights ({ckpt['autossl']['method']} has none)")
    return state
