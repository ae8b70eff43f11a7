"""Operators that the TorchScript-based ONNX exporter cannot export, in forms it can.

Each function is the plain PyTorch operator in eager mode (the same numbers as before)
and an exportable equivalent while :func:`torch.onnx.is_in_onnx_export` is true, so the
eager model is unchanged and ``stgraph.export.export_onnx`` works for every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_pool_matrix"]


def adaptive_pool_matrix(in_size: int, out_size: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> Tensor:
    r"""The ``(out_size, in_size)`` matrix of 1-D adaptive average pooling.

    Row :math:`i` averages input cells :math:`[\lfloor i n / m \rfloor,
    \lceil (i + 1) n / m \rceil)` (:math:`n` = ``in_size``, :math:`m` = ``out_size``),
    PyTorch's ``adaptive_avg_pool`` bins, so ``P @ x`` pools ``x`` along its first axis.

    Raises:
        ValueError: a size below 1.
    """
    in_size, out_size = int(in_size), int(out_size)  # Python ints: a constant when traced
    if in_size < 1 or out_size < 1:
        raise ValueError(f"adaptive_pool_matrix: sizes must be >= 1, got in_size={in_size}, "
                         f"out_size={out_size}")
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-((i + 1) * in_size) // out_size)
        out[i, start:end] = 1.0 / (end - start)
    return torch.tensor(out, dtype=dtype, device=device)


def adaptive_avg_pool1d(x: Tensor, size: int) -> Tensor:
    """:func:`torch.nn.functional.adaptive_avg_pool1d` of ``x`` ``(N, C, L)``, exportable
    to ONNX for any ``size`` (the exporter only takes sizes that divide ``L``)."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool1d(x, size)
    p = adaptive_pool_matrix(x.size(-1), int(size), x.dtype, x.device)
    return x @ p.T


def adaptive_avg_pool2d(x: Tensor, size: Sequence[int]) -> Tensor:
    """:func:`torch.nn.functional.adaptive_avg_pool2d` of ``x`` ``(N, C, h, w)`` to ``size``
    ``(h', w')``, exportable to ONNX for any size (the exporter only takes sizes that
    divide the input's)."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, size)
    out_h, out_w = (int(s) for s in size)
    ph = adaptive_pool_matrix(x.size(-2), out_h, x.dtype, x.device)
    pw = adaptive_pool_matrix(x.size(-1), out_w, x.dtype, x.device)
    # right-multiplications only: a broadcast left operand exports as Expand + Reshape
    # with the traced batch size
    return ((x @ pw.T).transpose(-1, -2) @ ph.T).transpose(-1, -2)
