"""Reusable graph layers: each sparse PyG ``MessagePassing`` layer has a dense twin."""

from stgraph.nn.affinity_gcn_conv import AffinityGCNConv
from stgraph.nn.bnneck import BNNeck
from stgraph.nn.context_block import ContextBlock
from stgraph.nn.context_reinforced_topology import (
    ContextReinforcedTopology,
    sliding_windows,
    tile_window_adjacency,
)
from stgraph.nn.cross_scale_gcn import CrossScaleGCN
from stgraph.nn.dense_affinity_gcn import DenseAffinityGCN, affinity_adjacency
from stgraph.nn.dense_context_block import DenseContextBlock
from stgraph.nn.dense_cross_scale_gcn import DenseCrossScaleGCN
from stgraph.nn.dense_sliding_window_gcn import DenseSlidingWindowGCN, window_gcn_norm
from stgraph.nn.multi_part_spatial_attention import MultiPartSpatialAttention, hellinger_diversity
from stgraph.nn.part_temporal_attention import PartTemporalAttention
from stgraph.nn.rru import RRU, RRUOutput
from stgraph.nn.sliding_window_gcn import SlidingWindowGCN
from stgraph.nn.sta import (
    SpatialTemporalAttention,
    STAOutput,
    inter_frame_regularization,
    sta_row_blocks,
)
from stgraph.nn.stim import STIM

__all__ = [
    "AffinityGCNConv",
    "BNNeck",
    "ContextBlock",
    "ContextReinforcedTopology",
    "CrossScaleGCN",
    "DenseAffinityGCN",
    "DenseContextBlock",
    "DenseCrossScaleGCN",
    "DenseSlidingWindowGCN",
    "MultiPartSpatialAttention",
    "PartTemporalAttention",
    "RRU",
    "RRUOutput",
    "STIM",
    "SlidingWindowGCN",
    "SpatialTemporalAttention",
    "STAOutput",
    "affinity_adjacency",
    "hellinger_diversity",
    "inter_frame_regularization",
    "sliding_windows",
    "sta_row_blocks",
    "tile_window_adjacency",
    "window_gcn_norm",
]
