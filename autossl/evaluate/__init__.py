"""Evaluation protocols for learned features: k-NN, linear probe (cached features, or the classic
augmented one), semi-supervised (1%/10% labels), fine-tuning, transfer, embedding plots, comparisons.

    from autossl.evaluate import Eval_knn, Eval_linear, Eval_transfer, Compare_eval
    Eval_knn(model=model, dataset=(X, y), metric='accuracy', top_k=1, average='macro')

Names are imported lazily: methods import `evaluate.knn` for their online monitor, and the API
imports methods, so an eager import here would be circular.
"""
import importlib

_EXPORTS = {
    "Eval_knn": "api", "Eval_linear": "api", "Eval_finetune": "api", "Eval_transfer": "api", "Compare_eval": "api",
    "Plot_embedding": "api", "evaluate": "protocols", "PROTOCOLS": "protocols", "knn_scores": "knn",
    "knn_predict": "knn", "extract_features": "features", "linear_probe": "linear",
    "linear_probe_augmented": "linear", "semi_supervised_probe": "semisup",
    "plot_embedding": "embed", "compute_metrics": "metrics", "METRICS": "metrics", "eval_splits": "splits",
    "load_encoder": "encoders", "to_markdown": "compare", "plot_comparison": "compare",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'autossl.evaluate' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
