r"""3D graph convolution of CTL over sliding temporal windows (sparse, PyG ``MessagePassing``).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.3, eq. (3)-(4), fig. 5a.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import BatchNorm1d, Conv1d, Linear, Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from stgraph.nn.context_reinforced_topology import ContextReinforcedTopology, tile_window_adjacency

__all__ = ["SlidingWindowGCN"]

#: Floor of the degrees of eq. (4), so that an all-zero row gives zeros instead of NaN.
EPS = 1e-12



class SlidingWindowGCN(MessagePassing):
    r"""3D graph convolutional layer (3D-GCL) of CTL (CVPR 2021, sec. 3.3, eq. 3-4).

    A temporal window of :math:`\tau` frames slides over the clip (zero padding
    at both ends, ``T`` windows for ``T`` frames, window ``t`` centred on frame
    ``t``; see :func:`~stgraph.nn.sliding_windows`). Each window is one graph
    of :math:`\tau N` nodes with the block adjacency :math:`A^{(\tau)}_{s,t}`
    of eq. (3) built by :class:`~stgraph.nn.ContextReinforcedTopology`
    (:math:`A^p` and :math:`A^m` tiled over the blocks, the identity in the
    off-diagonal blocks, :math:`A^c` from the advanced context block); eq. (4)
    adds self-loops, normalises symmetrically and convolves; a convolution over
    the window, BN and ReLU collapse it back to frame ``t``; a shortcut adds
    the input:

    .. math::
        \hat{A}_t = A^{(\tau)}_{s,t} + I_{\tau N}, \qquad
        \tilde{D}_{ii} = \sum_j \lvert (\hat{A}_t)_{ij} \rvert, \qquad
        H_t = \sigma\big(\tilde{D}^{-1/2} \hat{A}_t \tilde{D}^{-1/2} [X^{(\tau)}]_t W + b\big),

    .. math::
        X'_t = X_t + \mathrm{ReLU}\Big(\mathrm{BN}\big(\textstyle\sum_{k=1}^{\tau}
        \mathbf{c}_k \odot [H_t]_k\big)\Big)

    with :math:`[X^{(\tau)}]_t` the window's :math:`\tau N` node features
    (frame-major), :math:`\sigma` = ReLU and :math:`\mathbf{c}_k` the weights of
    the collapsing convolution.

    Choices where the paper is silent (ours):

    * the degree is taken over :math:`\lvert \hat{A}_t \rvert`, because the learned
      :math:`A^m` and the L2-normalised :math:`A^c` may be negative; for a
      non-negative :math:`\hat{A}_t` this is exactly eq. (4);
    * padding nodes keep their edges (as in MS-G3D): their zero features send
      nothing, but they count in the degrees;
    * the collapsing convolution is depthwise (kernel :math:`\tau` over the
      window, one weight per channel and frame of the window, no bias, as BN
      follows), initialised to the window mean :math:`1/\tau`; a full
      :math:`C' \times C' \times \tau` convolution would triple the layer's
      weights at :math:`C = 2048`;
    * the shortcut is on whenever ``residual=True`` (the paper skips it on the
      first of its :math:`L` layers: build that one with ``residual=False``).

    With :math:`\tau = 1` the layer is the frame-wise GCN of eq. (4) on
    :math:`A^p + A^m + A^c_t` followed by a per-channel scale, BN and ReLU.

    This sparse form builds the window graphs (``edge_index`` from the block
    structure, cached per input size), gathers the dense topology onto the
    edges, normalises with scatter and propagates with message passing, the
    collapse being a second propagation from the window nodes to the output
    nodes. It accepts dense clips ``(B, T, N, C)`` or PyG node features with
    ``clip``, ``frame`` and ``part`` (as :meth:`stgraph.graph.KeypointGraphBuilder.to_batch`
    makes). :class:`~stgraph.nn.DenseSlidingWindowGCN` is the dense twin:
    same arguments, same ``state_dict`` keys, same numbers.

    Args:
        in_channels (int): input node channels :math:`C`.
        out_channels (int): output node channels :math:`C'`.
        adjacency (Tensor): physical adjacency :math:`A^p_s`, ``(N, N)``, no
            self-loops (e.g. ``COCO17.physical_adjacency("s1")``).
        tau (int, optional): window size :math:`\tau`. (default: :obj:`3`, the paper's)
        use_physical (bool, optional): include :math:`A^p`. (default: :obj:`True`)
        use_mask (bool, optional): include the learned :math:`A^m`. (default: :obj:`True`)
        use_context (bool, optional): include :math:`A^c`. (default: :obj:`True`)
        residual (bool, optional): add the input to the output; needs
            ``in_channels == out_channels``. (default: :obj:`True`)
        bias (bool, optional): learn the bias :math:`b` of the graph
            convolution. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(B, T, N, C)`, or
          :math:`(|\mathcal{V}|, C)` with ``clip``, ``frame``, ``part``
          :math:`(|\mathcal{V}|,)` filling a :math:`B \times T \times N` grid
        - **output:** :math:`(B, T, N, C')`, or :math:`(|\mathcal{V}|, C')` in
          the input's node order

    Raises:
        ValueError: ``residual`` with different channel counts, ``tau < 1``,
            mis-shaped input, or node indices that do not fill the grid.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, tau: int = 3,
                 use_physical: bool = True, use_mask: bool = True, use_context: bool = True,
                 residual: bool = True, bias: bool = True) -> None:
        super().__init__(aggr="add")
        _build_parameters(self, in_channels, out_channels, adjacency, tau, use_physical,
                          use_mask, use_context, residual, bias)
        self._structures: dict[tuple, tuple[Tensor, ...]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset(self)

    def _structure(self, B: int, T: int, device) -> tuple[Tensor, ...]:
        """Index tensors of the window graphs of ``B`` clips of ``T`` frames (cached)."""
        key = (B, T, str(device))
        if key in self._structures:
            return self._structures[key]
        tau, N = self.tau, self.num_nodes
        S, G = tau * N, B * T
        ar = lambda n: torch.arange(n, device=device)  # noqa: E731
        # window node (g, k, n) copies frame t + k - left of clip b, or the zero pad row
        g = ar(G)
        src_t = (g % T).view(G, 1) + ar(tau).view(1, tau) - (tau - 1) // 2  # (G, tau)
        valid = (src_t >= 0) & (src_t < T)
        base = ((g // T).view(G, 1) * T + src_t) * N  # (G, tau)
        gather = (base.unsqueeze(-1) + ar(N)).masked_fill(~valid.unsqueeze(-1), B * T * N)
        # edges of one window: its non-zero pattern (complete when A^m or A^c is on)
        if self.use_mask or self.use_context:
            support = torch.ones(S, S, dtype=torch.bool, device=device)
        else:
            support = torch.eye(S, dtype=torch.bool, device=device)
            if self.use_physical:
                phys = self.topology.physical.to(device)
                support |= tile_window_adjacency(phys, tau, temporal_self_loops=True) != 0
        q_dst, q_src = support.nonzero().t()  # row = target, column = source
        offset = (g * S).view(G, 1)
        edge_index = torch.stack([(offset + q_src).reshape(-1), (offset + q_dst).reshape(-1)])
        flat = ((g * S * S).view(G, 1) + q_dst * S + q_src).reshape(-1)  # into (G, S, S)
        loop = (q_dst == q_src).repeat(G)
        # collapse: window node (g, k, n) -> output node (g, n) with the weights of slot k
        w_node = ar(G * S)
        collapse_index = torch.stack([w_node, (w_node // S) * N + w_node % N])
        collapse_slot = (w_node % S) // N
        out = (gather.reshape(-1), edge_index, flat, loop, collapse_index, collapse_slot)
        if len(self._structures) >= 8:  # a few input sizes at a time (train, eval, last batch)
            self._structures.clear()
        self._structures[key] = out
        return out

    def window_graph(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The normalised window graphs of eq. (4) in PyG form.

        Args:
            x (Tensor): dense clips ``(B, T, N, C)``.

        Returns:
            ``(x_win, edge_index, edge_weight)``: the ``B*T*tau*N`` window node
            features (node ``(g * tau + k) * N + n`` is node ``n`` of frame
            ``k`` of window ``g = b * T + t``; padding rows are zero), the edges
            and :math:`\tilde{D}^{-1/2} \hat{A}_t \tilde{D}^{-1/2}` on them.
        """
        B, T, N, C = x.shape
        gather, edge_index, flat, loop, _, _ = self._structure(B, T, x.device)
        a = self.topology(x)  # (B, T, S, S), eq. (3)
        w = a.reshape(-1)[flat] + loop.to(a.dtype)  # A^ = A + I on the edges
        src, dst = edge_index
        deg = scatter(w.abs(), dst, dim=0, dim_size=gather.numel(), reduce="sum")
        deg_inv_sqrt = deg.clamp_min(EPS).rsqrt()
        w = deg_inv_sqrt[dst] * w * deg_inv_sqrt[src]
        x_pad = torch.cat([x.reshape(B * T * N, C), x.new_zeros(1, C)])
        return x_pad[gather], edge_index, w

    def forward(self, x: Tensor, clip: Tensor | None = None, frame: Tensor | None = None,
                part: Tensor | None = None) -> Tensor:
        """See the class docstring."""
        x_grid, order = _to_grid(x, clip, frame, part, self.num_nodes, self.in_channels)
        B, T, N, _ = x_grid.shape
        G, S, C_out = B * T, self.tau * N, self.out_channels
        _, _, _, _, collapse_index, collapse_slot = self._structure(B, T, x.device)
        x_win, edge_index, edge_weight = self.window_graph(x_grid)
        h = self.propagate(edge_index, x=self.lin(x_win), edge_weight=edge_weight,
                           size=(G * S, G * S))  # (G*S, C') eq. (4)
        if self.bias is not None:
            h = h + self.bias
        h = F.relu(h)
        slot_weight = self.collapse.weight[:, 0, :].t()[collapse_slot]  # (G*S, C')
        y = self.propagate(collapse_index, x=(h, None), edge_weight=slot_weight,
                           size=(G * S, G * N))  # (G*N, C') window collapsed
        y = F.relu(self.bn(y))
        if self.residual:
            y = y + x_grid.reshape(G * N, -1)
        if order is None:
            return y.view(B, T, N, C_out)
        return y[order]

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        if edge_weight.dim() == 1:
            edge_weight = edge_weight.unsqueeze(-1)
        return edge_weight * x_j

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"tau={self.tau})")


def _build_parameters(layer, in_channels: int, out_channels: int, adjacency: Tensor, tau: int,
                      use_physical: bool, use_mask: bool, use_context: bool, residual: bool,
                      bias: bool) -> None:
    """Check the arguments and create the parameters of a 3D-GCL (either twin)."""
    if tau < 1:
        raise ValueError(f"tau must be >= 1, got {tau}")
    if residual and in_channels != out_channels:
        raise ValueError(
            f"residual=True needs in_channels == out_channels, got {in_channels} and "
            f"{out_channels}; pass residual=False"
        )
    layer.in_channels = in_channels
    layer.out_channels = out_channels
    layer.tau = tau
    layer.use_physical = use_physical
    layer.use_mask = use_mask
    layer.use_context = use_context
    layer.residual = residual
    layer.topology = ContextReinforcedTopology(
        in_channels, adjacency, window=tau, use_physical=use_physical, use_mask=use_mask,
        use_context=use_context)
    layer.num_nodes = layer.topology.num_nodes
    layer.lin = Linear(in_channels, out_channels, bias=False)
    if bias:
        layer.bias = Parameter(torch.empty(out_channels))
    else:
        layer.register_parameter("bias", None)
    layer.collapse = Conv1d(out_channels, out_channels, tau, groups=out_channels, bias=False)
    layer.bn = BatchNorm1d(out_channels)


def _reset(layer) -> None:
    """Parameter initialisation shared by the two twins."""
    layer.topology.reset_parameters()
    layer.lin.reset_parameters()
    if layer.bias is not None:
        torch.nn.init.zeros_(layer.bias)
    torch.nn.init.constant_(layer.collapse.weight, 1.0 / layer.tau)  # window mean
    layer.bn.reset_parameters()


def _to_grid(x: Tensor, clip: Tensor | None, frame: Tensor | None, part: Tensor | None,
             num_nodes: int, in_channels: int) -> tuple[Tensor, Tensor | None]:
    """Node features as ``(B, T, N, C)`` and, for PyG input, the grid position of each node."""
    if x.dim() == 4:
        if x.size(2) != num_nodes or x.size(3) != in_channels:
            raise ValueError(
                f"expected node features of shape (B, T, {num_nodes}, {in_channels}), "
                f"got {tuple(x.shape)}"
            )
        return x, None
    if x.dim() != 2 or x.size(1) != in_channels:
        raise ValueError(
            f"expected node features of shape (B, T, {num_nodes}, {in_channels}) or "
            f"(num_nodes, {in_channels}) with clip, frame and part, got {tuple(x.shape)}"
        )
    if clip is None or frame is None or part is None:
        raise ValueError("node features of shape (num_nodes, C) need clip, frame and part")
    V = x.size(0)
    if clip.shape != (V,) or frame.shape != (V,) or part.shape != (V,):
        raise ValueError(f"clip, frame and part must have shape ({V},)")
    if V == 0 or int(part.max()) >= num_nodes or int(part.min()) < 0:
        raise ValueError(f"part must lie in 0..{num_nodes - 1}")
    B, T = int(clip.max()) + 1, int(frame.max()) + 1
    order = (clip * T + frame) * num_nodes + part  # (V,) grid position of each node
    if V != B * T * num_nodes or order.unique().numel() != V:
        raise ValueError(
            f"the {V} nodes do not fill a clip x frame x part grid of {B} x {T} x {num_nodes} "
            "exactly once (all clips need the same frames)"
        )
    grid = x.new_empty(V, in_channels)
    grid[order] = x
    return grid.view(B, T, num_nodes, in_channels), order
