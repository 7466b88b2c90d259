"""Losses: pure functions on tensors. Each takes two views' embeddings; `mean_over_view_pairs`
extends any of them to N views."""
from .contrastive import nt_xent_loss
from .cosine import negative_cosine_loss
from .multiview import mean_over_cross_views, mean_over_view_pairs
from .redundancy import barlow_twins_loss, vicreg_loss

__all__ = ["nt_xent_loss", "negative_cosine_loss", "barlow_twins_loss", "vicreg_loss", "mean_over_view_pairs", "mean_over_cross_views"]
