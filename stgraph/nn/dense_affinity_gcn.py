r"""Dense twin of :class:`~stgraph.nn.AffinityGCNConv` for batches of small complete graphs.

Yang et al., "Spatial-Temporal Graph Convolutional Network for Video-based
Person Re-identification", CVPR 2020, sec. 3.2, eq. (1)-(4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stgraph.kernels.affinity import affinity_adjacency, affinity_propagate
from stgraph.kernels.backend import BACKENDS
from stgraph.nn.affinity_gcn_conv import _build_parameters, _reset

__all__ = ["DenseAffinityGCN", "affinity_adjacency"]


class DenseAffinityGCN(torch.nn.Module):
    r"""Dense affinity graph convolution of STGCN (CVPR 2020), the twin of
    :class:`~stgraph.nn.AffinityGCNConv`.

    .. math::
        X' = \hat{A} X W + b, \qquad
        \hat{A} = \tilde{D}^{-1/2} (A + I) \tilde{D}^{-1/2}, \qquad
        A_{ij} = \frac{(\phi(x_i)^\top \phi(x_j))^2}{\sum_k (\phi(x_i)^\top \phi(x_k))^2}

    over the complete graph of each item (or the edges of ``adj``). It has the
    constructor arguments and ``state_dict`` keys of the sparse layer, and gives
    the same numbers (and gradients) on the complete graph with self-loops.

    Args:
        in_channels (int): input node channels :math:`C`.
        out_channels (int): output node channels.
        embed_channels (int, optional): width :math:`d` of :math:`\phi`;
            :obj:`None` means ``in_channels``. (default: :obj:`None`)
        bias (bool, optional): learn an additive bias. (default: :obj:`True`)
        backend (str, optional): the propagation :math:`\hat{A} XW`
            (:func:`~stgraph.kernels.affinity_propagate`): ``"torch"`` (batched matmul,
            :math:`\hat{A}` in memory), ``"triton"`` (one fused kernel, the
            :math:`N \times N` matrices never leave the chip) or ``"auto"`` (Triton for
            CUDA inputs when installed). With ``adj`` or ``return_adjacency=True`` the
            layer takes the PyTorch path. (default: ``"auto"``)

    Raises:
        ValueError: an unknown ``backend``; (forward) mis-shaped input, or
            ``backend="triton"`` on graphs of more than
            :data:`~stgraph.kernels.affinity.MAX_NODES` nodes.
        RuntimeError: (forward) ``backend="triton"`` where it cannot run
            (:func:`~stgraph.kernels.resolve_backend`).

    Shapes:
        - **input:** node features :math:`(B, N, C)`, optional mask :math:`(B, N)`,
          optional edge mask ``adj`` :math:`(B, N, N)` or :math:`(N, N)`
        - **output:** :math:`(B, N, C_{out})`; with ``return_adjacency=True`` also
          :math:`\hat{A}` of shape :math:`(B, N, N)`. Rows of masked nodes are zero.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_channels: int | None = None,
                 bias: bool = True, backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.backend = backend
        _build_parameters(self, in_channels, out_channels, embed_channels, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, mask: Tensor | None = None, adj: Tensor | None = None,
                return_adjacency: bool = False):
        """See the class docstring. Raises ``ValueError`` on mis-shaped input."""
        if x.dim() != 3 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"expected node features of shape (B, N, {self.in_channels}), got {tuple(x.shape)}"
            )
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(
                f"expected mask of shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        h, xw = self.phi(x), self.lin(x)  # (B, N, d), (B, N, C_out)
        if adj is None and not return_adjacency:
            out = affinity_propagate(h, xw, mask=mask, backend=self.backend)  # (B, N, C_out)
        else:
            a_hat = affinity_adjacency(h, mask=mask, adj=adj)  # (B, N, N)
            out = torch.matmul(a_hat, xw)  # (B, N, C_out)
        if self.bias is not None:
            out = out + self.bias
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return (out, a_hat) if return_adjacency else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
