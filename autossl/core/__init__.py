"""The bottom layer: the registry (names -> objects, with "did you mean"), safe file I/O (atomic writes,
weights-only reads: `core.io`), distributed helpers (`core.distributed`) and the k-NN kernel (`core.knn`).
Imports nothing from autossl. Only the registry is imported here: it needs no torch, so `autossl --help`
and "did you mean" answer without loading it."""
from .registry import BACKBONES, DATASETS, EXPERIMENTS, METHODS, PROTOCOLS, REGISTRIES, Registry, did_you_mean

__all__ = ["BACKBONES", "DATASETS", "EXPERIMENTS", "METHODS", "PROTOCOLS", "REGISTRIES", "Registry", "did_you_mean"]
