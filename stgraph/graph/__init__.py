"""Graph builders: backbone feature maps -> graphs (PyG ``Batch`` and dense tensors)."""

from stgraph.graph.keypoint_graph import KeypointFeatures, KeypointGraphBuilder
from stgraph.graph.keypoints import (
    flip_keypoints,
    heatmap_softmax,
    keypoint_heatmaps,
    load_coco_keypoints,
    prior_pose,
)
from stgraph.graph.patch_graph import PatchGraphBuilder, complete_edge_index
from stgraph.graph.skeleton import COCO17, Skeleton

__all__ = [
    "COCO17",
    "KeypointFeatures",
    "KeypointGraphBuilder",
    "PatchGraphBuilder",
    "Skeleton",
    "complete_edge_index",
    "flip_keypoints",
    "heatmap_softmax",
    "keypoint_heatmaps",
    "load_coco_keypoints",
    "prior_pose",
]
