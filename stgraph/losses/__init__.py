"""Training losses: label-smoothed cross-entropy, batch-hard triplet, CTL's diversity loss,
and their sum over a model's branches."""

from stgraph.losses.cross_entropy import CrossEntropyLabelSmooth
from stgraph.losses.diversity import diversity_loss
from stgraph.losses.reid_loss import ReIDLoss
from stgraph.losses.triplet import TripletLoss

__all__ = ["CrossEntropyLabelSmooth", "ReIDLoss", "TripletLoss", "diversity_loss"]
