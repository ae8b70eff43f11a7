"""Heatmap of an adjacency matrix, with frame blocks marked for spatial-temporal graphs."""

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
    finish,
    new_axes,
)

__all__ = ["plot_adjacency"]

#: ``gid`` of the lines drawn between frame blocks by :func:`plot_adjacency`.
FRAME_SEPARATOR_GID = "frame_separator"


def _frames_and_parts(n: int, num_frames: int | None,
                      num_parts: int | None) -> tuple[int, int] | None:
    """``(T, P)`` with ``T * P == n`` from the given one(s), or ``None`` if neither is given."""
    num_frames = check_positive_int(num_frames, "num_frames", allow_none=True)
    num_parts = check_positive_int(num_parts, "num_parts", allow_none=True)
    if num_frames is None and num_parts is None:
        return None
    if num_frames is None:
        if n % num_parts:
            raise ValueError(f"adjacency has {n} nodes, not a multiple of num_parts={num_parts}")
        num_frames = n // num_parts
    elif num_parts is None:
        if n % num_frames:
            raise ValueError(f"adjacency has {n} nodes, not a multiple of "
                             f"num_frames={num_frames}")
        num_parts = n // num_frames
    if num_frames * num_parts != n:
        raise ValueError(
            f"expected adj of shape ({num_frames * num_parts}, {num_frames * num_parts}) for "
            f"num_frames={num_frames} x num_parts={num_parts} nodes, got ({n}, {n})"
        )
    return num_frames, num_parts


def plot_adjacency(adj: Any, node_labels: Sequence[Any] | None = None,
                   num_frames: int | None = None, num_parts: int | None = None,
                   title: str | None = None, cmap: Any = "viridis", *,
                   vmin: float | None = None, vmax: float | None = None,
                   colorbar_label: str | None = "weight", ax: Any = None,
                   figsize: tuple[float, float] | None = None,
                   save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    r"""Heatmap of an ``N x N`` adjacency matrix with a colour bar.

    Row ``i``, column ``j`` shows :math:`A_{ij}` (``imshow``, row 0 at the top).
    Node labels, when given, label both axes. For a spatial-temporal graph of
    ``T * P`` nodes in frame-major order (node ``t * P + p``, as
    :class:`~stgraph.nn.DenseSlidingWindowGCN`'s window adjacencies
    ``(B, T, tau * N, tau * N)`` with ``T = tau``, ``P = N``), pass
    ``num_frames`` and/or ``num_parts``: white lines separate the frame blocks
    (``gid="frame_separator"``), the blocks are labelled ``t0, t1, ...`` on a
    top axis, and without ``node_labels`` the nodes are labelled
    ``"t{frame}/p{part}"``.

    Args:
        adj (Tensor or ndarray): ``(N, N)``; one matrix (index a batch first,
            e.g. ``adj[b, t]``).
        node_labels (sequence of str, optional): ``N`` tick labels.
        num_frames (int, optional): ``T``; ``N`` must be a multiple of it.
        num_parts (int, optional): ``P``; ``N`` must be a multiple of it.
            With one of the two given the other is ``N`` divided by it.
        title (str, optional): axes title.
        cmap (str or Colormap, optional): colour map. (default: ``"viridis"``)
        vmin, vmax (float, optional): colour limits. (default: the data range)
        colorbar_label (str, optional): label of the colour bar.
            (default: ``"weight"``)
        ax (Axes, optional): draw into this Axes; a new figure otherwise.
        figsize ((float, float), optional): size of a new figure in inches.
            (default: grows with ``N``)
        save (str or Path, optional): save the figure there (format from the
            extension).
        dpi (float, optional): resolution of the saved file. (default: ``150``)

    Returns:
        matplotlib.figure.Figure: the figure drawn into (the root figure of ``ax``).

    Raises:
        ValueError: ``adj`` not 2-D and square (the message names the expected
            ``(N, N)``), ``node_labels`` not of length ``N``, or ``N`` not
            ``num_frames * num_parts``.

    Examples:
        >>> fig = plot_adjacency(np.eye(6), num_frames=2, num_parts=3)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()][:4]
        ['t0/p0', 't0/p1', 't0/p2', 't1/p0']
    """
    hint = "; for a batch of matrices pass one, e.g. adj[0] or adj[b, t]"
    a = as_matrix(adj, "adj", "(N, N)", hint)
    n = a.shape[0]
    if a.shape[1] != n:
        raise ValueError(f"expected adj of shape (N, N) (square), got {tuple(a.shape)}")
    labels = check_labels(node_labels, n, "node_labels")
    blocks = _frames_and_parts(n, num_frames, num_parts)
    if labels is None and blocks is not None:
        labels = [f"t{t}/p{p}" for t in range(blocks[0]) for p in range(blocks[1])]

    if figsize is None:
        side = float(np.clip(2.5 + 0.18 * n, 3.5, 12.0))
        figsize = (side + 1.0, side)
    fig, ax = new_axes(ax, figsize)
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=colorbar_label)
    if labels is not None:
        fontsize = float(np.clip(400.0 / max(n, 1), 3.0, 9.0))
        ax.set_xticks(np.arange(n), labels=labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(np.arange(n), labels=labels, fontsize=fontsize)
    if blocks is not None:
        T, P = blocks
        for t in range(1, T):
            edge = t * P - 0.5
            ax.axhline(edge, color="white", linewidth=1.5, gid=FRAME_SEPARATOR_GID)
            ax.axvline(edge, color="white", linewidth=1.5, gid=FRAME_SEPARATOR_GID)
        top = ax.secondary_xaxis("top")
        top.set_ticks(np.arange(T) * P + (P - 1) / 2.0, labels=[f"t{t}" for t in range(T)])
        top.tick_params(length=0)
        top.set_xlabel("frame")
    if title is not None:
        ax.set_title(title)
    return finish(fig, save, dpi)
