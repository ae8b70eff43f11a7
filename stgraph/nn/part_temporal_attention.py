r"""DRSTA's temporal attention: one softmax over the frames for every part.

Li, Bak, Carr and Wang, "Diversity Regularized Spatiotemporal Attention for
Video-based Person Re-identification", CVPR 2018, sec. 3.4 (temporal attention).
https://openaccess.thecvf.com/content_cvpr_2018/html/Li_Diversity_Regularized_Spatiotemporal_CVPR_2018_paper.html
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PartTemporalAttention"]


class PartTemporalAttention(nn.Module):
    r"""Per-part temporal attention (DRSTA, CVPR 2018): weigh each part's frames, sum them.

    For the feature :math:`\mathbf{x}_{n,k} \in \mathbb{R}^C` of part
    :math:`k` in frame :math:`n` of a clip of :math:`N` frames, a linear
    response per part, normalised over the frames:

    .. math::
        e_{n,k} = \mathbf{w}_k^{\top} \mathbf{x}_{n,k}, \qquad
        t_{n,k} = \frac{\exp e_{n,k}}{\sum_{m=1}^{N} \exp e_{m,k}}, \qquad
        \mathbf{x}_k = \sum_{n=1}^{N} t_{n,k}\, \mathbf{x}_{n,k}

    so a frame where part :math:`k` is occluded can get a weight near 0 for
    that part alone. The linear response has no bias: the softmax over
    :math:`n` is invariant to a per-part constant, which would never receive a
    gradient. One weight vector :math:`\mathbf{w}_k` per part (ours: the paper
    writes one linear response per part model and the authors did not release
    this layer), computed for all parts at once by one ``einsum``.
    Initialisation: :math:`\mathcal{U}(-1/\sqrt{C}, 1/\sqrt{C})`, as
    :class:`torch.nn.Linear` (ours).

    Args:
        in_channels (int): part feature channels :math:`C`.
        num_parts (int): parts :math:`K`. (default: :obj:`1`)

    Shapes:
        - **input:** part features :math:`(B, N, K, C)`, frames on dimension 1
        - **output:** ``(pooled, weights)``: clip part features :math:`(B, K, C)`
          and the temporal weights :math:`t` :math:`(B, N, K)`, summing to 1
          over the :math:`N` frames

    Raises:
        ValueError: a non-positive ``in_channels`` / ``num_parts``, or input that
            is not :math:`(B, N, K, C)` with this layer's :math:`K` and :math:`C`.

    Examples:
        >>> layer = PartTemporalAttention(16, num_parts=3)
        >>> pooled, t = layer(torch.randn(2, 8, 3, 16))
        >>> pooled.shape, t.shape
        (torch.Size([2, 3, 16]), torch.Size([2, 8, 3]))
    """

    def __init__(self, in_channels: int, num_parts: int = 1) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_parts", num_parts)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.num_parts = num_parts
        self.weight = nn.Parameter(torch.empty(num_parts, in_channels))  # w_k as rows
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Clip part features and temporal weights; see the class docstring."""
        if x.dim() != 4 or x.shape[-2:] != (self.num_parts, self.in_channels):
            raise ValueError(f"expected part features of shape (B, N, {self.num_parts}, "
                             f"{self.in_channels}) = (B, N, K, C), got {tuple(x.shape)}")
        e = torch.einsum("bnkc,kc->bnk", x, self.weight)  # (B, N, K) linear responses
        t = torch.softmax(e, dim=1)  # (B, N, K): softmax over the frames
        pooled = torch.einsum("bnk,bnkc->bkc", t, x)  # (B, K, C)
        return pooled, t

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, num_parts={self.num_parts})"
