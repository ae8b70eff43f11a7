"""Training losses: label-smoothed cross-entropy, batch-hard triplet, and their per-branch sum."""

from stgraph.losses.cross_entropy import CrossEntropyLabelSmooth
from stgraph.losses.reid_loss import ReIDLoss
from stgraph.losses.triplet import TripletLoss

__all__ = ["CrossEntropyLabelSmooth", "ReIDLoss", "TripletLoss"]
