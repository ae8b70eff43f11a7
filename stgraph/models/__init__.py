"""Models composed from stgraph's layers, behind one registry."""

from stgraph.models.base import VideoReIDModel
from stgraph.models.ctl import CTL, cross_scale_pooling, scale_gradient
from stgraph.models.drsta import DRSTA
from stgraph.models.graphs import GRAPH_LAYERS, record_graphs
from stgraph.models.registry import create_model, get_model_class, list_models, register_model
from stgraph.models.rru import RRUSTIM
from stgraph.models.sta import STA
from stgraph.models.stgcn import STGCN, STGCNBranch
from stgraph.models.tp import TemporalPooling
from stgraph.models.tp_mlp import TemporalPoolingMLP, head_parameters

__all__ = [
    "GRAPH_LAYERS",
    "CTL",
    "DRSTA",
    "RRUSTIM",
    "STA",
    "STGCN",
    "STGCNBranch",
    "TemporalPooling",
    "TemporalPoolingMLP",
    "VideoReIDModel",
    "create_model",
    "cross_scale_pooling",
    "get_model_class",
    "head_parameters",
    "list_models",
    "record_graphs",
    "register_model",
    "scale_gradient",
]
