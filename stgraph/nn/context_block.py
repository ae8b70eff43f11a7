r"""Context block of CTL: a data-dependent adjacency :math:`A^c` (sparse, PyG ``MessagePassing``).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.2, eq. (2) and fig. 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

__all__ = ["ContextBlock"]


class ContextBlock(MessagePassing):
    r"""Context block (CTL, CVPR 2021, fig. 4a): the adjacency :math:`A^c_s` of eq. (2).

    Given the node features :math:`X \in \mathbb{R}^{T \times N \times C}` of a
    clip, a first 1x1 convolution squeezes the feature dimension of every node
    and frame, a second squeezes time, and a third maps the resulting
    :math:`N`-vector to an :math:`N \times N` matrix whose rows are then
    L2-normalised:

    .. math::
        s_{t,n} = \mathbf{w}_c^\top \mathbf{x}_{t,n} + b_c, \qquad
        z_n = \sum_t w_{t}\, s_{t,n} + b_t, \qquad
        \tilde{A} = \mathrm{reshape}_{N \times N}(W_n \mathbf{z} + \mathbf{b}_n), \qquad
        A^c_{ij} = \frac{\tilde{A}_{ij}}{\lVert \tilde{A}_{i,:} \rVert_2}.

    Row :math:`i` holds the weights node :math:`i` aggregates with (target
    :math:`i`, source :math:`j`), as everywhere in stgraph; entries can be
    negative.

    Choices where the paper is silent (ours): the squeezes map to one channel
    each (:math:`C \to 1`, then :math:`T \to 1`), all three convolutions have a
    bias, and nothing sits between them. With ``num_frames=None`` the time
    squeeze is a plain average over the frames (no :math:`w_t, b_t`), so clips
    of any length work; with ``num_frames=T`` it is the paper's learned 1x1
    convolution over the :math:`T` frames and clips must have exactly
    :math:`T` frames.

    **Advanced context block** (fig. 4b, the 3D-GCL's :math:`A^{(\tau),c}_{s,t}`):
    the same block with ``num_nodes = tau * N`` applied to each temporal window
    as a one-frame graph of its :math:`\tau N` nodes, giving one
    :math:`\tau N \times \tau N` matrix per window (eq. 4 indexes the adjacency
    by the window :math:`t`); there is no time squeeze inside a window, whose
    frames are nodes. :class:`~stgraph.nn.ContextReinforcedTopology` builds it.

    This sparse form works on a PyG node set: nodes are grouped into graphs by
    ``batch`` and into node slots by ``part`` (and frames by ``frame``); the
    per-(graph, part) time squeeze is a message-passing aggregation, and
    :meth:`forward` returns :math:`A^c` on the edges it is given.
    :class:`~stgraph.nn.DenseContextBlock` is the dense twin: same arguments,
    same ``state_dict`` keys, same numbers.

    Args:
        in_channels (int): node channels :math:`C`.
        num_nodes (int): nodes per frame :math:`N` (``tau * N`` for the
            advanced block).
        num_frames (int, optional): :math:`T` for the learned time squeeze;
            :obj:`None` averages over the frames. (default: :obj:`None`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge indices
          :math:`(2, |\mathcal{E}|)` (row 0 sources, row 1 targets, each edge
          inside one graph), ``part`` :math:`(|\mathcal{V}|,)` in
          ``0..N-1``, optional ``batch`` and ``frame`` :math:`(|\mathcal{V}|,)`
        - **output:** edge weights :math:`(|\mathcal{E}|,)`,
          :math:`A^c[\mathrm{batch}_i, \mathrm{part}_i, \mathrm{part}_j]` for
          the edge :math:`j \to i`; :meth:`adjacency` gives the
          :math:`(G, N, N)` matrices.

    Raises:
        ValueError: mis-shaped input, a ``part`` or ``frame`` out of range, an
            edge joining two graphs, or ``frame`` missing while ``num_frames``
            is set.
    """

    def __init__(self, in_channels: int, num_nodes: int, num_frames: int | None = None) -> None:
        super().__init__(aggr="add")
        _build_parameters(self, in_channels, num_nodes, num_frames)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset(self)

    def adjacency(self, x: Tensor, part: Tensor, batch: Tensor | None = None,
                  frame: Tensor | None = None) -> Tensor:
        r"""The L2-row-normalised :math:`A^c` of every graph, ``(G, N, N)``."""
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"expected node features of shape (num_nodes, {self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        V, N = x.size(0), self.num_nodes
        if part.shape != (V,) or (V > 0 and not 0 <= int(part.min()) <= int(part.max()) < N):
            raise ValueError(
                f"expected part of shape ({V},) with values in 0..{N - 1}, got shape "
                f"{tuple(part.shape)}"
            )
        if batch is None:
            batch = torch.zeros_like(part)
        G = int(batch.max()) + 1 if V > 0 else 0
        slot = batch * N + part  # (V,) the (graph, part) each node squeezes into
        s = self.lin_feature(x)  # (V, 1) feature squeeze
        if self.lin_time is not None:
            if frame is None:
                raise ValueError(
                    f"frame is required: this block squeezes {self.num_frames} frames with a "
                    "learned convolution"
                )
            if frame.shape != (V,) or (V > 0 and not 0 <= int(frame.min())
                                       <= int(frame.max()) < self.num_frames):
                raise ValueError(
                    f"expected frame of shape ({V},) with values in 0..{self.num_frames - 1}"
                )
            weight = self.lin_time.weight[0, frame]  # (V,) w_t of each node
        else:
            count = scatter(torch.ones_like(s[:, 0]), slot, dim=0, dim_size=G * N, reduce="sum")
            weight = 1.0 / count.clamp_min(1.0)[slot]  # mean over the frames
        edge_index = torch.stack([torch.arange(V, device=x.device), slot])  # node -> slot
        z = self.propagate(edge_index, x=(s, None), edge_weight=weight, size=(V, G * N))
        z = z.view(G, N)  # (G, N)
        if self.lin_time is not None:
            z = z + self.lin_time.bias
        a = self.lin_node(z).view(G, N, N)  # (G, N, N)
        return F.normalize(a, p=2.0, dim=-1)

    def forward(self, x: Tensor, edge_index: Tensor, part: Tensor, batch: Tensor | None = None,
                frame: Tensor | None = None) -> Tensor:
        """:math:`A^c` on the edges ``edge_index``; see the class docstring."""
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"expected edge_index of shape (2, E), got {tuple(edge_index.shape)}")
        a = self.adjacency(x, part, batch=batch, frame=frame)  # (G, N, N)
        src, dst = edge_index
        graph = torch.zeros_like(part) if batch is None else batch
        if not bool((graph[src] == graph[dst]).all()):
            raise ValueError("edge_index joins nodes of different graphs (batch); "
                             "A^c is defined within a graph only")
        return a[graph[dst], part[dst], part[src]]

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        extra = f", num_frames={self.num_frames}" if self.num_frames is not None else ""
        return f"{self.__class__.__name__}({self.in_channels}, num_nodes={self.num_nodes}{extra})"


def _build_parameters(block, in_channels: int, num_nodes: int, num_frames: int | None) -> None:
    """Check the arguments and create the parameters of a context block (either twin)."""
    if in_channels < 1 or num_nodes < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(
            f"in_channels, num_nodes and num_frames must be >= 1, got {in_channels}, "
            f"{num_nodes}, {num_frames}"
        )
    block.in_channels = in_channels
    block.num_nodes = num_nodes
    block.num_frames = num_frames
    block.lin_feature = Linear(in_channels, 1)  # 1x1 conv, C -> 1
    block.lin_time = Linear(num_frames, 1) if num_frames is not None else None  # T -> 1
    block.lin_node = Linear(num_nodes, num_nodes * num_nodes)  # N -> N x N


def _reset(block) -> None:
    block.lin_feature.reset_parameters()
    if block.lin_time is not None:
        block.lin_time.reset_parameters()
    block.lin_node.reset_parameters()
