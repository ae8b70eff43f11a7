"""k-reciprocal re-ranking of query-gallery distances, vectorised with torch.

Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
CVPR 2017 (https://arxiv.org/abs/1701.08398).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RERANK_METRICS", "re_ranking"]

#: Names accepted by ``re_ranking(..., metric=...)``.
RERANK_METRICS = ("euclidean", "cosine")


def re_ranking(qf: Tensor | np.ndarray, gf: Tensor | np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3, metric: str = "euclidean",
               block_size: int = 1024) -> Tensor:
    r"""k-reciprocal re-ranked distances between queries and gallery items.

    From Zhong et al., `"Re-ranking Person Re-identification with k-reciprocal
    Encoding" <https://arxiv.org/abs/1701.08398>`_ (CVPR 2017), the standard
    algorithm of the authors' code (``re_ranking_feature.py``, also torchreid's
    ``re_ranking``), on all :math:`N = Q + G` features together:

    1. :math:`d(i, j)`: the squared Euclidean distance (``"euclidean"``, as the
       authors) or :math:`1 - \cos` (``"cosine"``), divided by the maximum of
       row :math:`i`.
    2. :math:`N(i, k)`: the :math:`k + 1` nearest items of :math:`i` (itself
       included); :math:`R(i, k) = \{j \in N(i, k) : i \in N(j, k)\}`.
    3. :math:`R^*(i)`: :math:`R(i, k_1)` plus :math:`R(c, \operatorname{round}(k_1/2))`
       for every :math:`c \in R(i, k_1)` whose set shares more than 2/3 of its
       members with :math:`R(i, k_1)`.
    4. :math:`V_{ij} = e^{-d(i, j)} / \sum_{j' \in R^*(i)} e^{-d(i, j')}` on
       :math:`R^*(i)`, 0 elsewhere; if :math:`k_2 > 1`, every row is replaced
       by the mean of the rows of its :math:`k_2` nearest items (query expansion).
    5. :math:`d_J(i, j) = 1 - \frac{\sum_l \min(V_{il}, V_{jl})}{2 - \sum_l \min(V_{il}, V_{jl})}`
       (rows of :math:`V` sum to 1, so the denominator is :math:`\sum_l \max`), and

    .. math::
        d^*(q, g) = (1 - \lambda)\, d_J(q, g) + \lambda\, d(q, g).

    With ``lambda_value=1`` the result is the row-normalised distance of step 1.

    Vectorised: one :math:`N \times N` distance matrix (``block_size`` rows at a
    time, each block multiplied with the rows from its own on and mirrored: half
    the products), one ``topk`` per row instead of a full argsort, the
    reciprocal tests and the 2/3 rule as gathers and a ``searchsorted`` over the
    neighbour lists, :math:`V` as a sparse CSR list (at most
    :math:`(k_1+1)(\operatorname{round}(k_1/2)+2)` entries a row before query
    expansion), and the Jaccard numerators by pairing each query entry with the
    gallery entries of its column (``index_add``), about ``2048 * block_size``
    pairs at a time. Ties between distances are broken by ``torch.topk``, as the
    authors' unstable ``np.argsort`` breaks them: results match theirs when the
    :math:`k_1 + 1` nearest distances are distinct.

    Memory: :math:`N^2` values of the compute dtype for the distance matrix
    (float32: 488 MiB at MARS size, :math:`N = 1980 + 9330 = 11310`), plus the
    :math:`Q \times G` result, which holds the Jaccard numerators first (70 MiB
    there), the concatenated features (88 MiB at 2048-d), the neighbour lists
    and sparse :math:`V` (tens of MiB), and temporaries bounded by
    ``block_size``: ``block_size`` x :math:`N` tiles and the pair chunks (about
    100 MiB at the default 1024). Measured at MARS size with 2048-d float32
    features (``benchmarks/eval_speed.py``): the resident set rises by 971 MiB,
    2.0x the distance matrix. float64 inputs double everything.

    Args:
        qf (Tensor or np.ndarray): query features.
        gf (Tensor or np.ndarray): gallery features (same device as ``qf``).
        k1 (int): neighbourhood size of the k-reciprocal sets. (default: :obj:`20`)
        k2 (int): neighbours averaged by query expansion; 1 turns it off.
            (default: :obj:`6`)
        lambda_value (float): weight of the original distance, in [0, 1].
            (default: :obj:`0.3`)
        metric (str): ``"euclidean"`` (squared) or ``"cosine"``.
            (default: ``"euclidean"``)
        block_size (int): rows per block; bounds the temporaries, not the result.
            (default: :obj:`1024`)

    Shapes:
        - **input:** ``qf`` :math:`(Q, D)`, ``gf`` :math:`(G, D)`
        - **output:** :math:`(Q, G)` tensor on ``qf``'s device, float64 when an input
          is float64, float32 otherwise; smaller is more similar.

    Raises:
        ValueError: an input is not 2-D or has no rows, the feature widths differ,
            features are not finite, the metric is unknown (the message lists the
            valid ones), ``k1 < 1``, ``k2 < 1``, ``lambda_value`` outside [0, 1] or
            ``block_size < 1``.

    Examples:
        >>> q = torch.tensor([[0.0, 0.0]])
        >>> g = torch.tensor([[0.1, 0.0], [3.0, 0.0], [3.1, 0.0]])
        >>> re_ranking(q, g, k1=1, k2=1, lambda_value=0.3)
        tensor([[0.0011, 0.9810, 1.0000]])
    """
    if metric not in RERANK_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(RERANK_METRICS)}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    for name, x in (("qf", qf), ("gf", gf)):
        if x.dim() != 2 or x.size(0) == 0:
            raise ValueError(f"expected {name} of shape ({name[0].upper()}, D) with at least "
                             f"one row, got {tuple(x.shape)}")
    if qf.size(1) != gf.size(1):
        raise ValueError(f"query and gallery feature widths differ: qf {tuple(qf.shape)} "
                         f"vs gf {tuple(gf.shape)}")
    dtype = torch.float64 if torch.float64 in (qf.dtype, gf.dtype) else torch.float32
    with torch.no_grad():
        feat = torch.cat([qf.detach().to(dtype), gf.detach().to(qf.device, dtype)])  # (N, D)
        return _re_ranking(feat, qf.size(0), k1, k2, lambda_value, metric, block_size)


def _pairwise(feat: Tensor, metric: str, block_size: int) -> Tensor:
    """(N, N) squared Euclidean or cosine distances, each row divided by its maximum.

    The matrix is symmetric: each block of rows is multiplied with the rows from
    its own start on only and mirrored, half the products of a full ``F F^T``.
    """
    n = feat.size(0)
    out = torch.empty(n, n, dtype=feat.dtype, device=feat.device)
    if metric == "cosine":
        feat = F.normalize(feat, dim=1)
    sq = feat.pow(2).sum(dim=1)  # (N,)
    for s in range(0, n, block_size):
        e = min(s + block_size, n)
        if metric == "cosine":
            tile = torch.mm(feat[s:e], feat[s:].t()).neg_().add_(1.0)  # (b, N - s)
        else:
            tile = torch.addmm(sq[None, s:], feat[s:e], feat[s:].t(), alpha=-2.0)
            tile.add_(sq[s:e, None])
        tile.clamp_(min=0)
        out[s:e, s:] = tile
        out[s:, s:e] = tile.t()
    for s in range(0, n, block_size):
        block = out[s : s + block_size]  # (b, N) view
        row_max = block.amax(dim=1, keepdim=True)  # NaN or inf iff a feature is not finite
        if not torch.isfinite(row_max).all():
            raise ValueError("qf or gf contains NaN or infinite values (or distances overflow)")
        block.div_(torch.where(row_max > 0, row_max, torch.ones_like(row_max)))  # 0 rows stay 0
    return out


def _reciprocal(nbr: Tensor) -> Tensor:
    """``out[i, t]``: is ``i`` among the neighbours of its ``t``-th neighbour? (N, k) bool."""
    rows = torch.arange(nbr.size(0), device=nbr.device)
    return (nbr[nbr] == rows[:, None, None]).any(dim=-1)  # nbr[nbr]: (N, k, k)


def _gather_rows(ptr: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of the CSR entries of rows ``src`` (in order) and which ``src`` each is from."""
    count = ptr[src + 1] - ptr[src]
    owner = torch.repeat_interleave(torch.arange(src.numel(), device=src.device), count)
    start = torch.cumsum(count, 0) - count
    pos = ptr[src][owner] + torch.arange(owner.numel(), device=src.device) - start[owner]
    return pos, owner


def _spans(counts: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` spans of ``range(len(counts))``, each summing to at most
    ``budget`` (or one item, if that alone is over it)."""
    total = torch.cumsum(counts, 0).cpu()
    spans, start = [], 0
    while start < total.numel():
        done = int(total[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(total, torch.tensor(done + budget), right=True))
        spans.append((start, max(stop, start + 1)))
        start = spans[-1][1]
    return spans


def _csr_ptr(rows: Tensor, n: int) -> Tensor:
    ptr = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return ptr


def _re_ranking(feat: Tensor, num_q: int, k1: int, k2: int, lambda_value: float, metric: str,
                block_size: int) -> Tensor:
    n, dev = feat.size(0), feat.device
    dist = _pairwise(feat, metric, block_size)  # (N, N) row-normalised
    kf = min(k1 + 1, n)
    kh = min(int(np.around(k1 / 2.0)) + 1, n)  # np.around as the authors: round half to even
    kq = min(k2, n)
    nearest = torch.cat([torch.topk(dist[s : s + block_size], max(kf, kq), dim=1,
                                    largest=False, sorted=True).indices
                         for s in range(0, n, block_size)])  # (N, K)

    # k-reciprocal sets R(i, k1) and R(c, k1/2), and the 2/3 expansion rule
    fwd, half = nearest[:, :kf], nearest[:, :kh]  # (N, kf), (N, kh)
    fwd_ok, half_ok = _reciprocal(fwd), _reciprocal(half)
    recip = torch.where(fwd_ok, fwd, n)  # R(i, k1); n marks "not a member"
    recip_sorted = torch.sort(recip, dim=1).values
    cand, cand_ok = half[fwd], half_ok[fwd]  # (N, kf, kh): R(c, k1/2) of each neighbour c
    at = torch.searchsorted(recip_sorted, cand.flatten(1)).clamp_(max=kf - 1)  # (N, kf * kh)
    shared = (recip_sorted.gather(1, at) == cand.flatten(1)).view_as(cand) & cand_ok
    accept = fwd_ok & (shared.sum(dim=-1).double() > 2.0 / 3 * cand_ok.sum(dim=-1).double())
    cand = torch.where(accept[..., None] & cand_ok, cand, n)
    members = torch.cat([recip, cand.flatten(1)], dim=1)
    members = torch.sort(members, dim=1).values  # (N, kf + kf * kh)
    first = torch.ones_like(members, dtype=torch.bool)
    first[:, 1:] = members[:, 1:] != members[:, :-1]
    rows, slot = torch.nonzero(first & (members < n), as_tuple=True)  # row-major: CSR order
    cols = members[rows, slot]
    weight = torch.exp(-dist[rows, cols])
    vals = weight / torch.zeros(n, dtype=weight.dtype, device=dev).index_add_(0, rows,
                                                                               weight)[rows]

    budget = 2048 * block_size  # entries or pairs gathered at once
    if k2 != 1:  # query expansion: V[i] <- mean of V over the kq nearest rows of i
        ptr = _csr_ptr(rows, n)
        src = nearest[:, :kq]  # (N, kq)
        parts = []
        for s, e in _spans((ptr[src + 1] - ptr[src]).sum(dim=1), budget):
            pos, owner = _gather_rows(ptr, src[s:e].reshape(-1))
            key = (s + torch.div(owner, kq, rounding_mode="floor")) * n + cols[pos]
            key, order = torch.sort(key, stable=True)  # equal keys stay in rank order
            key, inverse = torch.unique_consecutive(key, return_inverse=True)
            total = torch.zeros(key.numel(), dtype=vals.dtype, device=dev)
            parts.append((key, total.index_add_(0, inverse, vals[pos][order]).div_(kq)))
        key, vals = (torch.cat(p) for p in zip(*parts, strict=True))
        rows, cols = torch.div(key, n, rounding_mode="floor"), key % n

    # Jaccard numerators sum_l min(V[q, l], V[g, l]): pair each query entry (q, l) with the
    # gallery entries of column l, through a column-sorted (CSC) copy of the gallery rows
    num_g = n - num_q
    in_gallery = rows >= num_q
    g_rows, g_cols, g_vals = rows[in_gallery] - num_q, cols[in_gallery], vals[in_gallery]
    by_col = torch.sort(g_cols, stable=True).indices  # rows stay sorted within a column
    g_rows, g_vals = g_rows[by_col], g_vals[by_col]
    col_ptr = _csr_ptr(g_cols, n)
    num_entries = int((rows < num_q).sum())  # rows are sorted: the query entries come first
    q_rows, q_cols, q_vals = rows[:num_entries], cols[:num_entries], vals[:num_entries]
    overlap = torch.zeros(num_q * num_g, dtype=dist.dtype, device=dev)
    for start, stop in _spans(col_ptr[q_cols + 1] - col_ptr[q_cols], budget):
        pos, owner = _gather_rows(col_ptr, q_cols[start:stop])
        owner += start
        overlap.index_add_(0, q_rows[owner] * num_g + g_rows[pos],
                           torch.minimum(q_vals[owner], g_vals[pos]))
    # in place: 1 - m / (2 - m) = 2 - 2 / (2 - m)
    jaccard = overlap.view(num_q, num_g).neg_().add_(2.0).reciprocal_().mul_(-2.0).add_(2.0)
    return jaccard.mul_(1.0 - lambda_value).add_(dist[:num_q, num_q:], alpha=lambda_value)
