"""Helpers shared by the plotting functions: array conversion, figures, edge selection.

Nothing here imports matplotlib at module level; :func:`new_axes` and
:func:`finish` import it when a figure is made.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np

#: Default resolution of saved figures (dots per inch).
DEFAULT_DPI = 150


def is_tensor(x: Any) -> bool:
    """``True`` for a ``torch.Tensor`` (without importing torch when it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_pil_image(x: Any) -> bool:
    """``True`` for a ``PIL.Image.Image`` (without importing PIL when it is not loaded)."""
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(x, pil.Image)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array of ``x`` (tensors are detached, moved to the CPU, half floats widened)."""
    if is_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 has no numpy dtype
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def as_matrix(x: Any, name: str, expected: str, hint: str = "") -> np.ndarray:
    """``x`` as a 2-D float64 array, or a ``ValueError`` naming the ``expected`` shape."""
    arr = to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"expected {name} of shape {expected}, got {tuple(arr.shape)}{hint}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_labels(labels: Sequence[Any] | None, n: int, name: str) -> list[str] | None:
    """``labels`` as a list of ``n`` strings (``None`` stays ``None``)."""
    if labels is None:
        return None
    labels = [str(s) for s in labels]
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} entries, expected {n} (one per node)")
    return labels


def check_positive_int(value: Any, name: str, allow_none: bool = False) -> int | None:
    """``value`` as an int >= 1, or a ``ValueError``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def root_figure(ax: Any) -> Any:
    """The top-level :class:`~matplotlib.figure.Figure` of ``ax`` (through sub-figures)."""
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's .figure is its parent
        fig = fig.figure
    return fig


def new_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``(figure, ax)``: ``ax``'s figure, or a new headless figure with one Axes.

    New figures are plain :class:`matplotlib.figure.Figure` objects with constrained
    layout, not registered with pyplot: no backend and no global state are involved,
    and they are freed like any Python object.
    """
    if ax is not None:
        return root_figure(ax), ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def finish(fig: Any, save: str | Path | None, dpi: float) -> Any:
    """Save ``fig`` to ``save`` (format from the extension, PNG without one) when given;
    return ``fig``.

    The figure is rendered into memory and written with one ``write``: matplotlib's own
    file writer drops some write errors (a full disk), which then surface here as
    :class:`OSError` naming the file.
    """
    if save is not None:
        import io

        suffix = Path(save).suffix.lstrip(".").lower()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format=suffix or "png")
        with open(save, "wb") as f:
            f.write(buf.getvalue())
    return fig


def colormap(cmap: Any) -> Any:
    """A :class:`matplotlib.colors.Colormap` from a name or a colormap."""
    import matplotlib

    if isinstance(cmap, str):
        return matplotlib.colormaps[cmap]
    return cmap


def pair_weights(adj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Undirected pairs ``i < j`` of a square matrix, weight :math:`(A_{ij} + A_{ji}) / 2`.

    The diagonal (self-loops) is left out, and so are pairs of weight 0.

    Returns:
        ``(i, j, w)``, three 1-D arrays in row-major order of the upper triangle.
    """
    sym = 0.5 * (adj + adj.T)
    i, j = np.triu_indices(adj.shape[0], k=1)
    w = sym[i, j]
    keep = w != 0
    return i[keep], j[keep], w[keep]


def select_strongest(weights: np.ndarray, top_k: int | None = None,
                     threshold: float | None = None,
                     quantile: float | None = None) -> np.ndarray:
    """Indices of the strongest ``weights`` by absolute value, strongest first.

    ``quantile`` (in [0, 1]) keeps weights with ``|w|`` at least that quantile of
    all ``|w|``; ``threshold`` keeps ``|w| >= threshold``; then ``top_k`` keeps at
    most ``top_k`` of them. With none given every index is kept. Ties keep
    their order (stable sort).
    """
    mag = np.abs(weights)
    order = np.argsort(-mag, kind="stable")
    if quantile is not None:
        if isinstance(quantile, bool) or not isinstance(quantile, Number) or not (
                0.0 <= quantile <= 1.0):
            raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
        if mag.size:
            cut = np.quantile(mag, quantile)
            order = order[mag[order] >= cut]
    if threshold is not None:
        order = order[mag[order] >= threshold]
    top_k = check_positive_int(top_k, "top_k", allow_none=True)
    if top_k is not None:
        order = order[:top_k]
    return order


def scaled(mag: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``mag / max(mag)`` mapped linearly onto ``[lo, hi]`` (all ``hi`` when constant)."""
    mag = np.abs(np.asarray(mag, dtype=np.float64))
    top = mag.max() if mag.size else 0.0
    if top <= 0:
        return np.full(mag.shape, hi)
    return lo + (hi - lo) * mag / top


def to_image(img: Any, name: str = "image") -> np.ndarray:
    """An image as an array imshow can show: ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.

    Accepts a PIL image, or an array / tensor ``(H, W)``, ``(H, W, C)`` or
    ``(C, H, W)`` with ``C`` in 1, 3, 4; ``uint8`` (0..255) or floats in [0, 1]
    (nothing is un-normalised: floats well outside [0, 1] are an error).
    Returns ``uint8`` or float32 in [0, 1].
    """
    if is_pil_image(img):
        img = np.asarray(img.convert("RGBA" if "A" in img.mode else "RGB"))
    arr = to_numpy(img)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(
            f"expected {name} of shape (H, W), (H, W, 3) or (3, H, W) (or a PIL image), "
            f"got {tuple(arr.shape)}"
        )
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"integer {name} must hold values in 0..255, "
                             f"got {arr.min()}..{arr.max()}")
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    if lo < -0.01 or hi > 1.01:
        raise ValueError(
            f"float {name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; undo the "
            "normalisation (e.g. x * std + mean) or pass uint8"
        )
    return np.clip(arr, 0.0, 1.0)
