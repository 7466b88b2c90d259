"""The earlier autoSSL's `models` module: the methods under their old names."""
from .methods import BYOL, MoCo, SiaSiam, SimCLR, SimSiam, BarlowTwins, VICReg  # noqa: F401
