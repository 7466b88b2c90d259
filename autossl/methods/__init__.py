"""Methods: one file each on the shared `SSLMethod` base, registered by name where defined."""
from ..core.registry import METHODS
from .all4one import All4One
from .barlowtwins import BarlowTwins
from .base import SSLMethod
from .byol import BYOL
from .dcl import DCL
from .dclw import DCLW
from .deepclusterv2 import DeepClusterV2
from .dino import DINO
from .dinov2 import DINOv2
from .empssl import EMPSSL
from .fastsiam import FastSiam
from .fcmae import FCMAE
from .ibot import IBOT
from .lejepa import LeJEPA
from .mae import MAE
from .mmcr import MMCR
from .moco import MoCo
from .mocov3 import MoCoV3
from .msn import MSN
from .nnbyol import NNBYOL
from .nnclr import NNCLR
from .nnsiam import NNSiam
from .pmsn import PMSN
from .ressl import ReSSL
from .simclr import SimCLR
from .simmim import SimMIM
from .simsiam import SiaSiam, SimSiam
from .smog import SMoG
from .supcon import SupCon
from .swav import SwAV
from .tico import TiCo
from .vibcreg import VIbCReg
from .vicreg import VICReg
from .wmse import WMSE


def get_method(name: str) -> type[SSLMethod]:
    """The method class registered under `name` (aliases and case ignored); one-line error otherwise."""
    return METHODS.get(name)


__all__ = ["SSLMethod", "SimCLR", "MoCo", "BYOL", "SimSiam", "SiaSiam", "BarlowTwins", "VICReg", "FCMAE", "MAE", "SimMIM", "DINO", "SwAV", "SMoG", "MoCoV3", "NNCLR", "All4One", "LeJEPA",
           "DCL", "DCLW", "TiCo", "MMCR", "WMSE", "SupCon", "NNBYOL", "NNSiam", "FastSiam", "EMPSSL",
           "IBOT", "DINOv2", "MSN", "PMSN", "DeepClusterV2", "ReSSL", "VIbCReg", "METHODS", "get_method"]
