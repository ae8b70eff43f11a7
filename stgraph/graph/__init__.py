"""Graph builders: backbone feature maps -> graphs (PyG ``Batch`` and dense tensors)."""

from stgraph.graph.patch_graph import PatchGraphBuilder, complete_edge_index

__all__ = ["PatchGraphBuilder", "complete_edge_index"]
