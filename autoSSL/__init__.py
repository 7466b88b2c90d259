"""The earlier autoSSL import name: `autoSSL.X` is `autossl.X` (same module objects)."""
import importlib
import sys

import autossl as _autossl

_SUBMODULES = ("data", "backbones", "heads", "losses", "methods", "models", "train", "evaluate", "cli", "utils")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"autossl.{name}")
        sys.modules[f"autoSSL.{name}"] = module
        return module
    return getattr(_autossl, name)


class _AliasFinder:
    """Makes `from autoSSL.models import BarlowTwins` import `autossl.models`."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.startswith("autoSSL."):
            import importlib.util

            real = importlib.util.find_spec("autossl." + fullname.split(".", 1)[1])
            if real is None:
                return None
            return importlib.util.spec_from_loader(fullname, _AliasLoader(real.name))
        return None


class _AliasLoader:
    def __init__(self, real_name):
        self.real_name = real_name

    def create_module(self, spec):
        return importlib.import_module(self.real_name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _AliasFinder())
__version__ = _autossl.__version__
