"""From an autossl training checkpoint back to its backbone or its whole method (read weights-only).

Lives with the methods, below evaluation and training, because both need it: evaluation scores a
checkpoint's backbone, `autossl export` writes it as safetensors."""
from __future__ import annotations

from pathlib import Path

from ..backbones import Backbone, create_backbone
from ..backbones.registry import checked_spec
from ..core.io import load_checkpoint
from ..core.registry import METHODS


def _autossl_checkpoint(path: str | Path) -> dict:
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not ckpt.get("autossl") or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an autossl training checkpoint (no 'autossl' entry); give a checkpoint "
                         f"written by `autossl pretrain` or an autossl method, or export weights with `autossl export`")
    return ckpt


def checked_hyperparameters(hparams: dict, source: str) -> dict:
    """A checkpoint's hyper-parameters become constructor arguments only with plain values, and what of them
    reaches `timm.create_model` (`backbone_kwargs`) only if it is an architecture setting: loading a file
    cannot make it read or fetch other weights (`pretrained` is overridden by the caller)."""
    for key, value in hparams.items():
        if not _plain(value):
            raise ValueError(f"refusing {source}: its hyper-parameter '{key}' is not a plain value")
    checked_spec(dict(hparams.get("backbone_kwargs") or {}), source)
    return dict(hparams)


def _plain(v) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def backbone_from_checkpoint(path: str | Path) -> Backbone:
    """Rebuild the backbone described in an autossl checkpoint and load its trained weights."""
    ckpt = _autossl_checkpoint(path)
    backbone = create_backbone(**checked_spec(dict(ckpt["autossl"]["backbone"]), str(path)))
    prefix = "backbone."
    backbone.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    return backbone


def method_from_checkpoint(path: str | Path):
    """The full method (heads, probe) with its trained weights, from an autossl checkpoint."""
    ckpt = _autossl_checkpoint(path)
    cls = METHODS.get(ckpt["autossl"]["method"])
    # pretrained=False: the checkpoint's weights replace them anyway; compile=False: using it needs no graph capture
    model = cls(**{**checked_hyperparameters(ckpt.get("hyper_parameters", {}), str(path)),
                   "pretrained": False, "compile": False})
    model.on_load_checkpoint(ckpt)  # builds what the checkpoint holds beyond the constructor (the probe)
    model.load_state_dict(ckpt["state_dict"])
    return model


def head_state_from_checkpoint(path: str | Path, prefix: str = "decoder.") -> dict:
    """The weights of one head of a trained method (e.g. the MAE/FCMAE decoder), prefix removed."""
    ckpt = _autossl_checkpoint(path)
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path} has no '{prefix.rstrip('.')}' weights ({ckpt['autossl']['method']} has none)")
    return state
