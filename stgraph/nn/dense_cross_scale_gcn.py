r"""Dense twin of :class:`~stgraph.nn.CrossScaleGCN`, CTL's cross-scale graph convolution.

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.4, eq. (5)-(6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Sequential

from stgraph.nn.cross_scale_gcn import _check_dense, _init_modules, _reset

__all__ = ["DenseCrossScaleGCN"]


class DenseCrossScaleGCN(torch.nn.Module):
    r"""Cross-scale graph convolutional layer of CTL (CVPR 2021, eq. 5-6) with batched
    dense ops, the twin of :class:`~stgraph.nn.CrossScaleGCN`.

    .. math::
        \mathbf{r}_i = f\Big(\Big[\mathbf{x}_i, \sum_j h\big([\phi(\mathbf{x}_i),
        \varphi(\mathbf{x}_j - \mathbf{x}_i)]\big)\Big]\Big), \qquad
        A_{f,c} = \mathrm{softmax}_i(\mathbf{r}_m^\top \mathbf{r}_i / \sqrt{d}), \qquad
        X'_c = \mathrm{ReLU}(A_{f,c} X_f W + b)

    per frame, for all clips and frames at once. The linear parts of
    :math:`\varphi` and :math:`h` are applied per node where linearity allows
    (:math:`W(\mathbf{x}_j - \mathbf{x}_i) = W\mathbf{x}_j - W\mathbf{x}_i`), so
    only :math:`(B, T, N, N, d)` pair tensors are made, never
    :math:`(B, T, N, N, C)`. The choices where the paper is silent are
    documented in :class:`~stgraph.nn.CrossScaleGCN`. Same constructor
    arguments and ``state_dict`` keys as the sparse layer, same numbers.

    Args:
        in_channels (int): node channels :math:`C` of both scales.
        out_channels (int): output channels :math:`C'`.
        embed_channels (int, optional): width :math:`d` of the embeddings;
            :obj:`None` means ``max(1, in_channels // 8)``. (default: :obj:`None`)
        bias (bool, optional): learn the bias :math:`b`. (default: :obj:`True`)
        scale_attention (bool, optional): divide :math:`\mathbf{r}_m^\top
            \mathbf{r}_i` by :math:`\sqrt{d}` before the softmax of eq. (5)
            (ours: the unscaled product is near one-hot at initialisation for
            large :math:`d`); :obj:`False` is the paper's unscaled product.
            (default: :obj:`True`)

    Shapes:
        - **input:** fine :math:`(B, T, N_f, C)`, coarse :math:`(B, T, N_c, C)`
        - **output:** :math:`(B, T, N_c, C')`; with ``return_attention=True`` also
          :math:`A_{f,c}` of shape :math:`(B, T, N_c, N_f)`, rows summing to 1

    Raises:
        ValueError: inputs not 4-D, or clips / frames / channels that differ.

    Examples:
        >>> layer = DenseCrossScaleGCN(16, 16)
        >>> out, att = layer(torch.randn(2, 3, 17, 16), torch.randn(2, 3, 5, 16),
        ...                  return_attention=True)
        >>> out.shape, att.shape
        (torch.Size([2, 3, 5, 16]), torch.Size([2, 3, 5, 17]))
    """

    def __init__(self, in_channels: int, out_channels: int, embed_channels: int | None = None,
                 bias: bool = True, scale_attention: bool = True) -> None:
        super().__init__()
        _init_modules(self, in_channels, out_channels, embed_channels, bias, scale_attention)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def relation(self, x: Tensor, h: Sequential, f: Sequential) -> Tensor:
        r"""Relation features :math:`\mathbf{r}` of eq. (5), ``(B, T, N, C) -> (B, T, N, d)``."""
        B, T, N, C = x.shape
        d = self.embed_channels
        lin_v, bn_v = self.varphi[0], self.varphi[1]
        lin_h, bn_h = h[0], h[1]
        phi = self.phi(x.reshape(-1, C)).view(B, T, N, d)  # (B, T, N, d)
        u = lin_v(x)  # (B, T, N, d) W x (no bias, BN follows)
        pre_v = u.unsqueeze(2) - u.unsqueeze(3)  # [i, j] = W (x_j - x_i)
        var = F.relu(bn_v(pre_v.reshape(-1, d))).view(B, T, N, N, d)  # varphi(x_j - x_i)
        w_phi, w_var = lin_h.weight[:, :d], lin_h.weight[:, d:]
        # (B, T, N_i, N_j, d): h's linear part on [phi_i, varphi_ij], split by linearity
        pre_h = F.linear(phi, w_phi).unsqueeze(3) + F.linear(var, w_var)
        p = F.relu(bn_h(pre_h.reshape(-1, d))).view(B, T, N, N, d).sum(dim=3)  # sum over j
        return f(torch.cat([x, p], dim=-1).reshape(-1, C + d)).view(B, T, N, d)

    def forward(self, x_fine: Tensor, x_coarse: Tensor, return_attention: bool = False):
        """See the class docstring."""
        _check_dense(x_fine, x_coarse, self.in_channels)
        r_f = self.relation(x_fine, self.h_fine, self.f_fine)  # (B, T, N_f, d)
        r_c = self.relation(x_coarse, self.h_coarse, self.f_coarse)  # (B, T, N_c, d)
        logits = torch.matmul(r_c, r_f.transpose(-1, -2)) * self.attention_factor  # / sqrt(d)
        att = torch.softmax(logits, dim=-1)  # (B, T, N_c, N_f)
        out = torch.matmul(att, self.lin(x_fine))  # eq. (6)
        if self.bias is not None:
            out = out + self.bias
        out = F.relu(out)
        return (out, att) if return_attention else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
