"""The earlier autoSSL's `autoSSL.data.pipe_dataloader`: the augmentation pipeline and its DataLoader.
Code that imported it keeps working; new code uses `autossl.data.make_dataloader` directly."""
from .loader import make_dataloader, make_eval_loader
from .views import Augment, make_views

pipe_dataloader = make_dataloader

__all__ = ["pipe_dataloader", "make_dataloader", "make_eval_loader", "Augment", "make_views"]
