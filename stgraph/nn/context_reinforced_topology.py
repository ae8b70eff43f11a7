r"""Context-reinforced topology of CTL: :math:`A_s = A^p_s + A^m_s + A^c_s` (eq. 2, eq. 3).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.2-3.3.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Parameter

from stgraph.kernels.window import sliding_windows
from stgraph.nn.dense_context_block import DenseContextBlock

__all__ = ["ContextReinforcedTopology", "sliding_windows", "tile_window_adjacency"]


def tile_window_adjacency(adj: Tensor, tau: int, temporal_self_loops: bool = False) -> Tensor:
    r"""Tile a frame-level adjacency over the :math:`\tau \times \tau` blocks of a window (eq. 3).

    Returns :math:`J_\tau \otimes A` (every block :math:`[\cdot]_{i,j}` equals
    :math:`A`), plus, with ``temporal_self_loops``, the identity in every
    *off-diagonal* block, :math:`(J_\tau - I_\tau) \otimes I_N`, so that each
    node is linked to itself in the other frames of the window. Window nodes
    are frame-major: node ``k * N + n`` is node ``n`` of the window's frame ``k``.

    Args:
        adj (Tensor): ``(N, N)``.
        tau (int): window size.
        temporal_self_loops (bool, optional): add the identity to the
            off-diagonal blocks. (default: :obj:`False`)

    Returns:
        Tensor ``(tau * N, tau * N)``.

    Examples:
        >>> tile_window_adjacency(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 2, True)
        tensor([[0., 1., 1., 1.],
                [1., 0., 1., 1.],
                [1., 1., 0., 1.],
                [1., 1., 1., 0.]])
    """
    if adj.dim() != 2 or adj.size(0) != adj.size(1):
        raise ValueError(f"expected a square adjacency (N, N), got {tuple(adj.shape)}")
    ones = torch.ones(tau, tau, dtype=adj.dtype, device=adj.device)
    out = _kron(ones, adj)
    if temporal_self_loops:
        eye_t = torch.eye(tau, dtype=adj.dtype, device=adj.device)
        eye_n = torch.eye(adj.size(0), dtype=adj.dtype, device=adj.device)
        out = out + _kron(ones - eye_t, eye_n)
    return out


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """``torch.kron`` of two matrices, bit for bit (one product per entry), in operators
    ONNX exports (``aten::kron`` has no ONNX symbolic)."""
    m, n = a.shape
    p, q = b.shape
    return (a[:, None, :, None] * b[None, :, None, :]).reshape(m * p, n * q)


class ContextReinforcedTopology(torch.nn.Module):
    r"""Context-reinforced adjacency of CTL (CVPR 2021), eq. (2) per clip or eq. (3) per window.

    Frame level (``window=None``), eq. (2):

    .. math::
        A_s = A^p_s + A^m_s + A^c_s

    with :math:`A^p_s` the fixed physical adjacency (a buffer, 0/1, no
    self-loops: eq. 4 adds them), :math:`A^m_s` a learned mask initialised with
    zeros and :math:`A^c_s` the context block of fig. 4a
    (:class:`~stgraph.nn.DenseContextBlock`), one matrix per clip.

    Window level (``window=tau``), eq. (3), one :math:`\tau N \times \tau N`
    matrix per temporal window :math:`t` (windows as :func:`sliding_windows`):

    .. math::
        A^{(\tau)}_{s,t} = \underbrace{J_\tau \otimes A^p_s + (J_\tau - I_\tau) \otimes I_N}_{
        A^{(\tau),p}_s} + \underbrace{J_\tau \otimes A^m_s}_{A^{(\tau),m}_s}
        + A^{(\tau),c}_{s,t}.

    How the blocks are tiled (our reading of sec. 3.3): every block
    :math:`[A^{(\tau)}]_{i,j}` gets :math:`A^p_s` and :math:`A^m_s`; the
    off-diagonal blocks (:math:`i \neq j`) also get the identity, because the
    paper says the nodes of frame :math:`i` "are connected to themselves and
    their neighboring nodes at frame :math:`j`", while the diagonal blocks keep
    :math:`A^p_s` alone, their self-loops coming from the :math:`+I` of eq. (4).
    With the :math:`+I` of eq. (4) the physical part is
    :math:`J_\tau \otimes (A^p_s + I_N)`, the tiling of MS-G3D (Liu et al.,
    CVPR 2020), which the 3D-GCL follows. :math:`A^{(\tau),c}_{s,t}` is the
    advanced context block (fig. 4b): a context block over the window's
    :math:`\tau N` nodes (see :class:`~stgraph.nn.ContextBlock`).

    Each term is switched by a flag (the paper's Table 4 ablation); a term off
    is absent from the module (no buffer use, no parameter, no block). The
    output is the sum before the self-loops and normalisation of eq. (4).

    Args:
        in_channels (int): node channels :math:`C` (for the context block).
        adjacency (Tensor): physical adjacency :math:`A^p_s`, ``(N, N)``, e.g.
            ``COCO17.physical_adjacency("s2")``; it also fixes :math:`N`.
        window (int, optional): :math:`\tau`; :obj:`None` gives the
            frame-level topology of eq. (2). (default: :obj:`None`)
        num_frames (int, optional): frame-level only, the :math:`T` of the
            context block's learned time squeeze; :obj:`None` averages.
            (default: :obj:`None`)
        use_physical (bool, optional): include :math:`A^p`. (default: :obj:`True`)
        use_mask (bool, optional): include :math:`A^m`. (default: :obj:`True`)
        use_context (bool, optional): include :math:`A^c`. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(B, T, N, C)`
        - **output:** :math:`(B, N, N)` for ``window=None``, else
          :math:`(B, T, \tau N, \tau N)`

    Raises:
        ValueError: a non-square adjacency, ``window < 1``, ``num_frames``
            with a window, or input not :math:`(B, T, N, C)`.

    Examples:
        >>> from stgraph.graph import COCO17
        >>> topo = ContextReinforcedTopology(8, COCO17.physical_adjacency("s3"), window=3)
        >>> topo(torch.randn(2, 6, 5, 8)).shape
        torch.Size([2, 6, 15, 15])
    """

    def __init__(self, in_channels: int, adjacency: Tensor, window: int | None = None,
                 num_frames: int | None = None, use_physical: bool = True, use_mask: bool = True,
                 use_context: bool = True) -> None:
        super().__init__()
        adjacency = torch.as_tensor(adjacency, dtype=torch.float32)
        if adjacency.dim() != 2 or adjacency.size(0) != adjacency.size(1):
            raise ValueError(f"expected a square adjacency (N, N), got {tuple(adjacency.shape)}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        if window is not None and num_frames is not None:
            raise ValueError("num_frames applies to the frame-level context block only "
                             "(window=None); the windowed block has no time squeeze")
        self.in_channels = in_channels
        self.num_nodes = adjacency.size(0)
        self.window = window
        self.num_frames = num_frames
        self.use_physical = use_physical
        self.use_mask = use_mask
        self.use_context = use_context
        self.register_buffer("physical", adjacency.clone())
        if use_mask:
            self.mask = Parameter(torch.empty(self.num_nodes, self.num_nodes))
        else:
            self.register_parameter("mask", None)
        if use_context:
            tau = 1 if window is None else window
            self.context = DenseContextBlock(in_channels, tau * self.num_nodes,
                                             num_frames=num_frames)
        else:
            self.context = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.mask is not None:
            torch.nn.init.zeros_(self.mask)  # A^m starts at zero (sec. 3.2)
        if self.context is not None:
            self.context.reset_parameters()

    @property
    def adjacency_size(self) -> int:
        """Side of the adjacency, :math:`N`, or :math:`\\tau N` with a window."""
        return self.num_nodes * (1 if self.window is None else self.window)

    def static_adjacency(self) -> Tensor:
        r"""The data-independent part :math:`A^p + A^m` (tiled with a window)."""
        n = self.num_nodes
        if self.window is None:
            a = self.physical.new_zeros(n, n)
            if self.use_physical:
                a = a + self.physical
            if self.mask is not None:
                a = a + self.mask
            return a
        a = self.physical.new_zeros(self.adjacency_size, self.adjacency_size)
        if self.use_physical:
            a = a + tile_window_adjacency(self.physical, self.window, temporal_self_loops=True)
        if self.mask is not None:
            a = a + tile_window_adjacency(self.mask, self.window)
        return a

    def forward(self, x: Tensor) -> Tensor:
        """:math:`A_s` per clip or :math:`A^{(\\tau)}_{s,t}` per window; see the class docstring."""
        if x.dim() != 4 or x.size(2) != self.num_nodes or x.size(3) != self.in_channels:
            raise ValueError(
                f"expected node features of shape (B, T, {self.num_nodes}, {self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        B, T, N, C = x.shape
        a = self.static_adjacency().to(x.dtype)
        if self.window is None:
            a = a.expand(B, N, N)
            if self.context is not None:
                a = a + self.context(x)  # (B, N, N)
            return a
        S = self.adjacency_size  # tau * N
        a = a.expand(B, T, S, S)
        if self.context is not None:
            xw = sliding_windows(x, self.window).reshape(-1, 1, S, C)  # windows as graphs
            a = a + self.context(xw).view(B, T, S, S)  # one A^c per window
        return a

    def __repr__(self) -> str:
        terms = "+".join(t for t, on in (("p", self.use_physical), ("m", self.use_mask),
                                         ("c", self.use_context)) if on) or "none"
        extra = f", window={self.window}" if self.window is not None else ""
        return (f"{self.__class__.__name__}({self.in_channels}, num_nodes={self.num_nodes}"
                f"{extra}, terms={terms})")
