r"""STIM: spatial-temporal clues integration module, a small 3D-convolution head.

Liu, Ma, Yang, Yi, Hu, Zhang and Luo, "Spatial and Temporal Mutual Promotion for
Video-based Person Re-identification", AAAI 2019, sec. 3.3.
https://arxiv.org/abs/1812.10305 (official code: github.com/yolomax/person-reid-lib,
``tasks/task_video/architecture.py``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stgraph.nn._checks import check_clip_maps

__all__ = ["STIM"]


class STIM(nn.Module):
    r"""Two 3D convolutions over (time, height, width), then the mean over all three.

    .. math::
        H = \mathrm{ReLU}\big(\mathrm{BN}(\mathrm{Conv}_{1 \times 1 \times 1}(S))\big),
        \qquad
        f = \frac{1}{T h w} \sum_{t, i, j}
        \mathrm{ReLU}\big(\mathrm{BN}(\mathrm{Conv}_{3 \times 3 \times 3}(H))\big)_{:, t, i, j}

    with :math:`S` the clip's maps as a :math:`C \times T \times h \times w` volume,
    the first convolution :math:`C \to` ``hidden_channels``, the second
    ``hidden_channels`` :math:`\to` ``out_channels`` with zero padding 1 (so any
    :math:`T, h, w \ge 1` work), both without bias and each followed by a
    :class:`~torch.nn.BatchNorm3d` (PyTorch's defaults) and a ReLU, as in the
    official code (256 and 256 channels). The official code averages over time, then
    applies an 8x8 average pool to its 8x8 maps, i.e. the mean over space; ours is the
    mean over :math:`(T, h, w)` on any size.

    Args:
        in_channels (int): channels :math:`C` of the maps.
        out_channels (int): width of the clip feature :math:`f`. (default: :obj:`256`)
        hidden_channels (int): channels between the two convolutions.
            (default: :obj:`256`)

    Shapes:
        - **input:** maps :math:`(B, T, C, h, w)`
        - **output:** :math:`(B, \text{out\_channels})`

    Raises:
        ValueError: non-positive sizes; maps that are not 5-D or have other than
            ``in_channels`` channels.

    Examples:
        >>> import torch
        >>> stim = STIM(16, out_channels=8, hidden_channels=4)
        >>> stim(torch.randn(2, 3, 16, 4, 2)).shape
        torch.Size([2, 8])
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 hidden_channels: int = 256) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("hidden_channels", hidden_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.conv1 = nn.Conv3d(in_channels, hidden_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(hidden_channels)
        self.conv2 = nn.Conv3d(hidden_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.conv1, self.bn1, self.conv2, self.bn2):
            module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_clip_maps(x, self.in_channels)
        v = x.transpose(1, 2)  # (B, C, T, h, w): Conv3d's layout
        v = F.relu(self.bn1(self.conv1(v)))
        v = F.relu(self.bn2(self.conv2(v)))  # (B, out, T, h, w)
        return v.mean(dim=(2, 3, 4))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"hidden_channels={self.hidden_channels})")
