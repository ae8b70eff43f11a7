r"""Diversity regularisation of part features, CTL eq. (8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["diversity_loss"]


def diversity_loss(parts: Tensor) -> Tensor:
    r"""CTL's diversity loss :math:`\lVert V_p V_p^\top - I \rVert_F^2` (CVPR 2021, eq. 8).

    Each clip's part features :math:`V_p \in \mathbb{R}^{N \times C}` are
    temporally averaged (for a 4-D input) and L2-normalised per part, as the
    paper says, so :math:`V_p V_p^\top` holds the cosine similarities of the
    parts and the loss is the sum of their squares off the diagonal: 0 exactly
    when the parts are orthonormal, positive otherwise. The mean over clips is
    returned (our choice; the paper writes one clip). A part feature of norm 0
    stays 0 after the normalisation (norms are clamped at 1e-12), which costs 1
    on the diagonal. Half-precision features (``--amp``) are promoted to float32.

    Args:
        parts (Tensor): part features :math:`(B, N, C)`, or :math:`(B, T, N, C)`
            to be averaged over the :math:`T` frames first.

    Returns:
        Tensor: a scalar.

    Raises:
        ValueError: input not 3-D or 4-D.

    Examples:
        >>> float(diversity_loss(torch.eye(3).unsqueeze(0)))   # orthonormal parts
        0.0
        >>> float(diversity_loss(torch.ones(1, 2, 4)))          # two equal parts
        2.0
    """
    if parts.dim() == 4:
        parts = parts.mean(dim=1)
    if parts.dim() != 3:
        raise ValueError(f"expected part features of shape (B, N, C) or (B, T, N, C), "
                         f"got {tuple(parts.shape)}")
    parts = parts.to(torch.promote_types(parts.dtype, torch.float32))
    v = F.normalize(parts, dim=-1, eps=1e-12)  # (B, N, C)
    gram = torch.matmul(v, v.transpose(1, 2))  # (B, N, N)
    eye = torch.eye(v.size(1), dtype=v.dtype, device=v.device)
    return (gram - eye).square().sum(dim=(1, 2)).mean()
