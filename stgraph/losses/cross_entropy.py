"""Cross-entropy with label smoothing.

Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016, sec. 7, https://arxiv.org/abs/1512.00567.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CrossEntropyLabelSmooth"]


class CrossEntropyLabelSmooth(nn.Module):
    r"""Cross-entropy against label-smoothed one-hot targets, averaged over the batch.

    .. math::
        q_c = (1 - \epsilon)\,[c = y] + \frac{\epsilon}{K}, \qquad
        \mathcal{L} = \frac{1}{B} \sum_{b=1}^{B} \sum_{c=1}^{K} -q_{b,c}
        \log \operatorname{softmax}(z_b)_c

    with :math:`K` = ``num_classes``. ``epsilon=0`` is the plain cross-entropy;
    the value equals ``F.cross_entropy(logits, targets, label_smoothing=epsilon)``.

    Args:
        num_classes (int): number of classes :math:`K`.
        epsilon (float): smoothing weight, ``0 <= epsilon < 1``. (default: :obj:`0.1`)

    Shapes:
        - **input:** logits :math:`(B, K)` float, targets :math:`(B,)` long in ``[0, K)``
        - **output:** scalar

    Half-precision logits (mixed precision, ``--amp``) are promoted to float32: the loss
    is computed in float32.

    Raises:
        ValueError: bad constructor arguments, logits not ``(B, num_classes)``,
            targets not ``(B,)`` integers, or a target outside ``[0, num_classes)``
            (the message names it). The range check reads two numbers back
            from the device (one synchronisation per call).
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.dim() != 2 or logits.size(1) != self.num_classes:
            raise ValueError(f"expected logits of shape (B, {self.num_classes}), "
                             f"got {tuple(logits.shape)}")
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"expected targets of shape ({logits.size(0)},), "
                             f"got {tuple(targets.shape)}")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
        if targets.numel() > 0:
            lo, hi = targets.min().item(), targets.max().item()
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(f"target {bad} out of range for num_classes={self.num_classes} "
                                 f"(expected 0 <= target < {self.num_classes})")
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        log_probs = F.log_softmax(logits, dim=1)  # (B, K)
        nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)  # (B,)
        uniform = -log_probs.mean(dim=1)  # (B,) = sum_c -(1/K) log p_c
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_classes={self.num_classes}, "
                f"epsilon={self.epsilon})")
