r"""Cross-scale graph convolution of CTL (sparse, PyG ``MessagePassing``).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.4, eq. (5)-(6), fig. 5b and 6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import BatchNorm1d, Linear, Parameter, ReLU, Sequential
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter, softmax

__all__ = ["CrossScaleGCN"]


def fc_bn_relu(in_channels: int, out_channels: int) -> Sequential:
    """The embedding function of eq. (5): a fully connected layer, BN and ReLU.

    The linear layer has no bias: the BN right after it would cancel one.
    """
    return Sequential(Linear(in_channels, out_channels, bias=False), BatchNorm1d(out_channels),
                      ReLU())


class CrossScaleGCN(MessagePassing):
    r"""Cross-scale graph convolutional layer (CS-GCL) of CTL (CVPR 2021, sec. 3.4, eq. 5-6).

    Information flows from the :math:`N_f` nodes of a fine scale to the
    :math:`N_c` nodes of a coarse scale of the same frame, over a directed
    bipartite graph whose weights are predicted from relation features:

    .. math::
        \mathbf{p}_i = \sum_{j} h\big([\phi(\mathbf{x}_i),
        \varphi(\mathbf{x}_j - \mathbf{x}_i)]\big), \qquad
        \mathbf{r}_i = f([\mathbf{x}_i, \mathbf{p}_i])

    for every node of each scale, :math:`j` running over the nodes of the same
    scale and frame (:math:`j = i` included), with :math:`h, f` per scale;

    .. math::
        (A_{f,c})_{m,i} = \frac{\exp(\mathbf{r}_m^\top \mathbf{r}_i / \sqrt{d})}
        {\sum_{i'} \exp(\mathbf{r}_m^\top \mathbf{r}_{i'} / \sqrt{d})}, \qquad
        X'_c = \mathrm{ReLU}(A_{f,c} X_f W + b),

    so each coarse node's attention over the fine nodes of its frame sums to 1
    (eq. 5, with the :math:`1 / \sqrt{d}` of ``scale_attention``), and eq. (6)
    propagates the fine features. :math:`\phi, \varphi,
    h, f` are fully connected + BN + ReLU, as the paper says (the fully
    connected layer has no bias, which the BN would cancel).

    Choices where the paper is silent (ours): :math:`\phi` and
    :math:`\varphi` (written without a scale index) are shared by the two
    scales, :math:`h` and :math:`f` are not; all embeddings have
    ``embed_channels`` outputs; :math:`\sigma` of eq. (6) is ReLU. Eq. (5)
    does not scale the inner product; we divide it by :math:`\sqrt{d}` by
    default (``scale_attention``, the usual scaled dot product): the unscaled
    product of ReLU features of width :math:`d` has logits spread over a range
    that grows with :math:`\sqrt{d}`, so at initialisation the attention is
    near one-hot (on CTL's features with :math:`C = 2048`, :math:`d = 256`,
    all five s3 parts attended to the same s2 node in 84 % of frames), which
    the scale avoids. The layer has no node-count-dependent weights, so any
    pair of scales works.

    This sparse form takes PyG node sets: ``batch_fine`` / ``batch_coarse``
    give each node's frame graph (e.g. ``clip * T + frame``); relation
    messages run over the complete graph of each frame within a scale, the
    attention over the complete bipartite fine -> coarse graph of each frame.
    Dense clips ``(B, T, N, C)`` are accepted too.
    :class:`~stgraph.nn.DenseCrossScaleGCN` is the dense twin: same
    arguments, same ``state_dict`` keys, same numbers.

    Args:
        in_channels (int): node channels :math:`C` of both scales.
        out_channels (int): output channels :math:`C'`.
        embed_channels (int, optional): width of :math:`\phi, \varphi, h, f`.
            :obj:`None` means ``max(1, in_channels // 8)`` (256 for 2048; the
            relation step costs :math:`O(N^2 d^2)` per frame).
            (default: :obj:`None`)
        bias (bool, optional): learn the bias :math:`b`. (default: :obj:`True`)
        scale_attention (bool, optional): divide :math:`\mathbf{r}_m^\top
            \mathbf{r}_i` by :math:`\sqrt{d}` before the softmax of eq. (5)
            (ours); :obj:`False` is the paper's unscaled product.
            (default: :obj:`True`)

    Shapes:
        - **input:** fine :math:`(|\mathcal{V}_f|, C)` and coarse
          :math:`(|\mathcal{V}_c|, C)` node features with ``batch_fine``,
          ``batch_coarse``; or dense fine :math:`(B, T, N_f, C)` and coarse
          :math:`(B, T, N_c, C)`
        - **output:** :math:`(|\mathcal{V}_c|, C')` or :math:`(B, T, N_c, C')`;
          with ``return_attention=True`` also ``(edge_index, alpha)``, the
          fine -> coarse edges and their weights

    Raises:
        ValueError: mis-shaped input, or missing / mismatched batch vectors.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_channels: int | None = None,
                 bias: bool = True, scale_attention: bool = True) -> None:
        super().__init__(aggr="add")
        _init_modules(self, in_channels, out_channels, embed_channels, bias, scale_attention)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset(self)

    def relation(self, x: Tensor, batch: Tensor, h: Sequential, f: Sequential) -> Tensor:
        r"""Relation features :math:`\mathbf{r}` of eq. (5) for one scale, ``(V, d)``."""
        edge_index = _group_edges(batch, batch)  # complete graph of each frame, loops included
        src, dst = edge_index
        phi = self.phi(x)  # (V, d)
        msg = h(torch.cat([phi[dst], self.varphi(x[src] - x[dst])], dim=-1))  # (E, d)
        p = scatter(msg, dst, dim=0, dim_size=x.size(0), reduce="sum")  # (V, d)
        return f(torch.cat([x, p], dim=-1))

    def forward(self, x_fine: Tensor, x_coarse: Tensor, batch_fine: Tensor | None = None,
                batch_coarse: Tensor | None = None, return_attention: bool = False):
        """See the class docstring."""
        dense_shape = None
        if x_fine.dim() == 4 or x_coarse.dim() == 4:
            _check_dense(x_fine, x_coarse, self.in_channels)
            B, T, N_f, C = x_fine.shape
            N_c = x_coarse.size(2)
            dense_shape = (B, T, N_c, self.out_channels)
            frames = torch.arange(B * T, device=x_fine.device)
            batch_fine, batch_coarse = frames.repeat_interleave(N_f), frames.repeat_interleave(N_c)
            x_fine, x_coarse = x_fine.reshape(-1, C), x_coarse.reshape(-1, C)
        else:
            _check_sparse(x_fine, x_coarse, batch_fine, batch_coarse, self.in_channels)
        r_f = self.relation(x_fine, batch_fine, self.h_fine, self.f_fine)  # (V_f, d)
        r_c = self.relation(x_coarse, batch_coarse, self.h_coarse, self.f_coarse)  # (V_c, d)
        edge_index = _group_edges(batch_fine, batch_coarse)  # fine -> coarse, same frame
        src, dst = edge_index
        logits = (r_c[dst] * r_f[src]).sum(dim=-1) * self.attention_factor  # r_m^T r_i / sqrt(d)
        alpha = softmax(logits, dst, num_nodes=x_coarse.size(0))  # over the fine nodes of m
        out = self.propagate(edge_index, x=(self.lin(x_fine), None), alpha=alpha,
                             size=(x_fine.size(0), x_coarse.size(0)))  # eq. (6)
        if self.bias is not None:
            out = out + self.bias
        out = F.relu(out)
        if dense_shape is not None:
            out = out.view(dense_shape)
        return (out, (edge_index, alpha)) if return_attention else out

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"


def _init_modules(layer, in_channels: int, out_channels: int, embed_channels: int | None,
                  bias: bool, scale_attention: bool) -> None:
    """Submodules shared by the two twins (same names, same order: same ``state_dict``)."""
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channels must be >= 1, got {in_channels}, {out_channels}")
    d = max(1, in_channels // 8) if embed_channels is None else embed_channels
    layer.in_channels = in_channels
    layer.out_channels = out_channels
    layer.embed_channels = d
    layer.scale_attention = bool(scale_attention)
    #: factor of the attention logits r_m^T r_i (eq. 5): 1 / sqrt(d), or 1 unscaled
    layer.attention_factor = d ** -0.5 if scale_attention else 1.0
    layer.phi = fc_bn_relu(in_channels, d)
    layer.varphi = fc_bn_relu(in_channels, d)
    layer.h_fine = fc_bn_relu(2 * d, d)
    layer.f_fine = fc_bn_relu(in_channels + d, d)
    layer.h_coarse = fc_bn_relu(2 * d, d)
    layer.f_coarse = fc_bn_relu(in_channels + d, d)
    layer.lin = Linear(in_channels, out_channels, bias=False)
    if bias:
        layer.bias = Parameter(torch.empty(out_channels))
    else:
        layer.register_parameter("bias", None)


def _reset(layer) -> None:
    for name in ("phi", "varphi", "h_fine", "f_fine", "h_coarse", "f_coarse"):
        seq = getattr(layer, name)
        seq[0].reset_parameters()
        seq[1].reset_parameters()
    layer.lin.reset_parameters()
    if layer.bias is not None:
        torch.nn.init.zeros_(layer.bias)


def _group_edges(batch_src: Tensor, batch_dst: Tensor) -> Tensor:
    """Edges ``(2, E)`` from every source to every target node of the same group.

    Built from the ``(V_src, V_dst)`` equality mask: simple, quadratic in the
    node count, fine for the interoperability path.
    """
    dst, src = (batch_dst.view(-1, 1) == batch_src.view(1, -1)).nonzero().t()
    return torch.stack([src, dst])


def _check_dense(x_fine: Tensor, x_coarse: Tensor, in_channels: int) -> None:
    if x_fine.dim() != 4 or x_fine.size(-1) != in_channels:
        raise ValueError(
            f"expected fine node features of shape (B, T, N_f, {in_channels}), "
            f"got {tuple(x_fine.shape)}"
        )
    if (x_coarse.dim() != 4 or x_coarse.shape[:2] != x_fine.shape[:2]
            or x_coarse.size(-1) != in_channels):
        raise ValueError(
            f"expected coarse node features of shape ({x_fine.size(0)}, {x_fine.size(1)}, N_c, "
            f"{in_channels}) to match the fine ones {tuple(x_fine.shape)}, "
            f"got {tuple(x_coarse.shape)}"
        )


def _check_sparse(x_fine: Tensor, x_coarse: Tensor, batch_fine: Tensor | None,
                  batch_coarse: Tensor | None, in_channels: int) -> None:
    for name, x in (("fine", x_fine), ("coarse", x_coarse)):
        if x.dim() != 2 or x.size(-1) != in_channels:
            raise ValueError(
                f"expected {name} node features of shape (num_nodes, {in_channels}) or "
                f"(B, T, N, {in_channels}), got {tuple(x.shape)}"
            )
    if batch_fine is None or batch_coarse is None:
        raise ValueError("node features of shape (num_nodes, C) need batch_fine and "
                         "batch_coarse (the frame graph of each node)")
    if batch_fine.shape != x_fine.shape[:1] or batch_coarse.shape != x_coarse.shape[:1]:
        raise ValueError(
            f"batch_fine / batch_coarse must have shapes ({x_fine.size(0)},) and "
            f"({x_coarse.size(0)},), got {tuple(batch_fine.shape)} and {tuple(batch_coarse.shape)}"
        )
