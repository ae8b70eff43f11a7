"""Query-gallery distance matrices for retrieval."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["compute_distance_matrix"]

_METRICS = ("euclidean", "cosine")


def _as_float_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ValueError(f"expected {name} of shape ({name[0].upper()}, D), got {tuple(x.shape)}")
    return x if x.is_floating_point() else x.float()


def compute_distance_matrix(qf: Tensor | np.ndarray, gf: Tensor | np.ndarray,
                            metric: str = "euclidean", chunk_size: int = 1024) -> Tensor:
    r"""Distances between every query and every gallery feature.

    * ``"euclidean"``: the plain Euclidean distance
      :math:`\lVert q_i - g_j \rVert_2`, **not** its square (torchreid returns the
      square; the ranking is the same). Computed as
      :math:`\sqrt{\max(\lVert q\rVert^2 + \lVert g\rVert^2 - 2 q^T g,\ 0)}` with
      one matrix product; the expansion loses precision for near-identical
      vectors (absolute error around :math:`10^{-3} \lVert q \rVert` in float32).
    * ``"cosine"``: :math:`1 - \cos(q_i, g_j)` in ``[0, 2]``; features are
      L2-normalised inside (a zero vector has distance 1 to everything).

    Queries are processed ``chunk_size`` rows at a time into a preallocated
    output, so the temporaries stay at ``chunk_size x G`` beyond the ``Q x G``
    result (about 80 MB per 2000 x 10000 float32 matrix).

    Args:
        qf (Tensor or np.ndarray): query features.
        gf (Tensor or np.ndarray): gallery features (same device as ``qf``).
        metric (str): ``"euclidean"`` or ``"cosine"``. (default: ``"euclidean"``)
        chunk_size (int): queries per chunk. (default: :obj:`1024`)

    Shapes:
        - **input:** ``qf`` :math:`(Q, D)`, ``gf`` :math:`(G, D)`
        - **output:** :math:`(Q, G)` tensor on ``qf``'s device, in the promoted
          floating dtype of the inputs and float32, whichever is wider (half-precision
          features, e.g. from ``--amp``, are ranked in float32).

    Raises:
        ValueError: an input is not 2-D, the feature widths differ, the metric is
            unknown (the message lists the valid ones), or ``chunk_size < 1``.

    The result carries no gradient (evaluation only; the training losses compute
    their own distances).

    Examples:
        >>> q = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> compute_distance_matrix(q, q)
        tensor([[0., 5.],
                [5., 0.]])
    """
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(_METRICS)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    qf = _as_float_tensor(qf, "qf")
    gf = _as_float_tensor(gf, "gf")
    if qf.size(1) != gf.size(1):
        raise ValueError(f"query and gallery feature widths differ: qf {tuple(qf.shape)} "
                         f"vs gf {tuple(gf.shape)}")
    dtype = torch.promote_types(torch.promote_types(qf.dtype, gf.dtype), torch.float32)
    with torch.no_grad():
        return _fill(qf.detach().to(dtype), gf.detach().to(dtype), metric, chunk_size)


def _fill(qf: Tensor, gf: Tensor, metric: str, chunk_size: int) -> Tensor:
    dtype = qf.dtype

    out = torch.empty(qf.size(0), gf.size(0), dtype=dtype, device=qf.device)
    if metric == "cosine":
        gn = F.normalize(gf, dim=1)  # (G, D)
        for s in range(0, qf.size(0), chunk_size):
            q = F.normalize(qf[s : s + chunk_size], dim=1)  # (c, D)
            torch.mm(q, gn.t(), out=out[s : s + chunk_size])
            out[s : s + chunk_size].neg_().add_(1.0)
        return out
    g_sq = gf.pow(2).sum(dim=1)  # (G,)
    for s in range(0, qf.size(0), chunk_size):
        q = qf[s : s + chunk_size]  # (c, D)
        block = out[s : s + chunk_size]  # (c, G) view into out
        torch.addmm(g_sq.unsqueeze(0), q, gf.t(), beta=1.0, alpha=-2.0, out=block)
        block.add_(q.pow(2).sum(dim=1, keepdim=True)).clamp_(min=0).sqrt_()
    return out
