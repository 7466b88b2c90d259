"""One entry point for every protocol, shared by the Python API (api.py) and the CLI (cli.py):
`evaluate(model, dataset, 'knn' | 'linear' | 'semisup' | 'finetune' | 'transfer', ...)` returns
{score name: value, ..., 'settings': {everything needed to reproduce the number}}."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from .encoders import load_encoder
from .features import default_device, extract_features
from .knn import knn_scores
from .metrics import check_average, compute_metrics, metric_names
from .splits import EvalData, eval_loader, eval_splits

PROTOCOLS = ("knn", "linear", "semisup", "finetune", "transfer")


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


def run_knn(encoder: nn.Module, data: EvalData, cfg: EvalConfig, k: int = 200, temperature: float = 0.1) -> tuple[dict, dict]:
    train_x, train_y, test_x, test_y = cached_features(encoder, data, cfg)
    device = torch.device(cfg.device) if cfg.device else default_device()
    votes = knn_scores(test_x.to(device), train_x, train_y, data.num_classes, k=k, temperature=temperature)
    scores = compute_metrics(votes, test_y, data.num_classes, cfg.metric, cfg.top_k, cfg.average)
    return scores, {"k": min(k, len(train_y)), "temperature": temperature, "feature_dim": train_x.shape[1]}


def run_linear(encoder: nn.Module, data: EvalData, cfg: EvalConfig, augment: bool = False, **probe_kwargs) -> tuple[dict, dict]:
    """Cached-feature probe with a validated grid; `augment=True` runs the classic augmented protocol."""
    from .linear import linear_probe, linear_probe_augmented

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


def run_semisup(encoder: nn.Module, data: EvalData, cfg: EvalConfig, fractions: tuple[float, ...] = (0.01, 0.1),
                **probe_kwargs) -> tuple[dict, dict]:
    """Linear probe on 1% and 10% of the training labels: scores named e.g. 'accuracy@1%'."""
    from .semisup import semi_supervised_probe

    train_x, train_y, test_x, test_y = cached_features(encoder, data, cfg)
    per_fraction = semi_supervised_probe(train_x, train_y, test_x, test_y, data.num_classes, tuple(fractions),
                                         metric=cfg.metric, top_k=cfg.top_k, average=cfg.average, seed=cfg.seed,
                                         device=cfg.device, **probe_kwargs)
    scores = {f"{name}@{frac}": value for frac, res in per_fraction.items() for name, value in res["scores"].items()}
    settings = {"fractions": list(fractions),
                "labelled": {frac: res["n_labelled"] for frac, res in per_fraction.items()},
                "subsets": "stratified, at least one image per class, seeded"}
    return scores, settings


def run_finetune(encoder: nn.Module, data: EvalData, cfg: EvalConfig, **finetune_kwargs) -> tuple[dict, dict]:
    from .finetune import finetune

    logits, test_y, info = finetune(encoder, data.train, data.test, data.num_classes, image_size=cfg.image_size,
                                    preset=cfg.preset, num_workers=cfg.num_workers, seed=cfg.seed, bf16=cfg.bf16,
                                    device=cfg.device, **finetune_kwargs)
    return compute_metrics(logits, test_y, data.num_classes, cfg.metric, cfg.top_k, cfg.average), info


def evaluate(model: Any, dataset: Any, protocol: str = "knn", *, test_dataset: Any = None, test_size: float = 0.2,
             metric: Any = "accuracy", top_k: int = 1, average: str = "macro", image_size: int = 32,
             preset: str | None = None, batch_size: int = 256, num_workers: int = 0, seed: int = 0,
             bf16: bool = False, device: str | None = None, **protocol_kwargs: Any) -> dict:
    """Evaluate `model` on `dataset` with one protocol. Scores are in [0, 1]; `settings` records the protocol,
    the data split, sizes and every hyper-parameter used."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; choose from {', '.join(PROTOCOLS)}")
    metric_names(metric), check_average(average)  # fail on a typo before any work
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    start = time.time()
    encoder, model_info = load_encoder(model)
    data = eval_splits(dataset, test_dataset, test_size=test_size, seed=seed)
    cfg = EvalConfig(metric=metric, top_k=top_k, average=average, image_size=image_size,
                     preset=preset or data.preset, batch_size=batch_size, num_workers=num_workers, seed=seed,
                     bf16=bf16, device=device)
    if protocol == "transfer":
        from .transfer import run_transfer

        scores, details = run_transfer(encoder, data, cfg, **protocol_kwargs)
    else:
        runner = {"knn": run_knn, "linear": run_linear, "semisup": run_semisup, "finetune": run_finetune}[protocol]
        scores, details = runner(encoder, data, cfg, **protocol_kwargs)
    settings = {"protocol": protocol, **{k: v for k, v in model_info.items() if v is not None},
                "split": data.split, "n_train": len(data.train), "n_test": len(data.test),
                "num_classes": data.num_classes, **{k: v for k, v in asdict(cfg).items() if k != "device"},
                "preset": cfg.preset or "imagenet", **details, "seconds": round(time.time() - start, 2)}
    return {**scores, "settings": settings}
