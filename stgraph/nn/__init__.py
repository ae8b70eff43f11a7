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
from stgraph.nn.sliding_window_gcn import SlidingWindowGCN

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
    "SlidingWindowGCN",
    "affinity_adjacency",
    "sliding_windows",
    "tile_window_adjacency",
    "window_gcn_norm",
]
