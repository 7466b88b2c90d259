"""Training: optimisers and schedules, checkpoint I/O, configuration, and the pretraining run.

Imported lazily: methods use `train.optim`, and `train.run` uses methods.
"""
import importlib

_EXPORTS = {"ConfigError": "config", "available_experiments": "config", "compose": "config", "validate": "config",
            "build_loaders": "run", "build_model": "run", "build_trainer": "run", "pretrain": "run",
            "export_backbone": "export", "backbone_from_checkpoint": "export", "method_from_checkpoint": "export"}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'autossl.train' has no attribute '{name}'")


__all__ = list(_EXPORTS)
