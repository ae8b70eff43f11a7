r"""Dense twin of :class:`~stgraph.nn.SlidingWindowGCN`, CTL's 3D graph convolution.

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.3, eq. (3)-(4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stgraph.kernels.backend import BACKENDS
from stgraph.kernels.window import window_propagate
from stgraph.nn.sliding_window_gcn import EPS, _build_parameters, _reset

__all__ = ["DenseSlidingWindowGCN", "window_gcn_norm"]


def window_gcn_norm(adj: Tensor) -> Tensor:
    r"""Self-loops and symmetric normalisation of eq. (4), dense.

    :math:`\hat{A} = A + I`, :math:`\tilde{D}_{ii} = \sum_j |\hat{A}_{ij}|`
    (absolute values: the learned terms may be negative; for a non-negative
    :math:`\hat{A}` this is the paper's degree), returns
    :math:`\tilde{D}^{-1/2} \hat{A} \tilde{D}^{-1/2}`. Degrees below ``1e-12``
    are clamped.

    Args:
        adj (Tensor): ``(..., M, M)``.

    Returns:
        Tensor of the input's shape.

    Examples:
        >>> window_gcn_norm(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    eye = torch.eye(adj.size(-1), dtype=adj.dtype, device=adj.device)
    a = adj + eye
    deg_inv_sqrt = a.abs().sum(dim=-1).clamp_min(EPS).rsqrt()  # (..., M)
    return deg_inv_sqrt.unsqueeze(-1) * a * deg_inv_sqrt.unsqueeze(-2)


class DenseSlidingWindowGCN(torch.nn.Module):
    r"""3D graph convolutional layer of CTL (CVPR 2021, eq. 3-4) with batched dense
    matmuls, the twin of :class:`~stgraph.nn.SlidingWindowGCN`.

    .. math::
        H_t = \mathrm{ReLU}\big(\tilde{D}^{-1/2} (A^{(\tau)}_{s,t} + I) \tilde{D}^{-1/2}
        [X^{(\tau)}]_t W + b\big), \qquad
        X'_t = X_t + \mathrm{ReLU}\Big(\mathrm{BN}\big(\textstyle\sum_{k}
        \mathbf{c}_k \odot [H_t]_k\big)\Big)

    for all ``B * T`` windows at once (no loop over clips, frames or windows).
    The propagation, bias, ReLU and collapse are
    :func:`~stgraph.kernels.window_propagate`: batched matmuls over the
    ``tau``-times copy of the windows (``backend="torch"``) or one fused Triton
    kernel that reads the windows in place (``backend="triton"``).
    The block adjacency, its tiling and the choices where the paper is silent
    are documented in :class:`~stgraph.nn.SlidingWindowGCN` and
    :class:`~stgraph.nn.ContextReinforcedTopology`. Same constructor
    arguments and ``state_dict`` keys as the sparse layer, same numbers and
    gradients.

    Args:
        in_channels (int): input node channels :math:`C`.
        out_channels (int): output node channels :math:`C'`.
        adjacency (Tensor): physical adjacency :math:`A^p_s`, ``(N, N)``, no self-loops.
        tau (int, optional): window size :math:`\tau`. (default: :obj:`3`)
        use_physical (bool, optional): include :math:`A^p`. (default: :obj:`True`)
        use_mask (bool, optional): include the learned :math:`A^m`. (default: :obj:`True`)
        use_context (bool, optional): include :math:`A^c`. (default: :obj:`True`)
        residual (bool, optional): add the input to the output; needs
            ``in_channels == out_channels``. (default: :obj:`True`)
        bias (bool, optional): learn the bias :math:`b`. (default: :obj:`True`)
        backend (str, optional): ``"torch"`` (batched matmuls), ``"triton"`` (the
            fused kernel: CUDA tensors, or CPU ones under ``TRITON_INTERPRET=1``) or
            ``"auto"`` (``"triton"`` for CUDA tensors when Triton is installed); see
            :func:`~stgraph.kernels.resolve_backend`. Not a parameter: the
            ``state_dict`` is the same for all. (default: ``"auto"``)

    Shapes:
        - **input:** node features :math:`(B, T, N, C)`
        - **output:** :math:`(B, T, N, C')`; with ``return_adjacency=True`` also
          the normalised window adjacencies :math:`(B, T, \tau N, \tau N)`

    Raises:
        ValueError: ``residual`` with different channel counts, ``tau < 1``,
            an unknown ``backend``, or input not :math:`(B, T, N, C)`.
        RuntimeError: (forward) ``backend="triton"`` where it cannot run.

    Examples:
        >>> from stgraph.graph import COCO17
        >>> layer = DenseSlidingWindowGCN(16, 16, COCO17.physical_adjacency("s2"), tau=3)
        >>> layer
        DenseSlidingWindowGCN(16, 16, tau=3)
        >>> layer(torch.randn(2, 6, 10, 16)).shape
        torch.Size([2, 6, 10, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, tau: int = 3,
                 use_physical: bool = True, use_mask: bool = True, use_context: bool = True,
                 residual: bool = True, bias: bool = True, backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        _build_parameters(self, in_channels, out_channels, adjacency, tau, use_physical,
                          use_mask, use_context, residual, bias)
        self.backend = backend
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, x: Tensor, return_adjacency: bool = False):
        """See the class docstring."""
        N, C = self.num_nodes, self.in_channels
        if x.dim() != 4 or x.size(2) != N or x.size(3) != C:
            raise ValueError(
                f"expected node features of shape (B, T, {N}, {C}), got {tuple(x.shape)}"
            )
        B, T = x.shape[:2]
        tau, C_out = self.tau, self.out_channels
        a_hat = window_gcn_norm(self.topology(x))  # (B, T, tau*N, tau*N)
        # eq. (4), bias, ReLU and the depthwise collapse of the window, sum_k c_k * [H_t]_k;
        # W before windowing: linear without bias, so the zero padding stays zero
        y = window_propagate(a_hat, self.lin(x), tau, self.bias, self.collapse.weight[:, 0, :],
                             backend=self.backend)  # (B, T, N, C')
        y = F.relu(self.bn(y.reshape(-1, C_out))).view(B, T, N, C_out)
        if self.residual:
            y = y + x
        return (y, a_hat) if return_adjacency else y

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"tau={self.tau})")
