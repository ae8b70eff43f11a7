"""Evaluation: tracklet feature extraction, distance matrices, CMC and mAP, re-ranking."""

from stgraph.eval.distance import compute_distance_matrix
from stgraph.eval.features import extract_features
from stgraph.eval.rank import RANK_PROTOCOLS, evaluate_rank
from stgraph.eval.rerank import RERANK_METRICS, re_ranking

__all__ = [
    "RANK_PROTOCOLS",
    "RERANK_METRICS",
    "compute_distance_matrix",
    "evaluate_rank",
    "extract_features",
    "re_ranking",
]
