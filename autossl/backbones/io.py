"""Export and load backbone weights as safetensors, with the backbone spec in the metadata."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from safetensors import safe_open

from ..core.io import atomic_open
from .registry import Backbone, checked_spec, create_backbone

SPEC_KEY = "autossl.backbone"


def save(backbone: Backbone, path: str | Path) -> Path:
    """Write the backbone's weights (without the `model.` prefix, so a plain timm model of the
    same architecture loads them) and its spec as metadata. Written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in backbone.model.state_dict().items()}
    with atomic_open(path, "wb") as f:
        f.write(save_bytes(tensors, metadata={SPEC_KEY: json.dumps(backbone.spec)}))
    return Path(path)


def read_spec(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if SPEC_KEY not in meta:
        raise ValueError(f"{path} has no autossl backbone metadata; was it written by `autossl export`?")
    return json.loads(meta[SPEC_KEY])


def load(path: str | Path, map_location: str = "cpu") -> Backbone:
    """Rebuild the backbone named in the file's metadata and load its weights."""
    spec = checked_spec(read_spec(path), str(path))
    backbone = create_backbone(**spec)
    backbone.model.load_state_dict(load_file(str(path), device=map_location))
    return backbone
