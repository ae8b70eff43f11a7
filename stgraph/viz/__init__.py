"""Figures of graphs, attention and retrieval results (matplotlib + networkx).

Every function returns a :class:`matplotlib.figure.Figure`, takes tensors or
numpy arrays, and saves the figure when given ``save=PATH`` (format from the
extension, ``dpi`` 150 by default). Most draw into a given ``ax``.

matplotlib is imported when a function is called, never when this package is
imported, and figures are plain ``Figure`` objects (no pyplot figure manager, no
GUI backend): they work headless and are freed like any object. Show one in a
notebook by evaluating it, or save it.

* :func:`plot_adjacency`: heatmap of an ``N x N`` adjacency, frame blocks marked.
* :func:`plot_skeleton_graph`: a learned adjacency drawn over the body (keypoints
  or part scales), optionally over the frame.
* :func:`plot_temporal_graph`: the strongest edges of a ``T * P``-node
  spatial-temporal graph, frame by frame.
* :func:`plot_cross_scale`: bipartite fine -> coarse attention.
* :func:`plot_ranking`: a query tracklet and its top-k gallery tracklets.
* :func:`plot_cmc`: CMC curves of several runs.
* :func:`plot_model_graph`: run a model on clips and plot one of its graphs (what
  ``stgraph plot`` draws).
* :func:`plot_attention`: per-frame spatial attention maps over the frames, and the
  temporal scores.
* :func:`plot_model_attention`: run a model with attention (STA, DRSTA, RRU) on clips
  and plot its attention (``stgraph plot --what attention``).
"""

from stgraph.viz.adjacency import plot_adjacency
from stgraph.viz.attention import plot_attention, plot_model_attention
from stgraph.viz.graphs import plot_cross_scale, plot_skeleton_graph, plot_temporal_graph
from stgraph.viz.model import MODEL_PLOTS, clip_to_images, plot_model_graph
from stgraph.viz.ranking import plot_cmc, plot_ranking

__all__ = [
    "MODEL_PLOTS",
    "clip_to_images",
    "plot_adjacency",
    "plot_attention",
    "plot_cmc",
    "plot_cross_scale",
    "plot_model_attention",
    "plot_model_graph",
    "plot_ranking",
    "plot_skeleton_graph",
    "plot_temporal_graph",
]
