"""Training and evaluation loops shared by the CLI and the examples."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stgraph.data import PKSampler, TestClipDataset, TrainClipDataset, VideoReIDDataset
from stgraph.eval import compute_distance_matrix, evaluate_rank, extract_features, re_ranking

__all__ = [
    "build_optimizer",
    "evaluate",
    "make_train_loader",
    "model_inputs",
    "rank_features",
    "takes_keypoints",
    "train_one_epoch",
    "warmup_cosine",
]


def takes_keypoints(model: nn.Module) -> bool:
    """Whether ``model`` takes per-frame keypoints (its ``input_keys`` name them), e.g. CTL."""
    return "keypoints" in getattr(model, "input_keys", ())


def model_inputs(model: nn.Module, batch: dict, device: str | torch.device) -> dict:
    """The extra batch entries ``model`` takes (``model.input_keys``), moved to ``device``."""
    return {k: batch[k].to(device, non_blocking=True)
            for k in getattr(model, "input_keys", ()) if k in batch}


def make_train_loader(dataset: VideoReIDDataset, seq_len: int, height: int, width: int,
                      batch_ids: int, batch_instances: int, seed: int = 0,
                      workers: int = 0, keypoints: bool = False, flip: bool = True,
                      pad: int | None = None, erasing: float = 0.5) -> DataLoader:
    """A PK-sampled loader of restricted-random training clips.

    Each batch holds ``batch_ids`` identities x ``batch_instances`` tracklets;
    items are dicts ``clip (B,T,3,H,W)``, ``pid (B,)``, ``camid (B,)``, and
    with ``keypoints`` also ``keypoints (B,T,17,3)`` (pass
    ``keypoints=takes_keypoints(model)`` for a model that takes them).
    Clips get the Bag-of-Tricks augmentations, one draw per clip (see
    :class:`~stgraph.data.TrainClipDataset`): horizontal flip with p 0.5
    (``flip``), zero padding by ``pad`` pixels + random crop back to
    ``(height, width)`` (``pad=0`` turns it off; :obj:`None`, the default, is the
    recipe's 10 px at a width of 128 px scaled to ``width``: 10 at 256 x 128, 2 at
    64 x 32), random erasing with
    probability ``erasing`` (``0`` turns it off); the defaults are the recipe's.
    Call ``loader.dataset.set_epoch(e)`` and ``loader.sampler.set_epoch(e)``
    (or :func:`train_one_epoch`, which does) before each epoch.

    Raises:
        ValueError: ``pad`` < 0 or ``erasing`` outside [0, 1] (and the errors of
            :class:`~stgraph.data.TrainClipDataset` and :class:`~stgraph.data.PKSampler`).
    """
    if pad is None:
        pad = round(10 * width / 128)
    clips = TrainClipDataset(dataset, seq_len, height, width, seed=seed, keypoints=keypoints,
                             flip=flip, pad=pad, erasing=erasing)
    pids = [t.pid for t in dataset.train]
    sampler = PKSampler(pids, batch_ids, batch_instances, seed=seed)
    # persistent_workers must stay False: workers copy the dataset when they start, so a
    # persistent worker would never see set_epoch() and would resample epoch 0 forever.
    return DataLoader(clips, batch_size=batch_ids * batch_instances, sampler=sampler,
                      num_workers=workers, drop_last=True)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 5e-4,
                    backbone_lr_mult: float = 1.0) -> torch.optim.Adam:
    """Adam over the trainable parameters (Adam, lr 3.5e-4, wd 5e-4 is the field's default).

    Two parameter groups: the parameters of ``model.backbone`` (when the model
    has that attribute) at ``lr * backbone_lr_mult``, and every other parameter
    at ``lr``, both with ``weight_decay``; fine-tuning a pretrained backbone
    usually takes a lower rate than the new layers (e.g. ``backbone_lr_mult=0.1``).
    Only parameters with ``requires_grad`` are included, and an empty group is
    left out. With ``backbone_lr_mult=0`` the backbone group is left out (the
    backbone is not updated, and weight decay does not touch it), but its
    ``requires_grad`` flags are not changed: set them to ``False`` as well to save
    the backward pass through it. A scheduler such as :func:`warmup_cosine`
    scales every group's own lr.

    Raises:
        ValueError: ``backbone_lr_mult`` < 0, or no trainable parameter at all.
    """
    if not backbone_lr_mult >= 0:
        raise ValueError(f"build_optimizer: backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    backbone = getattr(model, "backbone", None)
    in_backbone = ({id(p) for p in backbone.parameters()}
                   if isinstance(backbone, nn.Module) else set())
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in in_backbone],
         "lr": lr * backbone_lr_mult},
        {"params": [p for p in trainable if id(p) not in in_backbone], "lr": lr},
    ]
    if backbone_lr_mult == 0:
        groups = groups[1:]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameter "
                         "(all have requires_grad=False, or only the backbone with "
                         "backbone_lr_mult=0)")
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 1 % to the base lr over ``warmup_steps``, then cosine decay to 0
    at ``total_steps`` (our choice for short runs; the papers use step decay over 240 epochs)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int,
                    device: str | torch.device = "cpu",
                    scheduler=None, progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns the epoch means of ``loss``, ``ce``, ``triplet``, ``acc``.

    Raises:
        FloatingPointError: the loss became NaN or infinite (the step is not applied).
    """
    model.train()
    for obj in (loader.dataset, loader.sampler):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
    sums: dict[str, float] = {}
    n = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not progress, leave=False)
    for batch in bar:
        clips = batch["clip"].to(device, non_blocking=True)
        pids = batch["pid"].to(device, non_blocking=True)
        outputs = model(clips, **model_inputs(model, batch, device))
        loss, parts = criterion(outputs, pids)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        parts["loss"] = loss.item()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        bar.set_postfix(loss=f"{parts['loss']:.3f}", acc=f"{parts['acc']:.2f}")
    if n == 0:
        raise ValueError(
            "the training loader yielded no batch: fewer tracklets than one P x K batch")
    return {k: v / n for k, v in sums.items()}


def _features(model, dataset, tracklets, seq_len, height, width, batch_size, device, pool,
              workers, progress, desc):
    clips = TestClipDataset(dataset, tracklets, seq_len, height, width,
                            keypoints=takes_keypoints(model))
    loader = DataLoader(clips, batch_size=batch_size, shuffle=False, num_workers=workers)
    if progress:
        print(f"extracting {desc} features: {len(tracklets)} tracklets, {len(clips)} clips")
    return extract_features(model, loader, clips.num_tracklets, device=device, pool=pool,
                            progress=progress)


def evaluate(model: nn.Module, dataset: VideoReIDDataset, seq_len: int, height: int, width: int,
             batch_size: int = 32, device: str | torch.device = "cpu", metric: str = "euclidean",
             pool: str = "mean", workers: int = 0, progress: bool = True,
             ranks: Iterable[int] = (1, 5, 10, 20), protocol: str = "torchreid",
             rerank: bool = False, return_distances: bool = False):
    """Query/gallery evaluation of a model on ``dataset``: CMC and mAP.

    Every frame of every test tracklet is used, in consecutive ``seq_len``-frame
    clips; clip embeddings are pooled per tracklet (``pool``); memory is bounded
    by one batch of clips; a model that takes keypoints (:func:`takes_keypoints`)
    gets each clip's keypoints. Distances by ``metric``, k-reciprocal re-ranked
    (:func:`stgraph.eval.re_ranking`, k1 = 20, k2 = 6, lambda = 0.3) with
    ``rerank``; CMC and mAP under ``protocol`` (:func:`stgraph.eval.evaluate_rank`:
    ``"torchreid"`` or ``"mars-official"``; the gallery is whatever
    ``dataset.gallery`` holds, e.g. ``MARS(..., protocol="mars-official")``).

    Returns:
        dict with ``rank1``, ``rank5``, ``rank10``, ``rank20`` and ``mAP`` (fractions in
        [0, 1]), ``cmc`` (list, first 50 ranks), ``num_query``, ``num_gallery``,
        ``num_valid_queries``, ``protocol``, ``rerank``; with ``return_distances``
        the tuple ``(metrics, distmat)``, ``distmat`` the ``(Q, G)`` tensor ranked.
    """
    args = (seq_len, height, width, batch_size, device, pool, workers, progress)
    qf = _features(model, dataset, dataset.query, *args, desc="query")
    gf = _features(model, dataset, dataset.gallery, *args, desc="gallery")
    return rank_features(qf, gf, dataset.query, dataset.gallery, metric=metric, ranks=ranks,
                         protocol=protocol, rerank=rerank, return_distances=return_distances)


def rank_features(qf, gf, query, gallery, metric: str = "euclidean",
                  ranks: Iterable[int] = (1, 5, 10, 20), protocol: str = "torchreid",
                  rerank: bool = False, return_distances: bool = False):
    """CMC and mAP of query features ``qf (Q, D)`` against gallery features ``gf (G, D)``.

    ``query`` and ``gallery`` are the tracklets (anything with ``pid`` and ``camid``) in
    the rows' order; the other arguments and the result are those of :func:`evaluate`.
    """
    if rerank:
        distmat = re_ranking(qf, gf, metric=metric)
    else:
        distmat = compute_distance_matrix(qf, gf, metric=metric)
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
    )
    return (metrics, distmat) if return_distances else metrics
