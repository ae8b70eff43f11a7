"""Tracklet features: a model's clip embeddings pooled per tracklet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stgraph.models.base import parameter_dtype, to_model

__all__ = ["extract_features", "parameter_dtype", "to_model"]

_POOLS = ("mean", "max")


@torch.no_grad()
def extract_features(model: nn.Module, loader: Iterable[Mapping[str, Tensor]], num_tracklets: int,
                     device: torch.device | str | None = None, pool: str = "mean",
                     progress: bool = False, inputs: Iterable[str] | None = None) -> Tensor:
    r"""Embed every clip with ``model`` and pool the embeddings of each tracklet.

    .. math::
        f_t = \frac{1}{|C_t|} \sum_{c \in C_t} \mathrm{emb}(c)
        \quad (\texttt{pool="mean"}), \qquad
        f_t = \max_{c \in C_t} \mathrm{emb}(c) \text{ elementwise} \quad (\texttt{pool="max"})

    with :math:`C_t` the clips the loader yields for tracklet :math:`t` (any
    order, any number per batch). Sums (``index_add_``) or maxima
    (``scatter_reduce_``) are accumulated in place, so memory is one batch plus
    the ``(num_tracklets, D)`` result, accumulated in at least float32.
    The model is put in eval mode and its previous mode restored afterwards,
    also when an error interrupts the loop. Gradients are off.

    Args:
        model (nn.Module): maps clips ``(B, T, 3, H, W)`` to a dict whose
            ``"embedding"`` is ``(B, D)``; it must already be on ``device``.
        loader (iterable): yields dicts with ``"clip"`` ``(B, T, 3, H, W)`` float
            and ``"tracklet"`` ``(B,)`` long, the tracklet index in
            ``[0, num_tracklets)`` of each clip.
        num_tracklets (int): number of tracklets (rows of the result).
        device (torch.device or str, optional): where clips are sent and the
            result lives. (default: :obj:`None`, the device of the model's first
            parameter or buffer, CPU for a model without any)
        pool (str): ``"mean"`` or ``"max"``. (default: ``"mean"``)
        progress (bool): show a tqdm progress bar. (default: :obj:`False`)
        inputs (iterable of str, optional): extra batch entries passed to the
            model as keyword arguments when a batch has them, e.g.
            ``("keypoints",)``. (default: the model's ``input_keys``, if any)

    Shapes:
        - **output:** :math:`(\text{num\_tracklets}, D)` on ``device``.

    Raises:
        ValueError: unknown ``pool``, ``num_tracklets < 1``, a batch with a bad
            shape, a tracklet index out of range, or a tracklet that received no
            clip (the message names the first few such indices and their count).
        TypeError: the model's output is not a mapping with ``"embedding"``.
    """
    if pool not in _POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of: {', '.join(_POOLS)}")
    if num_tracklets < 1:
        raise ValueError(f"num_tracklets must be >= 1, got {num_tracklets}")
    if device is None:
        tensor = next(model.parameters(), None)
        tensor = tensor if tensor is not None else next(model.buffers(), None)
        device = tensor.device if tensor is not None else torch.device("cpu")
    device = torch.device(device)
    inputs = tuple(getattr(model, "input_keys", ()) if inputs is None else inputs)

    was_training = model.training
    model.eval()
    feats: Tensor | None = None  # (num_tracklets, D), allocated at the first batch
    counts = torch.zeros(num_tracklets, dtype=torch.long, device=device)
    try:
        for batch in tqdm(loader, desc="features", unit="batch", disable=not progress):
            clip = to_model(batch["clip"], model, device)
            tid = batch["tracklet"].to(device, non_blocking=True).long()
            if clip.dim() != 5 or tid.shape != clip.shape[:1]:
                raise ValueError(f"expected clip (B, T, 3, H, W) and tracklet (B,), got "
                                 f"{tuple(clip.shape)} and {tuple(tid.shape)}")
            if tid.numel() and (int(tid.min()) < 0 or int(tid.max()) >= num_tracklets):
                bad = tid[(tid < 0) | (tid >= num_tracklets)][0].item()
                raise ValueError(f"tracklet index {bad} out of range for "
                                 f"num_tracklets={num_tracklets}")
            extra = {k: to_model(batch[k], model, device) for k in inputs if k in batch}
            out = model(clip, **extra)
            if not isinstance(out, Mapping) or "embedding" not in out:
                raise TypeError(f"model output must be a dict with an 'embedding' entry, "
                                f"got {type(out).__name__}")
            emb = out["embedding"]  # (B, D)
            if emb.dim() != 2 or emb.size(0) != clip.size(0):
                raise ValueError(f"expected embedding of shape ({clip.size(0)}, D), "
                                 f"got {tuple(emb.shape)}")
            if feats is None:
                dtype = torch.promote_types(emb.dtype, torch.float32)
                fill = 0.0 if pool == "mean" else float("-inf")
                feats = torch.full((num_tracklets, emb.size(1)), fill, dtype=dtype, device=device)
            emb = emb.to(feats.dtype)
            if pool == "mean":
                feats.index_add_(0, tid, emb)
            else:
                feats.scatter_reduce_(0, tid.unsqueeze(1).expand_as(emb), emb, reduce="amax")
            counts.index_add_(0, tid, torch.ones_like(tid))
    finally:
        model.train(was_training)

    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise ValueError(f"{len(empty)} of {num_tracklets} tracklets received no clip: "
                         f"indices [{shown}]")
    assert feats is not None
    if pool == "mean":
        feats /= counts.unsqueeze(1).to(feats.dtype)
    return feats
