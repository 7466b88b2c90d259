"""`autossl export CKPT --out backbone.safetensors`: the backbone alone, loadable in plain timm."""
from __future__ import annotations

from pathlib import Path

from ..backbones import save
from ..methods.checkpoint import backbone_from_checkpoint, method_from_checkpoint

__all__ = ["export_backbone", "backbone_from_checkpoint", "method_from_checkpoint"]


def export_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    return save(backbone_from_checkpoint(checkpoint), out)
