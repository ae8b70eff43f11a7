"""Evaluation: tracklet feature extraction, distance matrices, CMC and mAP."""

from stgraph.eval.distance import compute_distance_matrix
from stgraph.eval.features import extract_features
from stgraph.eval.rank import evaluate_rank

__all__ = ["compute_distance_matrix", "evaluate_rank", "extract_features"]
