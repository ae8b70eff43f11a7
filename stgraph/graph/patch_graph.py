"""Horizontal-patch graphs over the frames of a clip (STGCN).

Yang et al., "Spatial-Temporal Graph Convolutional Network for Video-based
Person Re-identification", CVPR 2020, sec. 3.1: each frame's feature map is
split into ``P`` horizontal stripes, each stripe is average-pooled into one
node, giving ``N = T * P`` nodes per clip.

Node order everywhere in stgraph is *frame-major*: node ``n = t * P + p`` is
patch ``p`` (0 = top) of frame ``t``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

__all__ = ["PatchGraphBuilder", "complete_edge_index"]

_GRAPHS = ("temporal", "spatial")


def complete_edge_index(num_nodes: int, self_loops: bool = True, device=None) -> Tensor:
    """Edge index of the complete directed graph on ``num_nodes`` nodes.

    Args:
        num_nodes (int): number of nodes ``N``.
        self_loops (bool, optional): include the ``N`` edges ``(i, i)``.
            (default: :obj:`True`)
        device: device of the returned tensor.

    Returns:
        LongTensor of shape ``(2, N*N)`` (or ``(2, N*(N-1))`` without self-loops),
        sorted by source then target.

    Examples:
        >>> complete_edge_index(2)
        tensor([[0, 0, 1, 1],
                [0, 1, 0, 1]])
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    adj = torch.ones(num_nodes, num_nodes, dtype=torch.bool, device=device)
    if not self_loops:
        adj.fill_diagonal_(False)
    return adj.nonzero().t().contiguous()


class PatchGraphBuilder:
    r"""Turn clip feature maps into horizontal-patch graphs (STGCN, CVPR 2020, sec. 3.1).

    Each frame's map ``F_t`` of shape ``(C, H, W)`` is cut into ``P`` horizontal
    stripes of ``H / P`` rows; each stripe is average-pooled into a node feature
    :math:`x_i \in \mathbb{R}^C`. Two topologies are offered:

    * ``"temporal"``: one complete graph (self-loops included) over all
      ``T * P`` patches of a clip, the temporal branch's graph;
    * ``"spatial"``: one complete graph per frame over its ``P`` patches, the
      spatial branch's graph.

    The dense form is ``(B, T*P, C)`` (frame-major node order); the sparse form is
    a PyG :class:`~torch_geometric.data.Batch` with node attributes ``x``,
    ``frame`` (0..T-1), ``part`` (0..P-1), ``clip`` (0..B-1) and ``batch`` (the
    graph of each node: the clip for ``"temporal"``, ``clip * T + frame`` for
    ``"spatial"``). :meth:`to_dense` inverts :meth:`to_batch` exactly.

    Args:
        num_patches (int, optional): number of horizontal stripes ``P`` per
            frame. ``H`` must be divisible by ``P``; we raise rather than pool
            uneven stripes. (default: :obj:`4`, our choice; the paper's value is
            not stated)

    Shapes:
        - **input:** feature maps :math:`(B, T, C, H, W)`
        - **output:** :meth:`dense` :math:`(B, T \cdot P, C)`;
          :meth:`__call__` a ``Batch`` with :math:`B \cdot T \cdot P` nodes.

    Raises:
        ValueError: feature maps not 5-D, or ``H`` not divisible by ``P``.

    Examples:
        >>> builder = PatchGraphBuilder(num_patches=4)
        >>> fmap = torch.randn(2, 3, 8, 16, 8)          # B=2, T=3, C=8
        >>> builder.dense(fmap).shape
        torch.Size([2, 12, 8])
        >>> builder(fmap).num_graphs, builder(fmap, graph="spatial").num_graphs
        (2, 6)
    """

    def __init__(self, num_patches: int = 4) -> None:
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        self.num_patches = num_patches

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_patches={self.num_patches})"

    def _check(self, feature_maps: Tensor) -> None:
        if feature_maps.dim() != 5:
            raise ValueError(
                "expected feature maps of shape (B, T, C, H, W), "
                f"got {tuple(feature_maps.shape)}"
            )
        H = feature_maps.size(3)
        if H % self.num_patches != 0:
            raise ValueError(
                f"feature map height {H} is not divisible by num_patches={self.num_patches}; "
                "choose an input height or num_patches so that they divide"
            )

    def dense(self, feature_maps: Tensor) -> Tensor:
        """Patch node features, ``(B, T, C, H, W) -> (B, T*P, C)``, frame-major."""
        self._check(feature_maps)
        B, T, C, H, W = feature_maps.shape
        P = self.num_patches
        cells = (H // P) * W
        # sum, then divide the small result: the backward of mean would divide a gradient of
        # the whole feature map, which the sum's backward only expands
        x = feature_maps.reshape(B, T, C, P, cells).sum(dim=-1)  # (B, T, C, P)
        return x.transpose(2, 3).reshape(B, T * P, C) / cells  # (B, T*P, C)

    def __call__(self, feature_maps: Tensor, graph: str = "temporal") -> Batch:
        """Patch graphs as a PyG ``Batch``; see the class docstring for ``graph``."""
        self._check(feature_maps)
        return self.to_batch(self.dense(feature_maps), feature_maps.size(1), graph=graph)

    def to_batch(self, x: Tensor, num_frames: int, graph: str = "temporal") -> Batch:
        """Wrap dense patch features ``(B, T*P, C)`` as a PyG ``Batch``.

        Raises:
            ValueError: unknown ``graph`` or ``x.size(1) != num_frames * P``.
        """
        if graph not in _GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; choose one of: {', '.join(_GRAPHS)}")
        if x.dim() != 3 or x.size(1) != num_frames * self.num_patches:
            raise ValueError(
                f"expected patch features of shape (B, {num_frames}*{self.num_patches}, C), "
                f"got {tuple(x.shape)}"
            )
        B, N, C = x.shape
        T, P = num_frames, self.num_patches
        dev = x.device
        frame = torch.arange(T, device=dev).repeat_interleave(P)  # (N,)
        part = torch.arange(P, device=dev).repeat(T)  # (N,)
        if graph == "temporal":
            edge_index = complete_edge_index(N, device=dev)
            data_list = [
                Data(x=x[b], edge_index=edge_index, frame=frame, part=part,
                     clip=torch.full((N,), b, device=dev))
                for b in range(B)
            ]
        else:
            edge_index = complete_edge_index(P, device=dev)
            xs = x.reshape(B * T, P, C)
            data_list = [
                Data(x=xs[g], edge_index=edge_index, frame=frame[g % T * P: g % T * P + P],
                     part=part[:P], clip=torch.full((P,), g // T, device=dev))
                for g in range(B * T)
            ]
        return Batch.from_data_list(data_list)

    @staticmethod
    def to_dense(batch: Batch) -> Tensor:
        """Inverse of :meth:`to_batch`: node features back to ``(B, T*P, C)``."""
        x, _ = to_dense_batch(batch.x, batch.clip)
        return x
