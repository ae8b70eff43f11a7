"""Retrieval results: a query's ranked gallery tracklets, and CMC curves."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np

from stgraph.viz._common import (
    DEFAULT_DPI,
    check_positive_int,
    finish,
    is_pil_image,
    is_tensor,
    new_axes,
    to_image,
    to_numpy,
)

__all__ = ["plot_cmc", "plot_ranking"]

#: Frame colours of :func:`plot_ranking`: a correct match, a wrong one, the query /
#: unknown identities.
MATCH_COLOR = "green"
MISMATCH_COLOR = "red"
NEUTRAL_COLOR = "0.4"


# ---------------------------------------------------------------------------- ranking


def _frames(tracklet: Any, name: str) -> list[np.ndarray]:
    """The frames of a tracklet as a list of images (see :func:`to_image`)."""
    if is_pil_image(tracklet):
        return [to_image(tracklet, name)]
    if isinstance(tracklet, (list, tuple)):
        if not tracklet:
            raise ValueError(f"{name} has no frames")
        return [to_image(f, f"{name} frame {k}") for k, f in enumerate(tracklet)]
    arr = to_numpy(tracklet)
    if arr.ndim in (2, 3):  # one image
        return [to_image(arr, name)]
    if arr.ndim != 4:
        raise ValueError(f"expected {name} of shape (T, H, W, 3) or (T, 3, H, W) (or a list of "
                         f"images), got {tuple(arr.shape)}")
    if arr.shape[-1] not in (1, 3, 4):
        if arr.shape[1] not in (1, 3, 4):
            raise ValueError(f"expected {name} of shape (T, H, W, 3) or (T, 3, H, W), "
                             f"got {tuple(arr.shape)}")
        arr = np.moveaxis(arr, 1, -1)
    if arr.shape[0] < 1:
        raise ValueError(f"{name} has no frames")
    return [to_image(f, f"{name} frame {k}") for k, f in enumerate(arr)]


def _as_float_rgb(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    return x[..., :3]


def _montage(frames: list[np.ndarray], max_frames: int, gap: int = 2) -> np.ndarray:
    """Up to ``max_frames`` evenly spaced frames on a near-square grid, white between them."""
    if len(frames) > max_frames:
        idx = np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int)
        frames = [frames[k] for k in idx]
    frames = [_as_float_rgb(f) for f in frames]
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    cols = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    out = np.ones((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), np.float32)
    for k, f in enumerate(frames):
        r, c = divmod(k, cols)
        y0 = r * (h + gap) + (h - f.shape[0]) // 2
        x0 = c * (w + gap) + (w - f.shape[1]) // 2
        out[y0:y0 + f.shape[0], x0:x0 + f.shape[1]] = f
    return out


def _gallery_list(gallery: Any) -> list[Any]:
    if isinstance(gallery, (list, tuple)):
        return list(gallery)
    if is_tensor(gallery) or isinstance(gallery, np.ndarray):
        if gallery.ndim != 5:
            raise ValueError(
                "expected gallery as a list of tracklets or an array of shape "
                f"(G, T, H, W, 3) / (G, T, 3, H, W), got {tuple(gallery.shape)}"
            )
        return [gallery[g] for g in range(gallery.shape[0])]
    raise ValueError(f"expected gallery as a list of tracklets or a 5-D array, "
                     f"got {type(gallery).__name__}")


def _frame_axes(ax: Any, colour: Any, linewidth: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(linewidth)


def plot_ranking(query: Any, gallery: Any, distances: Any, query_pid: Any = None,
                 gallery_pids: Any = None, top_k: int = 5, *, max_frames: int = 4,
                 title: str | None = None, figsize: tuple[float, float] | None = None,
                 save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    """A query tracklet and its ``top_k`` nearest gallery tracklets.

    One panel per tracklet, left to right: the query, then the gallery items by
    increasing distance (stable sort: ties keep gallery order, as
    :func:`~stgraph.eval.evaluate_rank`). Each panel shows up to
    ``max_frames`` evenly spaced frames of the tracklet on a near-square grid
    (frames of different sizes are centred on a white cell of the largest
    size). With ``query_pid`` and ``gallery_pids``, a gallery panel is framed
    green (``MATCH_COLOR``) when its identity is the query's, red
    (``MISMATCH_COLOR``) otherwise; the query and panels of unknown identity
    are framed grey. The distance is written under each gallery panel, the
    rank and identity above. Junk items (e.g. same camera) are not removed:
    pass the gallery you rank against.

    Args:
        query: the query tracklet: a list of frames (PIL images, ``(H, W, 3)``
            or ``(3, H, W)`` arrays / tensors), an array / tensor
            ``(T, H, W, 3)`` or ``(T, 3, H, W)``, or one image. ``uint8`` or
            float in ``[0, 1]``, shown as given (nothing is un-normalised).
        gallery: ``G`` tracklets, each as ``query``, as a list, or an array /
            tensor ``(G, T, H, W, 3)`` / ``(G, T, 3, H, W)``.
        distances (Tensor or ndarray): ``(G,)`` distances from the query,
            smaller is nearer (a row of the distance matrix).
        query_pid (int, optional): the query's identity.
        gallery_pids (Tensor, ndarray or sequence, optional): ``(G,)`` identities.
        top_k (int, optional): gallery items shown (at most ``G``). (default: ``5``)
        max_frames (int, optional): frames shown per tracklet. (default: ``4``)
        title (str, optional): figure title.
        figsize ((float, float), optional): figure size in inches.
            (default: from ``top_k`` and the query's aspect ratio)
        save (str or Path, optional): save the figure there (format from the extension).
        dpi (float, optional): resolution of the saved file. (default: ``150``)

    Returns:
        matplotlib.figure.Figure: ``top_k + 1`` Axes, the query's first.

    Raises:
        ValueError: ``distances`` not ``(G,)`` for the ``G`` gallery tracklets,
            ``gallery_pids`` not ``(G,)``, images of a wrong shape / dtype /
            range, or ``top_k`` / ``max_frames`` < 1.
    """
    from matplotlib.figure import Figure

    top_k = check_positive_int(top_k, "top_k")
    max_frames = check_positive_int(max_frames, "max_frames")
    items = _gallery_list(gallery)
    G = len(items)
    if G < 1:
        raise ValueError("gallery is empty")
    dist = to_numpy(distances)
    if dist.shape != (G,):
        raise ValueError(f"expected distances of shape ({G},) (one per gallery tracklet), "
                         f"got {tuple(dist.shape)}")
    dist = dist.astype(np.float64)
    if np.isnan(dist).any():
        raise ValueError("distances contain NaN")
    pids = None
    if gallery_pids is not None:
        pids = to_numpy(gallery_pids)
        if pids.shape != (G,):
            raise ValueError(f"expected gallery_pids of shape ({G},), got {tuple(pids.shape)}")
    if query_pid is not None:
        query_pid = to_numpy(query_pid)
        if query_pid.size != 1:
            raise ValueError(f"query_pid must be one identity, got shape {query_pid.shape}")
        query_pid = query_pid.reshape(()).item()

    order = np.argsort(dist, kind="stable")[:min(top_k, G)]
    q_img = _montage(_frames(query, "query"), max_frames)
    g_imgs = [_montage(_frames(items[g], f"gallery[{g}]"), max_frames) for g in order]

    if figsize is None:
        aspect = q_img.shape[0] / q_img.shape[1]
        cell = 1.25
        figsize = (cell * (len(order) + 1) + 0.2, cell * aspect + 1.0 + (0.3 if title else 0))
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, len(order) + 1, squeeze=False)[0]
    axes[0].imshow(q_img)
    _frame_axes(axes[0], NEUTRAL_COLOR, 2.0)
    axes[0].set_title("query" + (f"\npid {query_pid}" if query_pid is not None else ""),
                      fontsize=8)
    for r, (ax, g, img) in enumerate(zip(axes[1:], order, g_imgs, strict=True), start=1):
        ax.imshow(img)
        colour, label = NEUTRAL_COLOR, f"rank {r}"
        if pids is not None:
            pid = pids[g].item()
            label += f"\npid {pid}"
            if query_pid is not None:
                colour = MATCH_COLOR if pid == query_pid else MISMATCH_COLOR
        _frame_axes(ax, colour, 4.0)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel(f"d = {dist[g]:.3g}", fontsize=8)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return finish(fig, save, dpi)


# ---------------------------------------------------------------------------- CMC


def _load_result(result: Any, k: int) -> tuple[np.ndarray, np.ndarray, float | None, str | None]:
    """``(ranks, cmc values, mAP or None, default label or None)`` of one run."""
    name = None
    if isinstance(result, (str, Path)):
        path = Path(result)
        if path.is_dir():
            path = path / "metrics.json"
        with open(path) as f:
            result = json.load(f)
        name = path.parent.name or path.stem
    mAP = None
    if isinstance(result, Mapping):
        if result.get("mAP") is not None:
            mAP = float(result["mAP"])
        if "cmc" in result:
            cmc = result["cmc"]
        else:
            ranked = sorted((int(key[4:]), float(v)) for key, v in result.items()
                            if key.startswith("rank") and key[4:].isdigit())
            if not ranked:
                raise ValueError(f"results[{k}] has neither 'cmc' nor 'rank<k>' entries; "
                                 f"keys: {sorted(result)}")
            ranks = np.array([r for r, _ in ranked], dtype=np.int64)
            values = np.array([v for _, v in ranked], dtype=np.float64)
            return ranks, _check_cmc(values, k), mAP, name
    else:
        cmc = result
    values = to_numpy(cmc).astype(np.float64)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"expected the CMC of results[{k}] of shape (R,) with R >= 1, "
                         f"got {tuple(values.shape)}")
    return np.arange(1, values.size + 1), _check_cmc(values, k), mAP, name


def _check_cmc(values: np.ndarray, k: int) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ValueError(f"the CMC of results[{k}] contains NaN or infinity")
    if values.min() < 0 or values.max() > 1:
        raise ValueError(
            f"the CMC of results[{k}] must hold fractions in [0, 1] (as evaluate_rank gives), "
            f"got values in [{values.min():.4g}, {values.max():.4g}]; divide percentages by 100"
        )
    return values


def plot_cmc(results: Any, labels: Sequence[str] | None = None, max_rank: int = 20, *,
             title: str | None = None, ax: Any = None, figsize: tuple[float, float] = (5.0, 3.5),
             save: str | Path | None = None, dpi: float = DEFAULT_DPI) -> Any:
    """CMC curves of one or several runs.

    One line per run: rank ``r = 1 .. max_rank`` against the fraction of
    queries matched within rank ``r`` (the line data are the CMC values as
    given, shown in percent by the axis formatter). A run without ``"cmc"``
    but with ``rank1``, ``rank5``, ... entries is drawn through those ranks
    only. The legend gives each run's label, rank-1 and, when present, mAP.

    Args:
        results: one run or a list of runs; a run is a dict with ``"cmc"``
            (and optionally ``"mAP"``) as :func:`~stgraph.eval.evaluate_rank`
            returns and ``metrics.json`` holds, a 1-D array / tensor / list of
            CMC values (fractions, ``cmc[0]`` is rank-1), or the path of a
            ``metrics.json`` (or of the folder holding it).
        labels (sequence of str, optional): one per run. (default: the
            folder name for paths, ``run 0, run 1, ...`` otherwise)
        max_rank (int, optional): last rank shown. (default: ``20``)
        title (str, optional): axes title.
        ax (Axes, optional): draw into this Axes; a new figure otherwise.
        figsize ((float, float), optional): size of a new figure in inches.
        save (str or Path, optional): save the figure there (format from the extension).
        dpi (float, optional): resolution of the saved file. (default: ``150``)

    Returns:
        matplotlib.figure.Figure: the figure drawn into.

    Raises:
        ValueError: a CMC that is not 1-D, empty, or not fractions in [0, 1], a
            dict without CMC entries, ``labels`` of the wrong length, or
            ``max_rank < 1``.
        FileNotFoundError: a path without ``metrics.json``.

    Examples:
        >>> fig = plot_cmc([{"cmc": [0.5, 0.75, 1.0], "mAP": 0.6}], labels=["stgcn"])
        >>> fig.axes[0].get_legend().get_texts()[0].get_text()
        'stgcn: R1 50.0%, mAP 60.0%'
    """
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    max_rank = check_positive_int(max_rank, "max_rank")
    single = (isinstance(results, (Mapping, str, Path, np.ndarray)) or is_tensor(results)
              or (isinstance(results, (list, tuple)) and len(results) > 0
                  and all(isinstance(v, Number) for v in results)))
    runs = [results] if single else list(results)
    if not runs:
        raise ValueError("results is empty")
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != len(runs):
            raise ValueError(f"labels has {len(labels)} entries for {len(runs)} runs")

    fig, ax = new_axes(ax, figsize)
    lowest = 1.0
    for k, run in enumerate(runs):
        ranks, values, mAP, name = _load_result(run, k)
        keep = ranks <= max_rank
        ranks, values = ranks[keep], values[keep]
        label = labels[k] if labels is not None else (name or f"run {k}")
        parts = []
        if ranks.size and ranks[0] == 1:
            parts.append(f"R1 {100 * values[0]:.1f}%")
        if mAP is not None:
            parts.append(f"mAP {100 * mAP:.1f}%")
        if parts:
            label += ": " + ", ".join(parts)
        ax.plot(ranks, values, marker="o", markersize=3, linewidth=1.5, label=label)
        if values.size:
            lowest = min(lowest, float(values.min()))
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(math.floor(lowest * 10) / 10 - 0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title is not None:
        ax.set_title(title)
    return finish(fig, save, dpi)
