"""Reusable graph layers: each sparse PyG ``MessagePassing`` layer has a dense twin."""

from stgraph.nn.affinity_gcn_conv import AffinityGCNConv
from stgraph.nn.bnneck import BNNeck
from stgraph.nn.dense_affinity_gcn import DenseAffinityGCN, affinity_adjacency

__all__ = ["AffinityGCNConv", "BNNeck", "DenseAffinityGCN", "affinity_adjacency"]
