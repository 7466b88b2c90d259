"""Training: configuration (Hydra), the pretraining run, checkpoint I/O, sweeps and export."""
from .callbacks import GatheredSyncBatchNorm
from .config import ConfigError, available_experiments, compose, validate
from .export import backbone_from_checkpoint, export_backbone, export_decoder, method_from_checkpoint
from .run import build_loaders, build_model, build_trainer, pretrain

__all__ = ["GatheredSyncBatchNorm", "ConfigError", "available_experiments", "compose", "validate", "build_loaders",
           "build_model", "build_trainer", "pretrain", "export_backbone", "export_decoder", "backbone_from_checkpoint",
           "method_from_checkpoint"]
