"""`autossl export CKPT --out backbone.safetensors`: the backbone alone, loadable in plain timm."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save as save_bytes

from ..backbones import save
from ..core.io import atomic_open
from ..methods.checkpoint import backbone_from_checkpoint, head_state_from_checkpoint, method_from_checkpoint

__all__ = ["export_backbone", "export_decoder", "backbone_from_checkpoint", "method_from_checkpoint"]


def export_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    """The encoder: timm's own state-dict keys, so `timm.create_model(name, num_classes=0)` loads it."""
    return save(backbone_from_checkpoint(checkpoint), out)


def export_decoder(checkpoint: str | Path, out: str | Path) -> Path:
    """A masked-image-modelling run's decoder, on its own (safetensors, keys as in `heads.decoders`)."""
    state = {k: v.detach().contiguous().cpu() for k, v in head_state_from_checkpoint(checkpoint, "decoder.").items()}
    with atomic_open(out, "wb") as f:
        f.write(save_bytes(state))
    return Path(out)
