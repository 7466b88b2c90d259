"""One entry point for every protocol, shared by the Python API (api.py) and the CLI (cli/evaluate.py):
`evaluate(model, dataset, 'knn' | 'linear' | 'semisup' | 'finetune' | 'transfer', ...)` returns
{score name: value, ..., 'settings': {everything needed to reproduce the number}}.

Each protocol is registered in `autossl.core.registry.PROTOCOLS` where it is defined below.
Transfer (a backbone pretrained on one dataset, measured on another by a linear probe on frozen
features and by fine-tuning) reuses the linear and fine-tuning runners; its scores are named
'linear_<metric>' and 'finetune_<metric>'."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from ..core.knn import knn_scores
from ..core.registry import PROTOCOLS
from .encoders import load_encoder
from .features import default_device, extract_features
from .finetune import finetune
from .linear import linear_probe, linear_probe_augmented
from .metrics import check_average, compute_metrics, effective_rank, metric_names
from .semisup import semi_supervised_probe
from .splits import EvalData, eval_loader, eval_splits

TRANSFER_PROTOCOLS = ("linear", "finetune")


@dataclass
class EvalConfig:
    """Settings shared by every protocol (recorded in every result)."""
    metric: Any = "accuracy"
    top_k: int = 1
    average: str = "macro"
    image_size: int = 32
    preset: str | None = None
    batch_size: int = 256
    num_workers: int = 0
    seed: int = 0
    bf16: bool = False
    device: str | None = None


def cached_features(encoder: nn.Module, data: EvalData, cfg: EvalConfig) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, test_x, test_y): the backbone runs once over each split."""
    kw = dict(image_size=cfg.image_size, preset=cfg.preset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    train_x, train_y = extract_features(encoder, eval_loader(data.train, **kw), cfg.device, cfg.bf16)
    test_x, test_y = extract_features(encoder, eval_loader(data.test, **kw), cfg.device, cfg.bf16)
    return train_x, train_y, test_x, test_y


@PROTOCOLS.register("knn", info="weighted cosine k-NN on frozen features (k=200, T=0.1)")
def run_knn(encoder: nn.Module, data: EvalData, cfg: EvalConfig, k: int = 200, temperature: float = 0.1) -> tuple[dict, dict]:
    train_x, train_y, test_x, test_y = cached_features(encoder, data, cfg)
    device = torch.device(cfg.device) if cfg.device else default_device()
    votes = knn_scores(test_x.to(device), train_x, train_y, data.num_classes, k=k, temperature=temperature)
    scores = compute_metrics(votes, test_y, data.num_classes, cfg.metric, cfg.top_k, cfg.average)
    return scores, {"k": min(k, len(train_y)), "temperature": temperature, "feature_dim": train_x.shape[1],
                    "effective_rank": round(effective_rank(test_x), 1)}  # of the test features: collapse shows


@PROTOCOLS.register("linear", info="linear probe on frozen features (cached, validated grid; or augmented)")
def run_linear(encoder: nn.Module, data: EvalData, cfg: EvalConfig, augment: bool = False, **probe_kwargs) -> tuple[dict, dict]:
    """Cached-feature probe with a validated grid; `augment=True` runs the classic augmented protocol."""
    if augment:
        logits, test_y, info = linear_probe_augmented(
            encoder, data.train, data.test, data.num_classes, image_size=cfg.image_size, preset=cfg.preset,
            num_workers=cfg.num_workers, seed=cfg.seed, bf16=cfg.bf16, device=cfg.device, **probe_kwargs)
    else:
        train_x, train_y, test_x, test_y = cached_features(encoder, data, cfg)
        logits, info = linear_probe(train_x, train_y, test_x, data.num_classes, seed=cfg.seed, device=cfg.device,
                                    **probe_kwargs)
        info["feature_dim"] = train_x.shape[1]
    scores = compute_metrics(logits, test_y, data.num_classes, cfg.metric, cfg.top_k, cfg.average)
    return scores, {"augment": augment, **info}


@PROTOCOLS.register("semisup", info="linear probe on 1% and 10% of the labels")
def run_semisup(encoder: nn.Module, data: EvalData, cfg: EvalConfig, fractions: tuple[float, ...] = (0.01, 0.1),
                **probe_kwargs) -> tuple[dict, dict]:
    """Linear probe on 1% and 10% of the training labels: scores named e.g. 'accuracy@1%'."""
    train_x, train_y, test_x, test_y = cached_features(encoder, data, cfg)
    per_fraction = semi_supervised_probe(train_x, train_y, test_x, test_y, data.num_classes, tuple(fractions),
                                         metric=cfg.metric, top_k=cfg.top_k, average=cfg.average, seed=cfg.seed,
                                         device=cfg.device, **probe_kwargs)
    scores = {f"{name}@{frac}": value for frac, res in per_fraction.items() for name, value in res["scores"].items()}
    settings = {"fractions": list(fractions),
                "labelled": {frac: res["n_labelled"] for frac, res in per_fraction.items()},
                "subsets": "stratified, at least one image per class, seeded"}
    return scores, settings


@PROTOCOLS.register("finetune", info="fine-tune the whole network (timm layer decay, mixup, EMA)")
def run_finetune(encoder: nn.Module, data: EvalData, cfg: EvalConfig, **finetune_kwargs) -> tuple[dict, dict]:
    logits, test_y, info = finetune(encoder, data.train, data.test, data.num_classes, image_size=cfg.image_size,
                                    preset=cfg.preset, num_workers=cfg.num_workers, seed=cfg.seed, bf16=cfg.bf16,
                                    device=cfg.device, **finetune_kwargs)
    return compute_metrics(logits, test_y, data.num_classes, cfg.metric, cfg.top_k, cfg.average), info


@PROTOCOLS.register("transfer", info="linear probe and fine-tuning on another (target) dataset")
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


def evaluate(model: Any, dataset: Any, protocol: str = "knn", *, test_dataset: Any = None, test_size: float = 0.2,
             metric: Any = "accuracy", top_k: int = 1, average: str = "macro", image_size: int = 32,
             preset: str | None = None, batch_size: int = 256, num_workers: int = 0, seed: int = 0,
             bf16: bool = False, device: str | None = None, **protocol_kwargs: Any) -> dict:
    """Evaluate `model` on `dataset` with one protocol. Scores are in [0, 1]; `settings` records the protocol,
    the data split, sizes and every hyper-parameter used."""
    runner = PROTOCOLS.get(protocol)  # an unknown name fails here, in one line, before any work
    metric_names(metric), check_average(average)  # fail on a typo before any work
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    start = time.time()
    encoder, model_info = load_encoder(model)
    data = eval_splits(dataset, test_dataset, test_size=test_size, seed=seed)
    cfg = EvalConfig(metric=metric, top_k=top_k, average=average, image_size=image_size,
                     preset=preset or data.preset, batch_size=batch_size, num_workers=num_workers, seed=seed,
                     bf16=bf16, device=device)
    scores, details = runner(encoder, data, cfg, **protocol_kwargs)
    settings = {"protocol": protocol, **{k: v for k, v in model_info.items() if v is not None},
                "split": data.split, "n_train": len(data.train), "n_test": len(data.test),
                "num_classes": data.num_classes, **{k: v for k, v in asdict(cfg).items() if k != "device"},
                "preset": cfg.preset or "imagenet", **details, "seconds": round(time.time() - start, 2)}
    return {**scores, "settings": settings}
