"""Losses: pure functions on tensors. The joint-embedding ones take two views' embeddings
(`mean_over_view_pairs` extends any of them to N views); the reconstruction ones take predicted
and target patches and the mask."""
from .all4one import centroid_loss, feature_contrast_loss, neighbour_contrast_loss
from .contrastive import infonce_loss, nt_xent_loss
from .cosine import negative_cosine_loss
from .dcl import dcl_loss, dclw_loss
from .deepclusterv2 import deepclusterv2_loss
from .dino import dino_loss, teacher_temperature, update_center
from .emp import emp_ssl_loss
from .ibot import ibot_patch_loss
from .koleo import koleo_loss
from .lejepa import epps_pulley, lejepa_loss, lejepa_prediction_loss, sigreg, slice_directions
from .mmcr import mmcr_loss
from .msn import msn_loss, pmsn_loss, power_law_prior
from .multiview import mean_over_cross_views, mean_over_view_pairs
from .reconstruction import (masked_l1_loss, masked_mse_loss, normalize_patches, patchify, pred_map_to_patches,
                             reconstruction_patches, unpatchify)
from .redundancy import barlow_twins_loss, vicreg_loss
from .ressl import ressl_loss
from .smog import smog_loss
from .supcon import supcon_loss
from .swav import sinkhorn, swav_loss
from .tico import tico_loss
from .vibcreg import normalized_covariance, vibcreg_loss
from .wmse import wmse_loss

__all__ = ["infonce_loss", "nt_xent_loss", "negative_cosine_loss", "barlow_twins_loss", "vicreg_loss", "mean_over_view_pairs", "mean_over_cross_views",
           "masked_mse_loss", "masked_l1_loss", "normalize_patches", "patchify", "unpatchify", "pred_map_to_patches",
           "reconstruction_patches", "dino_loss", "update_center", "teacher_temperature", "sinkhorn", "swav_loss",
           "dcl_loss", "dclw_loss", "tico_loss", "mmcr_loss", "wmse_loss", "supcon_loss", "emp_ssl_loss",
           "ibot_patch_loss", "koleo_loss", "msn_loss", "pmsn_loss", "power_law_prior", "deepclusterv2_loss",
           "ressl_loss", "centroid_loss", "feature_contrast_loss", "neighbour_contrast_loss", "smog_loss", "lejepa_loss", "lejepa_prediction_loss", "sigreg", "epps_pulley", "slice_directions", "vibcreg_loss", "normalized_covariance"]
