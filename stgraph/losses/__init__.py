"""Training losses: label-smoothed cross-entropy and batch-hard triplet."""

from stgraph.losses.cross_entropy import CrossEntropyLabelSmooth
from stgraph.losses.triplet import TripletLoss

__all__ = ["CrossEntropyLabelSmooth", "TripletLoss"]
