"""Methods: one file each on the shared `SSLMethod` base, registered by name where defined."""
from ..core.registry import METHODS
from .barlowtwins import BarlowTwins
from .base import SSLMethod
from .byol import BYOL
from .dino import DINO
from .fcmae import FCMAE
from .mae import MAE
from .moco import MoCo
from .mocov3 import MoCoV3
from .nnclr import NNCLR
from .simclr import SimCLR
from .simmim import SimMIM
from .simsiam import SiaSiam, SimSiam
from .swav import SwAV
from .vicreg import VICReg


def get_method(name: str) -> type[SSLMethod]:
    """The method class registered under `name` (aliases and case ignored); one-line error otherwise."""
    return METHODS.get(name)


__all__ = ["SSLMethod", "SimCLR", "MoCo", "BYOL", "SimSiam", "SiaSiam", "BarlowTwins", "VICReg", "FCMAE", "MAE", "SimMIM", "DINO", "SwAV", "MoCoV3", "NNCLR",
           "METHODS", "get_method"]
