"""Query/gallery evaluation of a model: tracklet features, distances, CMC and mAP.

:func:`evaluate` embeds a dataset's query and gallery tracklets with a model (every frame,
in consecutive clips, pooled per tracklet; sharded over the processes under ``torchrun``)
and ranks them; :func:`rank_features` ranks features already computed,
:func:`rank_distances` a distance matrix. :func:`evaluate_with_distances` also returns the
distances ranked (e.g. to plot a query's ranking).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from stgraph.data import TestClipDataset, VideoReIDDataset
from stgraph.eval.distance import compute_distance_matrix
from stgraph.eval.features import extract_features
from stgraph.eval.rank import evaluate_rank
from stgraph.eval.rerank import re_ranking
from stgraph.models.base import takes_keypoints

__all__ = ["evaluate", "evaluate_with_distances", "feature_distances", "format_table",
           "rank_distances", "rank_features"]


def _features(model, dataset, tracklets, seq_len, height, width, batch_size, device, pool,
              workers, progress, desc, last_clip="overlap"):
    from stgraph import distributed

    n, shards = len(tracklets), distributed.world_size()
    if distributed.is_distributed() and n >= shards:
        # every process embeds the tracklets r, r + N, r + 2N, ...; the rows are gathered
        # and put back in order (each process ends up with every tracklet's feature)
        r = distributed.rank()
        feats = _local_features(model, dataset, tracklets[r::shards], seq_len, height, width,
                                batch_size, device, pool, workers, progress and r == 0,
                                desc, last_clip)
        rows = distributed.all_gather_rows(feats)
        order = torch.cat([torch.arange(k, n, shards) for k in range(shards)])
        out = torch.empty_like(rows)
        out[order.to(rows.device)] = rows
        return out
    return _local_features(model, dataset, tracklets, seq_len, height, width, batch_size, device,
                           pool, workers, progress, desc, last_clip)


def _local_features(model, dataset, tracklets, seq_len, height, width, batch_size, device, pool,
                    workers, progress, desc, last_clip="overlap"):
    clips = TestClipDataset(dataset, tracklets, seq_len, height, width,
                            keypoints=takes_keypoints(model), last_clip=last_clip)
    loader = DataLoader(clips, batch_size=batch_size, shuffle=False, num_workers=workers)
    if progress:
        print(f"extracting {desc} features: {len(tracklets)} tracklets, {len(clips)} clips")
    return extract_features(model, loader, clips.num_tracklets, device=device, pool=pool,
                            progress=progress)


def evaluate(model: nn.Module, dataset: VideoReIDDataset, seq_len: int, height: int, width: int,
             batch_size: int = 32, device: str | torch.device = "cpu", metric: str = "cosine",
             pool: str = "mean", workers: int = 0, progress: bool = True,
             ranks: Iterable[int] = (1, 5, 10, 20), protocol: str = "torchreid",
             rerank: bool = False, last_clip: str = "overlap") -> dict:
    """Query/gallery evaluation of a model on ``dataset``: CMC and mAP.

    Every frame of every test tracklet is used, in consecutive ``seq_len``-frame clips, the
    last one the tracklet's last ``seq_len`` frames (``last_clip="overlap"``) or padded by
    repeating its last frame (``"pad"``, torchreid's dense sampling; see
    :func:`~stgraph.data.sampling.test_clip_indices`); clip embeddings are pooled per
    tracklet (``pool``); memory is bounded by one batch of clips; a model that takes
    keypoints (:func:`takes_keypoints`) gets each clip's keypoints. Distances by ``metric``,
    k-reciprocal re-ranked (:func:`stgraph.eval.re_ranking`, k1 = 20, k2 = 6, lambda = 0.3)
    with ``rerank``; CMC and mAP under ``protocol`` (:func:`stgraph.eval.evaluate_rank`:
    ``"torchreid"`` or ``"mars-official"``; the gallery is whatever ``dataset.gallery``
    holds, e.g. ``MARS(..., protocol="mars-official")``).

    In multi-process training (a process group of N > 1 processes, ``torchrun``) every
    process calls it: each embeds every N-th tracklet, the features are gathered and
    every process returns the same metrics. Run it inside ``torch.autocast`` for mixed
    precision: the features are accumulated and ranked in float32.

    Returns:
        dict with ``rank1``, ``rank5``, ``rank10``, ``rank20`` and ``mAP`` (fractions in
        [0, 1]), ``cmc`` (list, first 50 ranks), ``num_query``, ``num_gallery``,
        ``num_valid_queries``, ``protocol``, ``rerank``, ``metric``, ``last_clip``
        (:func:`evaluate_with_distances` also returns the distance matrix).
    """
    return evaluate_with_distances(model, dataset, seq_len, height, width,
                                   batch_size=batch_size, device=device, metric=metric,
                                   pool=pool, workers=workers, progress=progress, ranks=ranks,
                                   protocol=protocol, rerank=rerank, last_clip=last_clip)[0]


def evaluate_with_distances(model: nn.Module, dataset: VideoReIDDataset, seq_len: int,
                            height: int, width: int, batch_size: int = 32,
                            device: str | torch.device = "cpu", metric: str = "cosine",
                            pool: str = "mean", workers: int = 0, progress: bool = True,
                            ranks: Iterable[int] = (1, 5, 10, 20), protocol: str = "torchreid",
                            rerank: bool = False,
                            last_clip: str = "overlap") -> tuple[dict, torch.Tensor]:
    """:func:`evaluate`, and the distance matrix it ranked.

    Returns:
        ``(metrics, distmat)``: the metrics of :func:`evaluate` and the ``(Q, G)`` distances
        (re-ranked with ``rerank``), query and gallery in the dataset's order.
    """
    args = (seq_len, height, width, batch_size, device, pool, workers, progress)
    qf = _features(model, dataset, dataset.query, *args, desc="query", last_clip=last_clip)
    gf = _features(model, dataset, dataset.gallery, *args, desc="gallery", last_clip=last_clip)
    distmat = feature_distances(qf, gf, metric=metric, rerank=rerank)
    metrics = rank_distances(distmat, dataset.query, dataset.gallery, metric=metric,
                             ranks=ranks, protocol=protocol, rerank=rerank)
    return {**metrics, "last_clip": last_clip}, distmat


def feature_distances(qf: torch.Tensor, gf: torch.Tensor, metric: str = "cosine",
                      rerank: bool = False) -> torch.Tensor:
    """The ``(Q, G)`` distances between query features ``qf (Q, D)`` and gallery features
    ``gf (G, D)`` by ``metric`` (:func:`~stgraph.eval.compute_distance_matrix`), k-reciprocal
    re-ranked with ``rerank`` (:func:`~stgraph.eval.re_ranking`)."""
    if rerank:
        return re_ranking(qf, gf, metric=metric)
    return compute_distance_matrix(qf, gf, metric=metric)


def rank_distances(distmat: torch.Tensor, query, gallery, metric: str = "cosine",
                   ranks: Iterable[int] = (1, 5, 10, 20), protocol: str = "torchreid",
                   rerank: bool = False) -> dict:
    """CMC and mAP of a ``(Q, G)`` distance matrix: the metrics of :func:`evaluate`.

    ``query`` and ``gallery`` are the tracklets (anything with ``pid`` and ``camid``) in
    the rows' and columns' order; ``metric`` and ``rerank`` say how ``distmat`` was made
    (they are recorded in the result).
    """
    q_pids = [t.pid for t in query]
    g_pids = [t.pid for t in gallery]
    q_cams = [t.camid for t in query]
    g_cams = [t.camid for t in gallery]
    result = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50,
                           protocol=protocol)
    cmc = result["cmc"]
    metrics = {f"rank{r}": float(cmc[min(r, len(cmc)) - 1]) for r in ranks}
    metrics.update(
        mAP=float(result["mAP"]),
        cmc=[float(v) for v in cmc],
        num_query=len(query),
        num_gallery=len(gallery),
        num_valid_queries=int(result["num_valid_queries"]),
        protocol=protocol,
        rerank=bool(rerank),
        metric=metric,
    )
    return metrics


def rank_features(qf: torch.Tensor, gf: torch.Tensor, query, gallery, metric: str = "cosine",
                  ranks: Iterable[int] = (1, 5, 10, 20), protocol: str = "torchreid",
                  rerank: bool = False) -> dict:
    """CMC and mAP of query features ``qf (Q, D)`` against gallery features ``gf (G, D)``:
    :func:`rank_distances` of :func:`feature_distances`.

    ``query`` and ``gallery`` are the tracklets (anything with ``pid`` and ``camid``) in
    the rows' order; the other arguments and the result are those of :func:`evaluate`.
    """
    return rank_distances(feature_distances(qf, gf, metric=metric, rerank=rerank), query,
                          gallery, metric=metric, ranks=ranks, protocol=protocol,
                          rerank=rerank)


def format_table(metrics: dict) -> str:
    """Rank-1/5/10/20 and mAP in percent, as a small text table (the lines ``stgraph
    train`` and ``stgraph evaluate`` print)."""
    cols = ["rank1", "rank5", "rank10", "rank20", "mAP"]
    head = " | ".join(f"{c:>7}" for c in cols)
    row = " | ".join(f"{100 * metrics[c]:6.2f}%" for c in cols)
    rule = "-" * len(head)
    info = f"{metrics['num_query']} queries vs {metrics['num_gallery']} gallery tracklets"
    if "protocol" in metrics:
        info += f", {metrics['protocol']} protocol" + (", re-ranked" if metrics.get("rerank")
                                                       else "")
    return f"{info}\n{head}\n{rule}\n{row}"
