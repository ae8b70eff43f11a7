"""Plot the graphs a trained model builds for one clip (what ``stgraph plot`` draws)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from stgraph.errors import SettingError

__all__ = ["MODEL_PLOTS", "clip_to_images", "plot_model_graph"]

#: What :func:`plot_model_graph` draws.
MODEL_PLOTS = ("adjacency", "skeleton", "temporal", "cross-scale")


def clip_to_images(clip: Any) -> np.ndarray:
    """Undo :func:`stgraph.data.load_clip`'s normalisation.

    ``(T, 3, H, W)`` float -> uint8 ``(T, H, W, 3)`` images; raises ``ValueError`` on
    another shape.
    """
    from stgraph.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    x = np.asarray(clip.detach().cpu() if hasattr(clip, "detach") else clip, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a clip of shape (T, 3, H, W), got {x.shape}")
    x = x * np.asarray(IMAGENET_STD).reshape(1, 3, 1, 1) + np.asarray(IMAGENET_MEAN).reshape(
        1, 3, 1, 1)
    return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def model_inputs(model: Any, clips: Any, keypoints: Any, clip_index: int) -> dict:
    """Check ``clips`` :math:`(B, T, 3, H, W)` and ``clip_index``; the extra inputs ``model`` takes.

    Returns ``{"keypoints": keypoints}`` when given and the model lists ``keypoints`` in its
    ``input_keys``, else ``{}``. Raises ``ValueError`` on a wrong shape or an index out of range.
    """
    if clips.dim() != 5 or clips.size(2) != 3:
        raise ValueError(f"expected clips of shape (B, T, 3, H, W), got {tuple(clips.shape)}")
    B = clips.size(0)
    if isinstance(clip_index, bool) or not 0 <= clip_index < B:
        raise ValueError(f"clip_index {clip_index} out of range for {B} clips")
    if keypoints is not None and "keypoints" in getattr(model, "input_keys", ()):
        return {"keypoints": keypoints}
    return {}


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Run the block with ``model`` in eval mode and without gradients; restore its mode."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _pick(graphs: dict, layer: str | None, prefixes: tuple[str, ...], what: str) -> str:
    if layer is not None:
        if layer not in graphs:
            raise ValueError(f"no graph layer {layer!r}; recorded: {', '.join(graphs)}")
        return layer
    for name in graphs:
        if name.startswith(prefixes):
            return name
    raise SettingError("{what} {w} needs a layer named {names}...; this model records: "
                       "{recorded}", w=what, names=" or ".join(prefixes),
                       recorded=", ".join(graphs))


def plot_model_graph(model: Any, clips: Any, what: str, *, keypoints: Any = None,
                     layer: str | None = None, clip_index: int = 0, frame: int | None = None,
                     top_k: int | None = 20, title: str | None = None,
                     save: str | Path | None = None, dpi: float = 150) -> Any:
    r"""Run ``model`` on ``clips`` and plot one of the graphs it builds.

    The graphs are taken with :func:`stgraph.models.record_graphs` (no change to the
    model). ``what``:

    * ``"adjacency"``: the heatmap of a layer's graph (:func:`~stgraph.viz.plot_adjacency`):
      STGCN's clip graph of :math:`T \cdot P` patch nodes, frames marked; for CTL the
      3D-GCL window adjacency of window ``frame`` (:math:`\tau N_s` nodes).
    * ``"temporal"``: the same graph's strongest edges laid out frame by frame
      (:func:`~stgraph.viz.plot_temporal_graph`).
    * ``"skeleton"`` (CTL): the 3D-GCL adjacency among the parts of frame ``frame`` (the
      centre block of its window) drawn over the body at that frame's keypoints, on the
      frame (:func:`~stgraph.viz.plot_skeleton_graph`).
    * ``"cross-scale"`` (CTL): the CS-GCL attention of frame ``frame``
      (:func:`~stgraph.viz.plot_cross_scale`).

    Args:
        model (nn.Module): a model with dense graph layers, e.g. from
            :func:`stgraph.checkpoint.load_checkpoint`; it is run in eval mode.
        clips (Tensor): normalised clips :math:`(B, T, 3, H, W)` (as the clip datasets give).
        what (str): one of :data:`MODEL_PLOTS`.
        keypoints (Tensor, optional): :math:`(B, T, 17, 3)` for models that take them.
        layer (str, optional): the recorded layer to plot (default: the first that fits:
            ``temporal.convs.0`` for STGCN, ``gcls.s1.0`` / ``cs_gcls.s1`` for CTL).
        clip_index (int): which clip of the batch. (default: :obj:`0`)
        frame (int, optional): frame / window for CTL graphs (default: the middle one).
        top_k (int, optional): edges drawn by the graph plots. (default: :obj:`20`)
        title (str, optional): figure title (default: the layer and frame).
        save (str or Path, optional): write the figure there.

    Returns:
        matplotlib.figure.Figure

    Raises:
        ValueError: an unknown ``what``, a plot this model has no graph for (the message
            lists the recorded layers), or a skeleton plot without keypoints.
    """

    from stgraph.graph import COCO17, prior_pose
    from stgraph.models import record_graphs
    from stgraph.viz.adjacency import plot_adjacency
    from stgraph.viz.graphs import plot_cross_scale, plot_skeleton_graph, plot_temporal_graph

    if what not in MODEL_PLOTS:
        raise ValueError(f"unknown plot {what!r}; choose one of: {', '.join(MODEL_PLOTS)}")
    inputs = model_inputs(model, clips, keypoints, clip_index)
    T = clips.size(1)
    with evaluating(model), record_graphs(model) as graphs:
        model(clips, **inputs)
    skeleton = getattr(model, "skeleton", COCO17)
    t = T // 2 if frame is None else int(frame)
    if not 0 <= t < T:
        raise ValueError(f"frame {t} out of range for clips of {T} frames")
    common = {"save": save, "dpi": dpi}

    if what == "cross-scale":
        name = _pick(graphs, layer, ("cs_gcls.",), what)
        att = graphs[name][clip_index, t]  # (N_c, N_f)
        fine = name.split(".")[1]
        return plot_cross_scale(att, fine_labels=skeleton.part_names(fine),
                                coarse_labels=skeleton.part_names(skeleton.scales[-1]),
                                title=title or f"{name}, frame {t}", **common)

    name = _pick(graphs, layer, ("temporal.", "gcls.", "spatial."), what)
    g = graphs[name][clip_index]
    if g.dim() == 3:  # CTL window adjacencies (T, tau*N, tau*N): window t
        scale = name.split(".")[1]
        n = skeleton.num_nodes(scale)
        tau = g.size(-1) // n
        adj, frames, parts = g[t], tau, n
        labels = [f"{k - (tau - 1) // 2:+d}/{p}" for k in range(tau)
                  for p in skeleton.part_names(scale)]
        part_labels = skeleton.part_names(scale)
        frame_labels = [f"frame {t + k - (tau - 1) // 2}" for k in range(tau)]
        label = f"{name}, window of frame {t}"
    else:  # STGCN: (N, N) over T * P nodes (temporal) or P nodes (spatial)
        scale, adj, labels = None, g, None
        frames = T if name.startswith("temporal.") else 1
        parts = g.size(-1) // frames
        part_labels = [f"patch {p}" for p in range(parts)]
        frame_labels = [f"frame {k}" for k in range(frames)]
        label = name
    if what == "adjacency":
        return plot_adjacency(adj, node_labels=labels, num_frames=frames, num_parts=parts,
                              title=title or label, **common)
    if what == "temporal":
        return plot_temporal_graph(adj, frames, parts, top_k=top_k, part_labels=part_labels,
                                   frame_labels=frame_labels, title=title or label, **common)
    # skeleton: the parts of frame t, the centre block of its window
    if scale is None:
        raise SettingError("{what} skeleton needs a keypoint graph model (ctl); {name} is a "
                           "patch graph", name=name)
    left = (frames - 1) // 2
    block = adj[left * parts:(left + 1) * parts, left * parts:(left + 1) * parts]
    if keypoints is None:
        kp = prior_pose(clips.shape[-2], clips.shape[-1])
    else:
        kp = keypoints[clip_index, t]
    image = clip_to_images(clips[clip_index])[t]
    return plot_skeleton_graph(kp, block, skeleton=skeleton, image=image, top_k=top_k,
                               scale=scale, title=title or f"{name}, frame {t}", **common)
