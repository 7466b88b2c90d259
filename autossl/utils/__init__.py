"""The earlier autoSSL's `utils` package (`autoSSL.utils.dataloader2array`)."""
from .dataloader2array import dataloader2array

__all__ = ["dataloader2array"]
