"""Spatial and temporal attention of a clip: per-frame maps over the frames, temporal scores.

:func:`plot_attention` draws maps given as arrays; :func:`plot_model_attention` runs a
model with attention (:meth:`stgraph.models.VideoReIDModel.attention_maps`: STA, DRSTA,
RRU) on clips and draws one of them (what ``stgraph plot --what attention`` writes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stgraph.viz._common import DEFAULT_DPI, finish, to_image, to_numpy
from stgraph.viz.model import clip_to_images, evaluating, model_inputs

__all__ = ["bilinear_resize", "plot_attention", "plot_model_attention"]


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1-D linear interpolation, half-pixel centres
    (``align_corners=False``, as :func:`torch.nn.functional.interpolate`)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def bilinear_resize(maps: Any, size: tuple[int, int]) -> np.ndarray:
    r"""Bilinear upsampling of maps to ``size = (H, W)`` pixels.

    Half-pixel centres and clamped borders, the values of
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. Each
    output pixel is a convex combination of map cells, so non-negative maps stay
    non-negative (the sum over pixels is not kept: it grows by about
    :math:`HW / hw`).

    Args:
        maps (array or Tensor): :math:`(..., h, w)`.
        size (tuple of int): :math:`(H, W)`.

    Returns:
        numpy.ndarray: float64 :math:`(..., H, W)`.

    Raises:
        ValueError: ``maps`` with fewer than 2 dimensions or an empty map, or a ``size``
            that is not two ints >= 1.
    """
    arr = to_numpy(maps).astype(np.float64)
    if arr.ndim < 2 or arr.shape[-1] < 1 or arr.shape[-2] < 1:
        raise ValueError(f"expected maps of shape (..., h, w) with h, w >= 1, got "
                         f"{tuple(arr.shape)}")
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be two ints (H, W) >= 1, got {size!r}")
    my = _interp_matrix(int(size[0]), arr.shape[-2])  # (H, h)
    mx = _interp_matrix(int(size[1]), arr.shape[-1])  # (W, w)
    return my @ arr @ mx.T  # (..., H, W)


def _check_images(images: Any) -> list[np.ndarray]:
    arr = to_numpy(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"expected images of shape (T, H, W, 3) (uint8, e.g. from "
                         f"stgraph.viz.clip_to_images), got {tuple(arr.shape)}")
    return [to_image(frame, "images") for frame in arr]


def plot_attention(images: Any, spatial: Any, temporal: Any = None, *,
                   title: str | None = None, cmap: str = "jet", alpha: float = 0.5,
                   save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    r"""The attention of one clip: each spatial map over its frame, and the temporal scores.

    A grid with one column per frame: the first row shows the frames, then one row per
    map :math:`k` shows map :math:`k` of each frame upsampled bilinearly to the frame
    (:func:`bilinear_resize`) and drawn over it with transparency ``alpha``. A row shares
    one colour scale, from 0 (or the row's minimum if lower) to the row's maximum, with
    its colorbar at the right. With ``temporal`` a bottom panel shows the scores per frame
    (one bar per score :math:`k`, grouped by frame).

    Axes of the figure: :math:`T` frames, :math:`T K` overlays, :math:`K` colorbars, and
    the temporal panel when ``temporal`` is given.

    Args:
        images (array or Tensor): the frames :math:`(T, H, W, 3)`, uint8 or floats in
            [0, 1] (:func:`~stgraph.viz.clip_to_images` of a normalised clip).
        spatial (array or Tensor): :math:`(T, K, h, w)` maps (any resolution), e.g. one
            clip of the ``"spatial"`` entry of
            :meth:`~stgraph.models.VideoReIDModel.attention_maps`.
        temporal (array or Tensor, optional): :math:`(T, K_t)` temporal scores, or
            :math:`(T,)` for one per frame. Usually :math:`K_t = K` (a score per map), but
            not necessarily: STA has one spatial map per frame and a score per row block.
        title (str, optional): figure title.
        cmap (str): colormap of the maps. (default: :obj:`"jet"`)
        alpha (float): opacity of the maps over the frames, in [0, 1]. (default: :obj:`0.5`)
        save (str or Path, optional): write the figure there (format from the extension).
        dpi (float): resolution of the saved figure. (default: :obj:`150`)

    Returns:
        matplotlib.figure.Figure

    Raises:
        ValueError: ``images`` not :math:`(T, H, W, 3)`, ``spatial`` not
            :math:`(T, K, h, w)` with the frames' :math:`T`, ``temporal`` not
            :math:`(T, K_t)` or :math:`(T,)`, non-finite values, or ``alpha`` outside [0, 1].
    """
    from matplotlib.figure import Figure

    frames = _check_images(images)
    T = len(frames)
    maps = to_numpy(spatial)
    if maps.ndim != 4 or maps.shape[0] != T or min(maps.shape[1:], default=0) < 1:
        raise ValueError(f"expected spatial of shape (T, K, h, w) with T = {T} (the frames "
                         f"of images), got {tuple(maps.shape)}")
    maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        raise ValueError("spatial contains NaN or infinity")
    K = maps.shape[1]
    scores = None
    if temporal is not None:
        scores = to_numpy(temporal)
        if scores.ndim == 1:
            scores = scores[:, None]
        if scores.ndim != 2 or scores.shape[0] != T or scores.shape[1] < 1:
            raise ValueError(f"expected temporal of shape (T, K_t) or (T,) with T = {T} (the "
                             f"frames of images), got {tuple(to_numpy(temporal).shape)}")
        scores = scores.astype(np.float64)
        if not np.isfinite(scores).all():
            raise ValueError("temporal contains NaN or infinity")
    if isinstance(alpha, bool) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")

    H, W = frames[0].shape[:2]
    up = bilinear_resize(maps, (H, W))  # (T, K, H, W)
    col = 1.3
    row = col * H / W
    height = row * (1 + K) + (1.8 if scores is not None else 0.0) + (0.4 if title else 0.0)
    fig = Figure(figsize=(col * T + 1.2, height), layout="constrained")
    ratios = [row] * (1 + K) + ([1.8] if scores is not None else [])
    grid = fig.add_gridspec(len(ratios), T, height_ratios=ratios)

    for t in range(T):
        ax = fig.add_subplot(grid[0, t])
        ax.imshow(frames[t])
        ax.set_title(f"frame {t}", fontsize=9)
        ax.set_axis_off()
    for k in range(K):
        lo, hi = min(0.0, float(up[:, k].min())), float(up[:, k].max())
        hi = hi if hi > lo else lo + 1.0
        axes = []
        for t in range(T):
            ax = fig.add_subplot(grid[1 + k, t])
            ax.imshow(frames[t])
            im = ax.imshow(up[t, k], cmap=cmap, alpha=float(alpha), vmin=lo, vmax=hi,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if t == 0:
                ax.set_ylabel(f"map {k}" if K > 1 else "attention", fontsize=9)
            axes.append(ax)
        bar = fig.colorbar(im, ax=axes, shrink=0.9, pad=0.02)
        bar.set_label("weight per map cell", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    if scores is not None:
        ax = fig.add_subplot(grid[-1, :])
        kt = scores.shape[1]
        width = 0.8 / kt
        x = np.arange(T)
        for k in range(kt):
            ax.bar(x - 0.4 + width * (k + 0.5), scores[:, k], width=width,
                   label=(f"map {k}" if kt == K else f"score {k}") if kt > 1 else None)
        ax.set_xticks(x, [f"frame {t}" for t in range(T)], fontsize=8)
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_ylabel("temporal score", fontsize=9)
        ax.axhline(0.0, color="black", linewidth=0.6)
        if kt > 1:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title)
    return finish(fig, save, dpi)


def plot_model_attention(model: Any, clips: Any, *, keypoints: Any = None,
                         clip_index: int = 0, title: str | None = None,
                         save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    r"""Run ``model`` on ``clips`` and plot the attention of one clip (:func:`plot_attention`).

    The maps come from :meth:`~stgraph.models.VideoReIDModel.attention_maps`, computed in
    eval mode without gradients; the model's mode is restored afterwards.

    Args:
        model (VideoReIDModel): a model with attention (see
            :func:`stgraph.models.base.models_with_attention`), e.g. from
            :func:`stgraph.checkpoint.load_checkpoint`.
        clips (Tensor): normalised clips :math:`(B, T, 3, H, W)` (as the clip datasets give).
        keypoints (Tensor, optional): :math:`(B, T, 17, 3)`, passed on to models that take
            them (their ``input_keys``).
        clip_index (int): which clip of the batch. (default: :obj:`0`)
        title (str, optional): figure title (default: the model's class and the clip).
        save (str or Path, optional): write the figure there.
        dpi (float): resolution of the saved figure. (default: :obj:`150`)

    Returns:
        matplotlib.figure.Figure

    Raises:
        TypeError: the model has no attention maps (the message lists the models that do).
        ValueError: clips not :math:`(B, T, 3, H, W)` or ``clip_index`` out of range.
    """
    inputs = model_inputs(model, clips, keypoints, clip_index)
    with evaluating(model):
        att = model.attention_maps(clips, **inputs)
    temporal = att.get("temporal")
    return plot_attention(clip_to_images(clips[clip_index]), att["spatial"][clip_index],
                          None if temporal is None else temporal[clip_index],
                          title=title or f"{type(model).__name__} attention, clip {clip_index}",
                          save=save, dpi=dpi)

