"""Evaluation protocols for learned features: k-NN, linear probe (cached features, or the classic
augmented one), semi-supervised (1%/10% labels), fine-tuning, transfer, embedding plots, comparisons.

    from autossl.evaluate import Eval_knn, Eval_linear, Eval_transfer, Compare_eval
    Eval_knn(model=model, dataset=(X, y), metric='accuracy', top_k=1, average='macro')
"""
from ..core.knn import knn_predict, knn_scores
from ..core.registry import PROTOCOLS
from .api import Compare_eval, Eval_finetune, Eval_knn, Eval_linear, Eval_transfer, Plot_embedding
from .compare import plot_comparison, to_markdown
from .embed import plot_embedding
from .encoders import load_encoder
from .features import extract_features
from .linear import linear_probe, linear_probe_augmented
from .metrics import METRICS, compute_metrics
from .protocols import evaluate
from .semisup import semi_supervised_probe
from .splits import eval_splits

__all__ = ["Eval_knn", "Eval_linear", "Eval_finetune", "Eval_transfer", "Compare_eval", "Plot_embedding", "evaluate",
           "PROTOCOLS", "knn_scores", "knn_predict", "extract_features", "linear_probe", "linear_probe_augmented",
           "semi_supervised_probe", "plot_embedding", "compute_metrics", "METRICS", "eval_splits", "load_encoder",
           "to_markdown", "plot_comparison"]
