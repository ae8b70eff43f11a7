"""Evaluation: tracklet feature extraction, distance matrices, CMC and mAP, re-ranking, and
the query/gallery evaluation of a model (:func:`evaluate`)."""

from stgraph.eval.distance import compute_distance_matrix
from stgraph.eval.evaluate import (
    evaluate,
    evaluate_with_distances,
    feature_distances,
    format_table,
    rank_distances,
    rank_features,
)
from stgraph.eval.features import extract_features
from stgraph.eval.rank import RANK_PROTOCOLS, evaluate_rank
from stgraph.eval.rerank import RERANK_METRICS, re_ranking

__all__ = [
    "RANK_PROTOCOLS",
    "RERANK_METRICS",
    "compute_distance_matrix",
    "evaluate",
    "evaluate_rank",
    "evaluate_with_distances",
    "extract_features",
    "feature_distances",
    "format_table",
    "rank_distances",
    "rank_features",
    "re_ranking",
]
