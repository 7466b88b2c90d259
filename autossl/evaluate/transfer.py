"""Transfer: a backbone pretrained on one dataset, measured on another (the target) by a linear probe
on its frozen features and by fine-tuning the whole network. Scores are named 'linear_<metric>' and
'finetune_<metric>'."""
from __future__ import annotations

import torch.nn as nn

from .protocols import EvalConfig, run_finetune, run_linear
from .splits import EvalData

TRANSFER_PROTOCOLS = ("linear", "finetune")


def run_transfer(encoder: nn.Module, data: EvalData, cfg: EvalConfig, protocols=TRANSFER_PROTOCOLS,
                 linear_kwargs: dict | None = None, finetune_kwargs: dict | None = None,
                 finetune_epochs: int | None = None) -> tuple[dict, dict]:
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    unknown = [p for p in protocols if p not in TRANSFER_PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"transfer protocols must be among {', '.join(TRANSFER_PROTOCOLS)}, got {list(protocols)}")
    ft_kwargs = dict(finetune_kwargs or {})
    if finetune_epochs is not None:
        ft_kwargs["epochs"] = finetune_epochs
    scores, details = {}, {"transfer_protocols": list(protocols)}
    for name in protocols:
        run = run_linear(encoder, data, cfg, **(linear_kwargs or {})) if name == "linear" \
            else run_finetune(encoder, data, cfg, **ft_kwargs)
        scores.update({f"{name}_{metric}": value for metric, value in run[0].items()})
        details[name] = run[1]
    return scores, details
