"""The bottom layer: the registry (names -> objects, with "did you mean"), safe file I/O (atomic
writes, weights-only reads), distributed helpers and the k-NN kernel. Imports nothing from autossl."""
from .distributed import gather, rank, world_size
from .io import (UnsafeCheckpointError, atomic_open, atomic_torch_save, atomic_write_text, load_checkpoint,
                 load_state_dict_file)
from .registry import BACKBONES, DATASETS, EXPERIMENTS, METHODS, PROTOCOLS, REGISTRIES, Registry, did_you_mean

__all__ = ["gather", "rank", "world_size", "UnsafeCheckpointError", "atomic_open", "atomic_torch_save",
           "atomic_write_text", "load_checkpoint", "load_state_dict_file", "BACKBONES", "DATASETS", "EXPERIMENTS",
           "METHODS", "PROTOCOLS", "REGISTRIES", "Registry", "did_you_mean"]
