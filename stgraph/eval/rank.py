"""CMC and mAP for retrieval under the standard re-ID protocol, vectorised."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["evaluate_rank"]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def evaluate_rank(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                  max_rank: int = 50, chunk_size: int = 256) -> dict[str, Any]:
    r"""CMC curve and mAP of a query-gallery distance matrix (torchreid's market1501 protocol).

    For each query the gallery is sorted by increasing distance with a stable
    sort, so **ties keep gallery order** (torchreid's default quicksort breaks
    ties arbitrarily). Gallery items with the query's identity *and* camera are
    removed (same-camera matches are trivial); the remaining ones keep their
    order, ranks :math:`r = 1, 2, \dots`. A query left without any match is
    skipped. Over the :math:`V` valid queries,

    .. math::
        \mathrm{CMC}[k] = \frac{1}{V} \sum_q [\,r^{first}_q \le k + 1\,], \qquad
        \mathrm{AP}_q = \frac{1}{|M_q|} \sum_{r \in M_q}
        \frac{|\{r' \in M_q : r' \le r\}|}{r}

    with :math:`M_q` the ranks of the query's matches (non-interpolated AP,
    as torchreid's ``eval_market1501`` and Zheng et al., "Scalable Person
    Re-identification: A Benchmark", ICCV 2015). mAP is the mean AP.

    CMC is defined for every rank: when the gallery has fewer than
    ``max_rank`` items the curve is padded with its last value (1.0, every
    valid query has found its match by then) rather than shortened as
    torchreid does, so ``cmc[19]`` is always rank-20.

    Vectorised: per block of ``chunk_size`` queries one
    ``np.argsort(kind="stable")``, then masks and cumulative sums over the
    whole block; the block size only bounds memory (about
    ``40 * chunk_size * G`` bytes), it does not change the result.

    Args:
        distmat (np.ndarray or Tensor): distances, smaller is more similar.
        q_pids, g_pids: identities of the queries and gallery items.
        q_camids, g_camids: cameras of the queries and gallery items.
        max_rank (int): length of the CMC curve. (default: :obj:`50`)
        chunk_size (int): queries per block. (default: :obj:`256`)

    Shapes:
        - **input:** ``distmat`` :math:`(Q, G)`, ``q_pids``, ``q_camids`` :math:`(Q,)`,
          ``g_pids``, ``g_camids`` :math:`(G,)`
        - **output:** dict with ``"cmc"`` float ``np.ndarray (max_rank,)`` of
          fractions in [0, 1]; ``"mAP"`` float fraction; ``"num_valid_queries"``
          int :math:`V`; ``"all_AP"`` ``np.ndarray (V,)``, the APs of the valid
          queries in query order.

    Raises:
        ValueError: shapes inconsistent (the message names them), NaN distances,
            ``max_rank < 1`` or ``chunk_size < 1``, or no query has a match left
            in the gallery.

    Examples:
        >>> out = evaluate_rank(np.array([[0.1, 0.2, 0.3]]), [1], [1, 2, 1], [0], [1, 1, 1],
        ...                     max_rank=3)
        >>> out["cmc"].tolist(), round(out["mAP"], 4)
        ([1.0, 1.0, 1.0], 0.8333)
    """
    distmat = _to_numpy(distmat)
    q_pids, g_pids = _to_numpy(q_pids), _to_numpy(g_pids)
    q_camids, g_camids = _to_numpy(q_camids), _to_numpy(g_camids)
    if distmat.ndim != 2:
        raise ValueError(f"expected distmat of shape (Q, G), got {distmat.shape}")
    num_q, num_g = distmat.shape
    for name, arr, n in (("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                         ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)):
        if arr.shape != (n,):
            raise ValueError(f"distmat has shape {distmat.shape}, so {name} must have shape "
                             f"({n},); got {arr.shape}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if np.issubdtype(distmat.dtype, np.floating) and np.isnan(distmat).any():
        raise ValueError("distmat contains NaN")

    first_rank = np.zeros(num_q, dtype=np.int64)  # rank of the first match, 1-based
    ap = np.zeros(num_q, dtype=np.float64)
    valid = np.zeros(num_q, dtype=bool)
    for s in range(0, num_q if num_g > 0 else 0, chunk_size):
        e = min(s + chunk_size, num_q)
        order = np.argsort(distmat[s:e], axis=1, kind="stable")  # (c, G)
        match = g_pids[order] == q_pids[s:e, None]  # (c, G) in ranked order
        junk = match & (g_camids[order] == q_camids[s:e, None])  # same id, same camera
        keep = ~junk
        hit = match & keep
        rank = np.cumsum(keep, axis=1, dtype=np.int64)  # rank among kept items, at kept slots
        hits = np.cumsum(hit, axis=1, dtype=np.int64)  # matches so far
        num_rel = hits[:, -1]  # (c,)
        ok = num_rel > 0
        rows = np.arange(e - s)
        first_rank[s:e] = rank[rows, hit.argmax(axis=1)]
        precision = np.divide(hits, rank, out=np.zeros(hits.shape), where=hit)  # at each hit
        ap[s:e] = precision.sum(axis=1) / np.maximum(num_rel, 1)
        valid[s:e] = ok

    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(f"no query has a match in the gallery once same-identity, "
                         f"same-camera items are removed ({num_q} queries, {num_g} gallery items)")
    ranks = np.arange(1, max_rank + 1)
    cmc = (first_rank[valid, None] <= ranks[None, :]).mean(axis=0)  # (max_rank,)
    all_ap = ap[valid]
    return {
        "cmc": cmc,
        "mAP": float(all_ap.mean()),
        "num_valid_queries": num_valid,
        "all_AP": all_ap,
    }
