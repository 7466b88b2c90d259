"""Methods: one file each on the shared `SSLMethod` base, and a registry by name."""
import difflib

from .barlowtwins import BarlowTwins
from .base import SSLMethod
from .byol import BYOL
from .moco import MoCo
from .simclr import SimCLR
from .simsiam import SiaSiam, SimSiam
from .vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {m.name: m for m in (SimCLR, MoCo, BYOL, SimSiam, BarlowTwins, VICReg)}
_ALIASES = {"barlow_twins": "barlowtwins", "barlow": "barlowtwins", "siasiam": "simsiam", "mocov2": "moco"}


def get_method(name: str) -> type[SSLMethod]:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        close = difflib.get_close_matches(key, list(METHODS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown method '{name}'{hint} (choose one of {', '.join(METHODS)})")
    return METHODS[key]


__all__ = ["SSLMethod", "SimCLR", "MoCo", "BYOL", "SimSiam", "SiaSiam", "BarlowTwins", "VICReg", "METHODS", "get_method"]
