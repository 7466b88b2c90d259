"""Heads that sit on a backbone, composable on their own: MLP projectors and predictors (injectable
norm/activation), DINO's weight-normalised head, and the masked-image-modelling decoders."""
from .dino import DINOHead
from .iternorm import IterNorm
from .mlp import PROJECTOR_KINDS, mlp, prediction_head, projection_head
from .neighbour_sequence import KNearestSupportSet, NeighbourTransformer, slot_encoding
from .queue import FeatureQueue
from .smog import SMoGGroups
from .support_set import SupportSet

__all__ = ["mlp", "projection_head", "prediction_head", "PROJECTOR_KINDS", "DINOHead", "SupportSet", "IterNorm", "FeatureQueue", "SMoGGroups",
           "KNearestSupportSet", "NeighbourTransformer", "slot_encoding"]
