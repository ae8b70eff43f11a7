r"""Dense twin of :class:`~stgraph.nn.ContextBlock` (CTL's context block, :math:`A^c`).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.2, eq. (2) and fig. 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stgraph.nn.context_block import _build_parameters, _reset

__all__ = ["DenseContextBlock"]


class DenseContextBlock(torch.nn.Module):
    r"""Context block (CTL, CVPR 2021, fig. 4a) on dense clips, the twin of
    :class:`~stgraph.nn.ContextBlock`.

    .. math::
        s_{t,n} = \mathbf{w}_c^\top \mathbf{x}_{t,n} + b_c, \qquad
        z_n = \sum_t w_{t}\, s_{t,n} + b_t \;\; (\text{or } \tfrac{1}{T}\textstyle\sum_t s_{t,n}),
        \qquad
        A^c = \mathrm{rownorm}_2\big(
        \mathrm{reshape}_{N \times N}(W_n \mathbf{z} + \mathbf{b}_n)\big)

    See :class:`~stgraph.nn.ContextBlock` for the choices (ours) where the
    paper is silent and for the advanced (windowed) block of fig. 4b. Same
    constructor arguments and ``state_dict`` keys as the sparse block, and the
    same numbers.

    Args:
        in_channels (int): node channels :math:`C`.
        num_nodes (int): nodes per frame :math:`N`.
        num_frames (int, optional): :math:`T` for the learned time squeeze;
            :obj:`None` averages over the frames. (default: :obj:`None`)

    Shapes:
        - **input:** node features :math:`(B, T, N, C)`
        - **output:** :math:`A^c` of shape :math:`(B, N, N)`, rows of unit
          L2 norm

    Raises:
        ValueError: input not :math:`(B, T, N, C)`, or :math:`T \neq`
            ``num_frames`` when it is set.

    Examples:
        >>> block = DenseContextBlock(8, num_nodes=5)
        >>> a = block(torch.randn(2, 6, 5, 8))
        >>> a.shape, bool(torch.allclose(a.norm(dim=-1), torch.ones(2, 5)))
        (torch.Size([2, 5, 5]), True)
    """

    def __init__(self, in_channels: int, num_nodes: int, num_frames: int | None = None) -> None:
        super().__init__()
        _build_parameters(self, in_channels, num_nodes, num_frames)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`A^c` of each clip, ``(B, T, N, C) -> (B, N, N)``."""
        N = self.num_nodes
        if x.dim() != 4 or x.size(2) != N or x.size(3) != self.in_channels:
            raise ValueError(
                f"expected node features of shape (B, T, {N}, {self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        B, T = x.shape[:2]
        s = self.lin_feature(x).squeeze(-1)  # (B, T, N) feature squeeze
        if self.lin_time is not None:
            if T != self.num_frames:
                raise ValueError(
                    f"this context block squeezes num_frames={self.num_frames} frames, got clips "
                    f"of {T} frames; build it with num_frames={T} or num_frames=None (average)"
                )
            z = self.lin_time(s.transpose(1, 2)).squeeze(-1)  # (B, N) time squeeze
        else:
            z = s.mean(dim=1)  # (B, N)
        a = self.lin_node(z).view(B, N, N)  # (B, N, N)
        return F.normalize(a, p=2.0, dim=-1)

    def __repr__(self) -> str:
        extra = f", num_frames={self.num_frames}" if self.num_frames is not None else ""
        return f"{self.__class__.__name__}({self.in_channels}, num_nodes={self.num_nodes}{extra})"
