"""Backbones: `create_backbone(name, **kwargs)` returns a feature extractor reporting `num_features`."""
from .io import load, read_spec, save
from .registry import Backbone, available_backbones, create_backbone, is_fixed_size, resolve_name

__all__ = ["Backbone", "create_backbone", "available_backbones", "is_fixed_size", "resolve_name", "load", "save", "read_spec"]
