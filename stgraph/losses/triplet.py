"""Batch-hard triplet loss.

Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
Re-Identification", arXiv 2017, eq. (5), https://arxiv.org/abs/1703.07737.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TripletLoss"]


def _euclidean(x: Tensor) -> Tensor:
    """Pairwise Euclidean distances ``(..., B, D) -> (..., B, B)`` with a gradient-safe
    sqrt, for every leading index at once.

    The squared distance :math:`|x_i|^2 + |x_j|^2 - 2 x_i^T x_j` is clamped at
    1e-12 before the square root: identical features (distance 0, or a tiny
    negative from rounding) get distance 1e-6 and a zero gradient through the
    clamp instead of the infinite derivative of sqrt at 0.
    """
    sq = x.pow(2).sum(dim=-1)  # (..., B)
    d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (x @ x.transpose(-1, -2))  # (..., B, B)
    return d2.clamp_min(1e-12).sqrt()


def _batch_hard(dist: Tensor, pids: Tensor, margin: float) -> Tensor:
    """The batch-hard hinge averaged over the valid anchors: distances ``(..., B, B)``
    and pids ``(B,)`` -> ``(...)``; see :class:`TripletLoss`."""
    same = pids.unsqueeze(0) == pids.unsqueeze(1)  # (B, B)
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos = same & ~eye
    neg = ~same
    d_ap = dist.masked_fill(~pos, float("-inf")).amax(dim=-1)  # (..., B) hardest positive
    d_an = dist.masked_fill(~neg, float("inf")).amin(dim=-1)  # (..., B) hardest negative
    valid = pos.any(dim=1) & neg.any(dim=1)  # (B,), the same for every leading index
    # Invalid rows hold -inf / +inf above; `where` zeroes them and their gradient.
    # No host sync: with no valid anchor this is 0 / 1, still attached to the graph.
    hinge = torch.where(valid, (d_ap - d_an + margin).clamp_min(0), 0.0)  # (..., B)
    return hinge.sum(dim=-1) / valid.sum().clamp_min(1)


class TripletLoss(nn.Module):
    r"""Batch-hard triplet loss with a hard margin on Euclidean distances.

    For every anchor :math:`a` in the batch, take its hardest positive (the
    farthest sample with the same identity, the anchor itself excluded) and its
    hardest negative (the nearest sample with another identity):

    .. math::
        \mathcal{L} = \frac{1}{|\mathcal{A}|} \sum_{a \in \mathcal{A}}
        \Big[\max_{p:\, y_p = y_a,\, p \ne a} D_{ap}
        - \min_{n:\, y_n \ne y_a} D_{an} + m\Big]_+

    :math:`\mathcal{A}` is the set of *valid* anchors, those with at least one
    positive and one negative in the batch; other anchors are left out of the
    sum and the mean. A batch without any valid anchor (e.g. one identity only,
    or every identity a singleton) gives a zero that keeps the graph (``grad_fn``
    when the features require grad), so ``loss.backward()`` still works.
    Fully vectorised: a ``(B, B)`` distance matrix and masked max/min.

    Features are promoted to at least float32 for the distances (the
    :math:`|x|^2` expansion cancels badly in half precision, and float16 overflows
    above 65504: mixed precision, ``--amp``, computes the loss in float32).

    With ``distributed=True`` and a process group of more than one process
    (``torchrun``), each process's features are one share of the global batch: they are
    gathered (:func:`stgraph.distributed.gather_batch`) so that mining sees the whole
    global batch, and the loss is the global batch's on every process; only the local
    share carries a gradient, scaled so that DDP's average over the processes is the
    single-process gradient. Without a process group it is the plain loss.

    Args:
        margin (float): margin :math:`m > 0`. (default: :obj:`0.3`)
        distributed (bool): mine over the global batch of all processes.
            (default: :obj:`False`)

    Shapes:
        - **input:** features :math:`(B, D)`, pids :math:`(B,)` integer identities
        - **output:** scalar

    Raises:
        ValueError: ``margin <= 0``, features not 2-D, or pids not ``(B,)``.
    """

    def __init__(self, margin: float = 0.3, distributed: bool = False) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = margin
        self.distributed = distributed

    def _gathered(self, features: Tensor, pids: Tensor) -> tuple[Tensor, Tensor]:
        if not self.distributed:
            return features, pids
        from stgraph.distributed import gather_batch

        return gather_batch(features), gather_batch(pids)

    def forward(self, features: Tensor, pids: Tensor) -> Tensor:
        if features.dim() != 2:
            raise ValueError(f"expected features of shape (B, D), got {tuple(features.shape)}")
        if pids.shape != features.shape[:1]:
            raise ValueError(f"expected pids of shape ({features.size(0)},), "
                             f"got {tuple(pids.shape)}")
        x = features.to(torch.promote_types(features.dtype, torch.float32))
        x, pids = self._gathered(x, pids)
        return _batch_hard(_euclidean(x), pids, self.margin)  # (B, B) distances -> scalar

    def per_part(self, features: Tensor, pids: Tensor) -> Tensor:
        r"""The loss of each of :math:`P` feature sets at once: part features
        :math:`(B, P, D)` -> :math:`(P,)`, entry :math:`p` equal to
        ``self(features[:, p], pids)``.

        One :math:`(P, B, B)` stack of distance matrices and the batch-hard mining
        along its last axis, no loop over the parts (RRU's part triplet in
        :class:`~stgraph.losses.ReIDLoss` is the mean of this).

        Raises:
            ValueError: features not 3-D, or pids not ``(B,)``.
        """
        if features.dim() != 3:
            raise ValueError(f"expected part features of shape (B, P, D), "
                             f"got {tuple(features.shape)}")
        if pids.shape != features.shape[:1]:
            raise ValueError(f"expected pids of shape ({features.size(0)},), "
                             f"got {tuple(pids.shape)}")
        x = features.to(torch.promote_types(features.dtype, torch.float32))
        x, pids = self._gathered(x, pids)
        x = x.transpose(0, 1)
        return _batch_hard(_euclidean(x), pids, self.margin)  # (P, B, B) -> (P,)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(margin={self.margin})"
