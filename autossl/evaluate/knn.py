"""Weighted cosine k-NN for evaluation: the kernel lives in `autossl.core.knn` because the online
monitor that methods run during training uses the same one."""
from ..core.knn import knn_predict, knn_scores, knn_topk

__all__ = ["knn_predict", "knn_scores", "knn_topk"]
