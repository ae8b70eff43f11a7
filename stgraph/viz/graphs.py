"""Graphs drawn as nodes and edges: on the body, frame by frame, and across scales.

The edges are drawn with :func:`networkx.draw_networkx_edges` (which imports
``matplotlib.pyplot`` when called, without creating any pyplot figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stgraph.viz._common import (
    DEFAULT_DPI,
    as_matrix,
    check_labels,
    check_positive_int,
    colormap,
    finish,
    new_axes,
    pair_weights,
    root_figure,
    scaled,
    select_strongest,
    to_image,
    to_numpy,
)

__all__ = ["plot_cross_scale", "plot_skeleton_graph", "plot_temporal_graph"]

#: ``gid`` of the edge collections, for finding them in a figure.
SKELETON_GID = "skeleton"
PHYSICAL_GID = "physical_edges"
LEARNED_GID = "learned_edges"
INTRA_FRAME_GID = "intra_frame_edges"
CROSS_FRAME_GID = "cross_frame_edges"
CROSS_SCALE_GID = "cross_scale_edges"

#: Colours of intra-frame and cross-frame edges in :func:`plot_temporal_graph`.
INTRA_FRAME_COLOR = "tab:blue"
CROSS_FRAME_COLOR = "tab:orange"


def _graph(nodes: Sequence[Any], edges: Sequence[tuple[Any, Any]] = ()) -> Any:
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return g


def _draw_edges(ax: Any, pos: dict, edges: list[tuple[Any, Any]], gid: str, **kwargs: Any):
    """``draw_networkx_edges`` of ``edges`` tagged with ``gid``; ``None`` when there are none.

    Returns the ``LineCollection``, or the list of ``FancyArrowPatch`` with ``arrows=True``.
    """
    import networkx as nx

    if not edges:
        return None
    drawn = nx.draw_networkx_edges(_graph(list(pos), edges), pos, edgelist=edges, ax=ax,
                                   hide_ticks=False, **kwargs)
    for artist in drawn if isinstance(drawn, list) else [drawn]:
        artist.set_gid(gid)
    return drawn


def _scalar_mappable(cmap: Any, values: np.ndarray, vmin: float | None,
                     vmax: float | None) -> Any:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo = float(values.min()) if values.size else 0.0
    hi = float(values.max()) if values.size else 1.0
    if vmin is None:
        vmin = lo
    if vmax is None:
        vmax = hi
    if vmax <= vmin:  # equal weights: matplotlib would widen the range to both sides of them
        if lo >= 0:  # a non-negative quantity keeps a non-negative colour bar
            vmin, vmax = 0.0, (vmax if vmax > 0 else 1.0)
        else:
            vmin, vmax = vmin - 0.5 * abs(vmin or 1.0), vmax + 0.5 * abs(vmax or 1.0)
    return ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=colormap(cmap))


def _legend_line(color: Any, label: str, linestyle: str = "-", linewidth: float = 2.0) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, linestyle=linestyle, linewidth=linewidth, label=label)


# ---------------------------------------------------------------------------- skeleton


def plot_skeleton_graph(keypoints: Any, adjacency: Any, skeleton: Any = None, image: Any = None,
                        top_k: int | None = None, scale: str = "s1", *,
                        threshold: float | None = None, cmap: Any = "viridis",
                        vmin: float | None = None, vmax: float | None = None,
                        show_skeleton: bool = True, show_labels: bool | None = None,
                        width_range: tuple[float, float] = (0.8, 4.0), node_size: float = 40.0,
                        title: str | None = None, ax: Any = None,
                        figsize: tuple[float, float] = (4.0, 6.0),
                        save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    r"""A (learned) adjacency between body nodes, drawn over the body.

    Node ``n`` of ``scale`` sits at its position in image coordinates (``x``
    right, ``y`` down): the keypoint itself at ``"s1"``, the mean position of
    its keypoints at a part scale (``skeleton.group_matrix(scale) @ xy``). An
    edge joins each pair ``i < j`` with weight
    :math:`w_{ij} = (A_{ij} + A_{ji}) / 2` (self-loops and zero weights are
    not drawn); the ``top_k`` strongest by :math:`|w|` are kept (and only
    those with :math:`|w| \geq` ``threshold``). Edge colour shows :math:`w`
    (colour bar), width :math:`|w|`. Kept pairs that are physical edges
    (``skeleton.physical_adjacency(scale)``) are drawn solid
    (``gid="physical_edges"``), the others dashed (``gid="learned_edges"``); a
    legend says which is which. The whole physical skeleton is drawn
    underneath in thin grey (``gid="skeleton"``) when ``show_skeleton``.
    Optionally over the frame image, which spans ``[0, W] x [0, H]`` so that
    pixel ``i`` covers ``[i, i + 1)`` as in COCO keypoints.

    Args:
        keypoints (Tensor or ndarray): ``(K, 2)`` or ``(K, 3)`` rows ``(x, y[, score])``
            in image pixels, ``K = skeleton.num_keypoints`` (scores are ignored), e.g.
            :meth:`SyntheticReID.frame_keypoints <stgraph.data.SyntheticReID.frame_keypoints>`.
        adjacency (Tensor or ndarray): ``(N, N)`` with ``N = skeleton.num_nodes(scale)``,
            e.g. the first frame block ``adj[b, t, :N, :N]`` of a window adjacency.
        skeleton (Skeleton, optional): the body model.
            (default: :data:`~stgraph.graph.COCO17`)
        image (PIL image, ndarray or Tensor, optional): the frame, ``(H, W, 3)``
            or ``(3, H, W)``, ``uint8`` or float in ``[0, 1]``.
        top_k (int, optional): draw only the ``top_k`` strongest edges.
            (default: all)
        scale (str, optional): ``"s1"`` (keypoints) or a part scale of the
            skeleton (``"s2"``, ``"s3"`` for COCO17). (default: ``"s1"``)
        threshold (float, optional): draw only edges with :math:`|w| \geq` this.
        cmap (str or Colormap, optional): edge colour map. (default: ``"viridis"``)
        vmin, vmax (float, optional): colour limits. (default: range of the drawn weights)
        show_skeleton (bool, optional): draw the physical skeleton underneath.
            (default: :obj:`True`)
        show_labels (bool, optional): write the node names. (default: at part
            scales only)
        width_range ((float, float), optional): line widths of the weakest
            (zero) and strongest drawn edge. (default: ``(0.8, 4.0)``)
        node_size (float, optional): marker area of the nodes. (default: ``40``)
        title (str, optional): axes title.
        ax (Axes, optional): draw into this Axes; a new figure otherwise.
        figsize ((float, float), optional): size of a new figure in inches.
        save (str or Path, optional): save the figure there (format from the extension).
        dpi (float, optional): resolution of the saved file. (default: ``150``)

    Returns:
        matplotlib.figure.Figure: the figure drawn into.

    Raises:
        ValueError: keypoints not ``(K, 2)`` / ``(K, 3)`` for the skeleton's ``K``,
            adjacency not ``(N, N)`` for the scale's ``N`` (the message names
            both), an unknown scale, a bad image, or ``top_k < 1``.
    """
    import networkx as nx

    if skeleton is None:
        from stgraph.graph.skeleton import COCO17

        skeleton = COCO17
    K = skeleton.num_keypoints
    kp = to_numpy(keypoints)
    if kp.ndim != 2 or kp.shape[0] != K or kp.shape[1] not in (2, 3):
        raise ValueError(
            f"expected keypoints of shape ({K}, 2) or ({K}, 3) (x, y[, score] for the {K} "
            f"keypoints of skeleton {skeleton.name!r}), got {tuple(kp.shape)}"
        )
    xy = kp[:, :2].astype(np.float64)
    if not np.isfinite(xy).all():
        raise ValueError("keypoints contain NaN or infinity")
    if scale not in skeleton.scales:
        raise ValueError(f"unknown scale {scale!r} for skeleton {skeleton.name!r}; "
                         f"choose one of: {', '.join(skeleton.scales)}")
    N = skeleton.num_nodes(scale)
    a = as_matrix(adjacency, "adjacency", f"({N}, {N})")
    if a.shape != (N, N):
        hint = ""
        if a.shape[0] == a.shape[1] and a.shape[0] % N == 0 and a.shape[0] > N:
            hint = (f"; a window adjacency of {a.shape[0] // N} frames? pass one frame block, "
                    f"e.g. adj[:{N}, :{N}]")
        raise ValueError(f"expected adjacency of shape ({N}, {N}) for scale {scale!r} of "
                         f"skeleton {skeleton.name!r}, got {tuple(a.shape)}{hint}")
    group = skeleton.group_matrix(scale).double().numpy()  # (N, K)
    node_xy = group @ xy  # (N, 2)
    pos = {n: (float(node_xy[n, 0]), float(node_xy[n, 1])) for n in range(N)}
    img = to_image(image) if image is not None else None

    i, j, w = pair_weights(a)
    keep = select_strongest(w, top_k=top_k, threshold=threshold)
    i, j, w = i[keep], j[keep], w[keep]
    physical = skeleton.physical_adjacency(scale).numpy() > 0
    is_phys = physical[i, j]
    sm = _scalar_mappable(cmap, w, vmin, vmax)
    widths = scaled(w, width_range[0], width_range[1])

    fig, ax = new_axes(ax, figsize)
    if img is not None:
        h, wd = img.shape[:2]
        ax.imshow(img, extent=(0, wd, h, 0), cmap="gray" if img.ndim == 2 else None,
                  zorder=0)
    if show_skeleton:
        pi, pj = np.nonzero(np.triu(physical, k=1))
        sk = _draw_edges(ax, pos, list(zip(pi.tolist(), pj.tolist(), strict=True)),
                         SKELETON_GID, edge_color="0.6", width=1.0, alpha=0.8)
        if sk is not None:
            sk.set_zorder(1)
    for mask, gid, style in ((is_phys, PHYSICAL_GID, "solid"), (~is_phys, LEARNED_GID, "dashed")):
        edges = list(zip(i[mask].tolist(), j[mask].tolist(), strict=True))
        coll = _draw_edges(ax, pos, edges, gid, style=style, width=widths[mask].tolist(),
                           edge_color=[sm.to_rgba(v) for v in w[mask]])
        if coll is not None:
            coll.set_zorder(2)
    nodes = nx.draw_networkx_nodes(_graph(range(N)), pos, ax=ax, node_size=node_size,
                                   node_color="white", edgecolors="black", linewidths=0.8,
                                   hide_ticks=False)
    nodes.set_zorder(3)
    if show_labels is None:
        show_labels = scale != "s1"
    if show_labels:
        names = skeleton.part_names(scale)
        nx.draw_networkx_labels(_graph(range(N)), pos, labels=dict(enumerate(names)), ax=ax,
                                font_size=6, verticalalignment="bottom", hide_ticks=False,
                                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.6,
                                      "lw": 0})
    fig.colorbar(sm, ax=ax, label="edge weight", shrink=0.8)
    ax.legend(handles=[
        *([_legend_line("0.6", "skeleton", linewidth=1.0)] if show_skeleton else []),
        _legend_line("0.2", "physical edge"),
        _legend_line("0.2", "learned edge", linestyle="--"),
    ], loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=6, frameon=False)

    # Limits: every node with a margin, or the image unless nodes fall outside it; y down.
    kx, ky = node_xy[:, 0], node_xy[:, 1]
    pad = 0.05 * max(np.ptp(kx), np.ptp(ky), 1.0)
    x_lo, x_hi, y_lo, y_hi = kx.min() - pad, kx.max() + pad, ky.min() - pad, ky.max() + pad
    if img is not None:
        h, wd = img.shape[:2]
        x_lo = 0.0 if kx.min() >= 0 else x_lo
        y_lo = 0.0 if ky.min() >= 0 else y_lo
        x_hi = float(wd) if kx.max() <= wd else x_hi
        y_hi = float(h) if ky.max() <= h else y_hi
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_hi, y_lo)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"{skeleton.name} {scale}: {len(w)} edges")
    return finish(fig, save, dpi)


# ---------------------------------------------------------------------------- temporal


def plot_temporal_graph(adj: Any, num_frames: int, num_parts: int, top_k: int | None = 20, *,
                        quantile: float | None = None,
                        part_labels: Sequence[Any] | None = None,
                        frame_labels: Sequence[Any] | None = None,
                        width_range: tuple[float, float] = (0.5, 4.0),
                        alpha_range: tuple[float, float] = (0.25, 1.0), node_size: float = 60.0,
                        title: str | None = None, ax: Any = None,
                        figsize: tuple[float, float] | None = None,
                        save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    r"""The strongest edges of a spatial-temporal graph of ``T * P`` nodes, frame by frame.

    Nodes are in frame-major order, node ``t * P + p`` being part ``p`` of
    frame ``t``, and are laid out on a grid: column ``t`` (x = t), row ``p``
    (part 0 at the top). Each pair ``i < j`` has weight
    :math:`w_{ij} = (A_{ij} + A_{ji}) / 2` (self-loops and zero weights are not
    drawn); only the ``top_k`` strongest by :math:`|w|` are drawn, or with
    ``quantile`` those with :math:`|w|` at least that quantile of all pairs.
    Width and opacity grow with :math:`|w|`. Intra-frame edges (same frame)
    are blue arcs (``FancyArrowPatch`` es, ``gid="intra_frame_edges"``, so they
    do not run over the nodes of their column), cross-frame edges orange
    (``gid="cross_frame_edges"``): straight lines (one ``LineCollection``),
    or arcs for those whose straight line would run over another node (e.g.
    part ``p`` from frame 0 to frame 2); a legend says which is which.

    Args:
        adj (Tensor or ndarray): ``(T * P, T * P)``, e.g. one window adjacency
            ``adj[b, t]`` of :class:`~stgraph.nn.DenseSlidingWindowGCN`
            (``T = tau``, ``P = N``).
        num_frames (int): ``T``.
        num_parts (int): ``P``.
        top_k (int, optional): number of edges drawn; :obj:`None` draws every
            non-zero pair. (default: ``20``)
        quantile (float, optional): in ``[0, 1]``; keep instead the pairs whose
            :math:`|w|` is at least this quantile of all non-zero pairs (``top_k``
            is then ignored).
        part_labels (sequence of str, optional): ``P`` row labels. (default: ``p0, p1, ...``)
        frame_labels (sequence of str, optional): ``T`` column labels. (default: ``t0, ...``)
        width_range, alpha_range ((float, float), optional): line width and
            opacity of a zero and of the strongest drawn weight.
        node_size (float, optional): marker area of the nodes. (default: ``60``)
        title (str, optional): axes title.
        ax (Axes, optional): draw into this Axes; a new figure otherwise.
        figsize ((float, float), optional): size of a new figure in inches.
            (default: grows with ``T`` and ``P``)
        save (str or Path, optional): save the figure there (format from the extension).
        dpi (float, optional): resolution of the saved file. (default: ``150``)

    Returns:
        matplotlib.figure.Figure: the figure drawn into.

    Raises:
        ValueError: ``adj`` not ``(T * P, T * P)`` (the message names it), a
            count < 1, labels of the wrong length, or ``quantile`` outside [0, 1].
    """
    import networkx as nx
    from matplotlib.colors import to_rgba

    T = check_positive_int(num_frames, "num_frames")
    P = check_positive_int(num_parts, "num_parts")
    n = T * P
    a = as_matrix(adj, "adj", f"({n}, {n})", "; for a batch pass one matrix, e.g. adj[b, t]")
    if a.shape != (n, n):
        raise ValueError(f"expected adj of shape ({n}, {n}) for num_frames={T} x "
                         f"num_parts={P} nodes, got {tuple(a.shape)}")
    parts = check_labels(part_labels, P, "part_labels") or [f"p{p}" for p in range(P)]
    frames = check_labels(frame_labels, T, "frame_labels") or [f"t{t}" for t in range(T)]

    i, j, w = pair_weights(a)
    keep = select_strongest(w, top_k=None if quantile is not None else top_k,
                            quantile=quantile)
    i, j, w = i[keep], j[keep], w[keep]
    widths = scaled(w, *width_range)
    alphas = scaled(w, *alpha_range)
    intra = (i // P) == (j // P)
    pos = {v: (float(v // P), -float(v % P)) for v in range(n)}

    if figsize is None:
        figsize = (float(np.clip(1.2 + 1.1 * T, 3.0, 14.0)),
                   float(np.clip(1.0 + 0.45 * P, 2.5, 12.0)))
    fig, ax = new_axes(ax, figsize)
    # A straight segment between grid nodes runs over another node when gcd(dt, dp) > 1:
    # those edges (and all intra-frame ones) are drawn as arcs.
    through = np.gcd(np.abs(i // P - j // P), np.abs(i % P - j % P)) > 1
    for mask, gid, colour, rad in (
        (intra, INTRA_FRAME_GID, INTRA_FRAME_COLOR, 0.35),
        (~intra & ~through, CROSS_FRAME_GID, CROSS_FRAME_COLOR, None),
        (~intra & through, CROSS_FRAME_GID, CROSS_FRAME_COLOR, 0.2),
    ):
        edges = list(zip(i[mask].tolist(), j[mask].tolist(), strict=True))
        colours = [to_rgba(colour, float(al)) for al in alphas[mask]]
        extra = ({} if rad is None else {"arrows": True, "arrowstyle": "-",
                                         "connectionstyle": f"arc3,rad={rad}",
                                         "node_size": node_size})
        _draw_edges(ax, pos, edges, gid, width=widths[mask].tolist(), edge_color=colours,
                    **extra)
    nodes = nx.draw_networkx_nodes(_graph(range(n)), pos, ax=ax, node_size=node_size,
                                   node_color="white", edgecolors="0.2", linewidths=0.8,
                                   hide_ticks=False)
    nodes.set_zorder(3)
    ax.set_xticks(np.arange(T), labels=frames)
    ax.set_yticks(-np.arange(P), labels=parts)
    ax.set_xlim(-0.6, T - 0.4)
    ax.set_ylim(-P + 0.4, 0.6)
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("frame")
    ax.set_ylabel("part")
    ax.legend(handles=[_legend_line(INTRA_FRAME_COLOR, "intra-frame"),
                       _legend_line(CROSS_FRAME_COLOR, "cross-frame")],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_title(title if title is not None else f"{len(w)} strongest edges")
    return finish(fig, save, dpi)


# ---------------------------------------------------------------------------- cross-scale


def plot_cross_scale(att: Any, fine_labels: Sequence[Any] | None = None,
                     coarse_labels: Sequence[Any] | None = None, *, top_k: int | None = None,
                     threshold: float | None = None, heatmap: bool = True,
                     cmap: Any = "viridis", width_range: tuple[float, float] = (0.3, 4.0),
                     node_size: float = 60.0, title: str | None = None, ax: Any = None,
                     figsize: tuple[float, float] | None = None,
                     save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    r"""Bipartite fine -> coarse attention of a cross-scale layer.

    Fine nodes in a left column, coarse nodes in a right column, each in
    node order with node 0 at the top; an edge joins fine
    node ``i`` and coarse node ``m`` with weight :math:`A_{mi}`, colour and
    width by weight (one ``LineCollection``, ``gid="cross_scale_edges"``;
    zero weights are not drawn). All edges by default, or the ``top_k``
    strongest / those :math:`\geq` ``threshold``. With ``heatmap`` (new figure
    only) a second panel shows the whole ``N_c x N_f`` matrix; one colour bar
    serves both panels.

    Args:
        att (Tensor or ndarray): ``(N_c, N_f)``, rows typically summing to 1,
            e.g. one frame ``att[b, t]`` of
            :class:`~stgraph.nn.DenseCrossScaleGCN`'s ``(B, T, N_c, N_f)``.
        fine_labels (sequence of str, optional): ``N_f`` names, e.g.
            ``COCO17.part_names("s1")``. (default: ``f0, f1, ...``)
        coarse_labels (sequence of str, optional): ``N_c`` names, e.g.
            ``COCO17.part_names("s3")``. (default: ``c0, c1, ...``)
        top_k (int, optional): draw only the ``top_k`` strongest edges.
        threshold (float, optional): draw only edges with :math:`|A_{mi}| \geq` this.
        heatmap (bool, optional): add the heatmap panel (ignored when ``ax``
            is one Axes; pass two Axes ``(graph_ax, heatmap_ax)`` to get it in
            an existing figure). (default: :obj:`True`)
        cmap (str or Colormap, optional): colour map. (default: ``"viridis"``)
        width_range ((float, float), optional): line widths of a zero and of
            the strongest weight. (default: ``(0.3, 4.0)``)
        node_size (float, optional): marker area of the nodes. (default: ``60``)
        title (str, optional): title of the graph panel.
        ax (Axes or (Axes, Axes), optional): draw into these; a new figure otherwise.
        figsize ((float, float), optional): size of a new figure in inches.
        save (str or Path, optional): save the figure there (format from the extension).
        dpi (float, optional): resolution of the saved file. (default: ``150``)

    Returns:
        matplotlib.figure.Figure: the figure drawn into.

    Raises:
        ValueError: ``att`` not ``(N_c, N_f)`` (2-D), labels of the wrong length,
            ``top_k < 1`` or a wrong ``ax``.
    """
    import networkx as nx

    hint = "; for a batch pass one frame, e.g. att[b, t]"
    a = as_matrix(att, "att", "(N_c, N_f)", hint)
    n_c, n_f = a.shape
    if n_c < 1 or n_f < 1:
        raise ValueError(f"expected att of shape (N_c, N_f) with N_c, N_f >= 1, "
                         f"got {tuple(a.shape)}")
    fine = check_labels(fine_labels, n_f, "fine_labels") or [f"f{i}" for i in range(n_f)]
    coarse = check_labels(coarse_labels, n_c, "coarse_labels") or [f"c{m}" for m in range(n_c)]

    heat_ax = None
    if ax is None:
        from matplotlib.figure import Figure

        if figsize is None:
            rows = max(n_f, n_c)
            height = float(np.clip(1.0 + 0.28 * rows, 3.0, 12.0))
            width = 4.0 + (float(np.clip(1.5 + 0.22 * n_f, 3.0, 10.0)) if heatmap else 0.0)
            figsize = (width, height)
        fig = Figure(figsize=figsize, layout="constrained")
        if heatmap:
            ax, heat_ax = fig.subplots(1, 2, width_ratios=(1.0, max(1.0, 0.12 * n_f)))
        else:
            ax = fig.add_subplot()
    else:
        if isinstance(ax, (list, tuple, np.ndarray)):
            if len(ax) != 2:
                raise ValueError(f"ax must be one Axes or two (graph, heatmap), got {len(ax)}")
            ax, heat_ax = ax
        fig = root_figure(ax)

    fine_nodes = [("f", i) for i in range(n_f)]
    coarse_nodes = [("c", m) for m in range(n_c)]
    g = _graph(fine_nodes + coarse_nodes)
    # Two columns, each spread over the full height in node order, node 0 at the top
    # (networkx.bipartite_layout would not keep the order: it goes through sets).
    pos = {}
    for x, nodes_ in ((0.0, fine_nodes), (1.0, coarse_nodes)):
        ys = np.linspace(0.0, -1.0, len(nodes_)) if len(nodes_) > 1 else [-0.5]
        pos.update({v: (x, float(y)) for v, y in zip(nodes_, ys, strict=True)})
    m_idx, f_idx = np.nonzero(a)
    w = a[m_idx, f_idx]
    keep = select_strongest(w, top_k=top_k, threshold=threshold)
    keep = np.sort(keep)  # draw in matrix order
    m_idx, f_idx, w = m_idx[keep], f_idx[keep], w[keep]
    sm = _scalar_mappable(cmap, a, None, None)
    edges = [(("f", int(i)), ("c", int(m))) for m, i in zip(m_idx, f_idx, strict=True)]
    coll = _draw_edges(ax, pos, edges, CROSS_SCALE_GID, width=scaled(w, *width_range).tolist(),
                       edge_color=[sm.to_rgba(v) for v in w])
    if coll is not None:
        coll.set_zorder(1)
    nodes = nx.draw_networkx_nodes(g, pos, ax=ax, node_size=node_size, hide_ticks=False,
                                   node_color=["#9ecae1"] * n_f + ["#fdae6b"] * n_c,
                                   edgecolors="0.2", linewidths=0.8)
    nodes.set_zorder(2)
    x_f, x_c = pos[fine_nodes[0]][0], pos[coarse_nodes[0]][0]
    dx = 0.06 * (x_c - x_f)
    for nodes_, names, x, ha in ((fine_nodes, fine, x_f - dx, "right"),
                                 (coarse_nodes, coarse, x_c + dx, "left")):
        for v, name in zip(nodes_, names, strict=True):
            ax.text(x, pos[v][1], name, ha=ha, va="center", fontsize=7)
    span = x_c - x_f
    ax.set_xlim(x_f - 0.55 * span, x_c + 0.55 * span)
    ys = [p[1] for p in pos.values()]
    pad = 0.08 * (max(ys) - min(ys) or 1.0)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_axis_off()
    ax.set_title(title if title is not None else f"fine ({n_f}) -> coarse ({n_c})")
    axes = [ax]
    if heat_ax is not None:
        heat_ax.imshow(a, cmap=sm.cmap, norm=sm.norm, aspect="auto", interpolation="nearest")
        fontsize = float(np.clip(300.0 / max(n_f, n_c), 4.0, 8.0))
        heat_ax.set_xticks(np.arange(n_f), labels=fine, rotation=90, fontsize=fontsize)
        heat_ax.set_yticks(np.arange(n_c), labels=coarse, fontsize=fontsize)
        heat_ax.set_xlabel("fine node")
        heat_ax.set_ylabel("coarse node")
        axes.append(heat_ax)
    fig.colorbar(sm, ax=axes, label="attention", shrink=0.8)
    return finish(fig, save, dpi)
