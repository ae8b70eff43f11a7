r"""Affinity graph convolution of STGCN (sparse, PyG ``MessagePassing``).

Yang et al., "Spatial-Temporal Graph Convolutional Network for Video-based
Person Re-identification", CVPR 2020, sec. 3.2, eq. (1)-(4).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Linear, Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import add_self_loops, scatter

from stgraph.kernels.affinity import EPS

__all__ = ["AffinityGCNConv"]


class AffinityGCNConv(MessagePassing):
    r"""Graph convolution whose adjacency is the learned feature affinity (STGCN, CVPR 2020).

    On the edges it is given, the layer computes

    .. math::
        e_{ij} = \phi(\mathbf{x}_i)^\top \phi(\mathbf{x}_j), \qquad
        A_{ij} = \frac{e_{ij}^2}{\sum_{k \in \mathcal{N}(i)} e_{ik}^2}, \qquad
        \tilde{A} = A + I, \qquad
        \hat{A} = \tilde{D}^{-1/2} \tilde{A} \tilde{D}^{-1/2},

    .. math::
        X' = \hat{A} X W + b,

    with :math:`\phi(\mathbf{x}) = W_\phi \mathbf{x}` (eq. 1-3 and the propagation
    rule of eq. 4), :math:`\mathcal{N}(i)` the sources of the edges into node
    :math:`i` (a self-loop in ``edge_index`` makes :math:`i \in \mathcal{N}(i)`,
    as in the paper's complete graph) and :math:`\tilde{D}` the row sums of
    :math:`\tilde{A}`. The identity is added on top of any self-loop already
    present. Row sums below ``1e-12`` are clamped, so a node with all-zero
    affinities aggregates only itself.

    :class:`~stgraph.nn.DenseAffinityGCN` is the dense twin: same arguments, same
    ``state_dict`` keys, same numbers on the complete graph with self-loops.

    Args:
        in_channels (int): input node channels :math:`C`.
        out_channels (int): output node channels.
        embed_channels (int, optional): width :math:`d` of the affinity embedding
            :math:`\phi`. :obj:`None` means ``in_channels`` (the paper's square
            :math:`W_\phi`). (default: :obj:`None`)
        bias (bool, optional): learn an additive bias. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge indices
          :math:`(2, |\mathcal{E}|)` (``flow="source_to_target"``: row 0 sources,
          row 1 targets)
        - **output:** node features :math:`(|\mathcal{V}|, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, embed_channels: int | None = None,
                 bias: bool = True) -> None:
        super().__init__(aggr="add")
        _build_parameters(self, in_channels, out_channels, embed_channels, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset(self)

    def adjacency(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        r"""The normalised adjacency :math:`\hat{A}` as weighted edges.

        Returns:
            ``(edge_index, edge_weight)``: the given edges followed by one
            self-loop per node, and :math:`\hat{A}` on each (duplicate
            ``(i, i)`` entries add up).
        """
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"expected node features of shape (num_nodes, {self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"expected edge_index of shape (2, E), got {tuple(edge_index.shape)}")
        num_nodes = x.size(0)
        src, dst = edge_index
        h = self.phi(x)  # (V, d)
        e2 = (h[src] * h[dst]).sum(dim=-1).square()  # (E,)  e_ij^2
        row_sum = scatter(e2, dst, dim=0, dim_size=num_nodes, reduce="sum")  # (V,)
        a = e2 / row_sum.clamp_min(EPS)[dst]  # A_ij, rows over each target's neighbours
        edge_index, a = add_self_loops(edge_index, a, fill_value=1.0, num_nodes=num_nodes)
        src, dst = edge_index
        deg = scatter(a, dst, dim=0, dim_size=num_nodes, reduce="sum")  # row sums of A + I
        deg_inv_sqrt = deg.clamp_min(EPS).rsqrt()
        return edge_index, deg_inv_sqrt[dst] * a * deg_inv_sqrt[src]

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Propagate ``x`` ``(V, C)`` over ``edge_index`` ``(2, E)``; returns ``(V, C_out)``."""
        edge_index, edge_weight = self.adjacency(x, edge_index)
        out = self.propagate(edge_index, x=self.lin(x), edge_weight=edge_weight)
        if self.bias is not None:
            out = out + self.bias
        return out

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"


def _build_parameters(layer, in_channels: int, out_channels: int, embed_channels: int | None,
                      bias: bool) -> None:
    """Create the parameters of an affinity GCN layer (either twin: same names, same shapes)."""
    layer.in_channels = in_channels
    layer.out_channels = out_channels
    layer.embed_channels = in_channels if embed_channels is None else embed_channels
    layer.phi = Linear(in_channels, layer.embed_channels, bias=False)
    layer.lin = Linear(in_channels, out_channels, bias=False)
    if bias:
        layer.bias = Parameter(torch.empty(out_channels))
    else:
        layer.register_parameter("bias", None)


def _reset(layer) -> None:
    layer.phi.reset_parameters()
    layer.lin.reset_parameters()
    if layer.bias is not None:
        torch.nn.init.zeros_(layer.bias)
