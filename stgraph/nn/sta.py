r"""STA's parameter-free spatial-temporal attention and its inter-frame regularisation.

Fu, Wang, Wei and Huang, "STA: Spatial-Temporal Attention for Large-Scale Video-based
Person Re-Identification", AAAI 2019 (arXiv:1811.04129), sec. "Spatial-Temporal
Attention" and "Inter-Frame Regularization".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stgraph.nn._checks import check_clip_maps

__all__ = [
    "SpatialTemporalAttention",
    "STAOutput",
    "inter_frame_regularization",
    "sta_row_blocks",
]

_PAIRS = ("all", "first_last")
_REDUCTIONS = ("mean", "none")


def sta_row_blocks(height: int, num_blocks: int, device: torch.device | None = None) -> Tensor:
    r"""The horizontal block of every feature-map row: row :math:`r` goes to block
    :math:`\lfloor r K / h \rfloor`.

    A partition of the :math:`h` rows into :math:`K` blocks of consecutive rows,
    each :math:`\lfloor h/K \rfloor` or :math:`\lceil h/K \rceil` rows high, so
    every block holds at least one row when :math:`K \le h`. When :math:`K` divides
    :math:`h` (the paper's :math:`h = 16`, :math:`K = 4`) these are the equal
    blocks of the paper; the split for other sizes is ours.

    Args:
        height (int): rows :math:`h` of the feature map.
        num_blocks (int): blocks :math:`K`, :math:`1 \le K \le h`.
        device (torch.device, optional): device of the result.

    Returns:
        Long tensor :math:`(h,)` with values in :math:`0, \dots, K - 1`,
        non-decreasing.

    Raises:
        ValueError: ``num_blocks < 1`` or ``num_blocks > height``.

    Examples:
        >>> sta_row_blocks(16, 4).tolist()
        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
        >>> sta_row_blocks(6, 4).tolist()  # blocks of 2, 1, 2 and 1 rows
        [0, 0, 1, 2, 2, 3]
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if num_blocks > height:
        raise ValueError(f"num_blocks={num_blocks} horizontal blocks need feature maps of at "
                         f"least {num_blocks} rows, got h={height}; lower num_blocks or use "
                         "a larger input / smaller backbone stride")
    return torch.arange(height, device=device) * num_blocks // height


class STAOutput(NamedTuple):
    r"""What :class:`SpatialTemporalAttention` returns (a named tuple).

    Attributes:
        scores (Tensor): :math:`S`, :math:`(B, T, K)`; column :math:`k` of a clip
            sums to 1 over the :math:`T` frames.
        discriminative (Tensor): the discriminative map :math:`(B, C, h, w)`, block
            :math:`k` copied from the frame :attr:`frames` ``[:, k]``.
        global_map (Tensor): the global map :math:`(B, C, h, w)`, block :math:`k`
            the :math:`S(\cdot, k)`-weighted sum of the frames' block :math:`k`.
        spatial (Tensor): the spatial attention :math:`g`, :math:`(B, T, h, w)`,
            each frame's map summing to 1 over :math:`(h, w)`.
        frames (Tensor): long :math:`(B, K)`, the frame :math:`\arg\max_n S(n, k)`
            chosen for each block (the earliest frame on ties).
    """

    scores: Tensor
    discriminative: Tensor
    global_map: Tensor
    spatial: Tensor
    frames: Tensor


class SpatialTemporalAttention(nn.Module):
    r"""STA's spatial-temporal attention (Fu et al., AAAI 2019): a 2-D score matrix
    over frames and horizontal blocks, and two clip-level feature maps. No parameters.

    For the feature maps :math:`f_n \in \mathbb{R}^{C \times h \times w}` of the
    :math:`T` frames of a clip (:math:`n = 1, \dots, T`), the spatial attention of
    each frame is its channel energy, normalised over the cells:

    .. math::
        g_n(i, j) = \frac{\sum_{d} f_n(d, i, j)^2 + \epsilon}
        {\sum_{i', j'} \big(\sum_{d} f_n(d, i', j')^2 + \epsilon\big)} .

    :math:`g_n` and :math:`f_n` are cut into :math:`K` horizontal blocks
    (:func:`sta_row_blocks`); the block score and the temporal normalisation are

    .. math::
        s_{n,k} = \sum_{(i, j) \in \text{block } k} g_n(i, j), \qquad
        S(n, k) = \frac{s_{n,k}}{\sum_{n'} s_{n',k}} .

    The discriminative map takes each block from the frame that scores highest on
    it, the global map weights every frame's block by its score:

    .. math::
        X_1[k] = f_{n_k^*, k}, \quad n_k^* = \arg\max_n S(n, k), \qquad
        X_2[k] = \sum_n S(n, k)\, f_{n,k} .

    Gradients flow through :math:`S` (and hence :math:`g`) into :math:`f` in the
    global map; the choice :math:`n_k^*` is piecewise constant, so the
    discriminative map passes gradient only to the chosen blocks. :math:`S` and
    :math:`X_2` do not depend on the order of the frames, nor does :math:`X_1`
    except on ties (the earliest frame wins, as :func:`torch.argmax`).

    Departures and choices (ours): the paper writes the numerator of :math:`g` as
    :math:`\lVert \sum_d f_n(h, w, d)^2 \rVert_2`, the norm of a non-negative
    scalar, i.e. the sum of squares used here (not the plain L2 norm of the
    channel vector that a public re-implementation uses); :math:`\epsilon`
    (default :math:`10^{-12}`, must be positive) keeps an all-zero frame's
    :math:`g` uniform instead of 0/0; :math:`g` and :math:`S` are computed in
    float32 at least (half-precision maps are upcast, the sum of 2048 squares
    overflows float16);
    :math:`K` need not divide :math:`h` (near-equal blocks, :func:`sta_row_blocks`).

    Args:
        num_blocks (int): horizontal blocks :math:`K` (4 in common use; the paper
            leaves it open). (default: :obj:`4`)
        eps (float): :math:`\epsilon > 0` added to every cell's energy (0 would
            give NaN for an all-zero frame). (default: :obj:`1e-12`)

    Shapes:
        - **input:** feature maps :math:`(B, T, C, h, w)` with :math:`h \ge K`
        - **output:** :class:`STAOutput` ``(scores (B, T, K), discriminative
          (B, C, h, w), global_map (B, C, h, w), spatial (B, T, h, w),
          frames (B, K))``

    Raises:
        ValueError: ``num_blocks < 1`` or ``eps <= 0`` (constructor); feature maps
            that are not 5-D, have no frame / channel / cell, or fewer than
            :math:`K` rows.

    Examples:
        >>> sta = SpatialTemporalAttention(num_blocks=2)
        >>> out = sta(torch.rand(3, 4, 8, 4, 2))
        >>> out.scores.shape, out.global_map.shape, out.frames.shape
        (torch.Size([3, 4, 2]), torch.Size([3, 8, 4, 2]), torch.Size([3, 2]))
        >>> bool(torch.allclose(out.scores.sum(dim=1), torch.ones(3, 2)))
        True
    """

    def __init__(self, num_blocks: int = 4, eps: float = 1e-12) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if not 0 < eps < float("inf"):
            raise ValueError(f"eps must be finite and > 0 (an all-zero frame would give "
                             f"0/0), got {eps}")
        self.num_blocks = int(num_blocks)
        self.eps = float(eps)

    def spatial_attention(self, feature_maps: Tensor) -> Tensor:
        r"""The normalised channel energy :math:`g`: ``(B, T, C, h, w) -> (B, T, h, w)``.

        In float32 for half-precision input, else in the input's dtype.

        Raises:
            ValueError: feature maps that are not 5-D or have no frame / channel / cell.
        """
        check_clip_maps(feature_maps)
        f = feature_maps
        if f.dtype in (torch.float16, torch.bfloat16):
            f = f.float()
        energy = f.pow(2).sum(dim=2) + self.eps  # (B, T, h, w)
        return energy / energy.sum(dim=(-2, -1), keepdim=True)

    def forward(self, feature_maps: Tensor) -> STAOutput:
        check_clip_maps(feature_maps)
        B, T, C, h, w = feature_maps.shape
        rows = sta_row_blocks(h, self.num_blocks, device=feature_maps.device)  # (h,)
        g = self.spatial_attention(feature_maps)  # (B, T, h, w)
        blocks = F.one_hot(rows, self.num_blocks).to(g.dtype)  # (h, K)
        s = torch.einsum("bthw,hk->btk", g, blocks)  # (B, T, K) block sums
        scores = s / s.sum(dim=1, keepdim=True)  # (B, T, K) over the frames
        frames = scores.argmax(dim=1)  # (B, K), first maximum on ties
        chosen = F.one_hot(frames, T).transpose(1, 2).to(g.dtype)  # (B, T, K)
        # per-row frame weights: one-hot for X_1, S for X_2
        weights = torch.stack((chosen[..., rows], scores[..., rows]), dim=1)  # (B, 2, T, h)
        maps = torch.einsum("bsth,btchw->bschw", weights.to(feature_maps.dtype),
                            feature_maps)  # (B, 2, C, h, w)
        return STAOutput(scores, maps[:, 0], maps[:, 1], g, frames)

    def extra_repr(self) -> str:
        return f"num_blocks={self.num_blocks}"


def inter_frame_regularization(spatial: Tensor, pairs: str = "all", weight: float = 1.0,
                               reduction: str = "mean") -> Tensor:
    r"""STA's inter-frame regularisation :math:`\lambda \lVert g_i - g_j \rVert_F` of a clip.

    .. math::
        \mathrm{Reg} = \lambda\, \frac{1}{|\mathcal{P}|} \sum_{(i, j) \in \mathcal{P}}
        \lVert g_i - g_j \rVert_F, \qquad
        \lVert g_i - g_j \rVert_F = \Big(\sum_{h, w} \big(g_i(h, w) - g_j(h, w)\big)^2
        \Big)^{1/2}

    The paper regularises "two frames :math:`i, j` of a clip" without saying
    which (our sources do not show how they are picked); the pair set
    :math:`\mathcal{P}` here is deterministic (ours):

    * ``"all"``: every pair :math:`i < j`. Its mean is the expectation over a
      uniformly drawn pair, without the sampling noise, and, like :math:`S`, it
      does not depend on the order of the frames.
    * ``"first_last"``: the single pair :math:`(1, T)`.

    A one-frame clip has no pair: its regulariser is 0.

    Args:
        spatial (Tensor): per-frame spatial attention :math:`g`, :math:`(B, T, h, w)`
            (:attr:`STAOutput.spatial`); any non-negative maps work.
        pairs (str): ``"all"`` or ``"first_last"``. (default: ``"all"``)
        weight (float): :math:`\lambda`. (default: :obj:`1.0`)
        reduction (str): ``"mean"`` over the clips (a scalar) or ``"none"``
            (one value per clip, :math:`(B,)`). (default: ``"mean"``)

    Returns:
        Tensor, a scalar or :math:`(B,)`.

    Raises:
        ValueError: ``spatial`` not 4-D, or an unknown ``pairs`` / ``reduction``.

    Examples:
        >>> g = torch.zeros(1, 2, 2, 2)
        >>> g[0, 0, 0, 0] = g[0, 1, 1, 1] = 1.0  # two one-hot maps on different cells
        >>> inter_frame_regularization(g)  # sqrt(1 + 1)
        tensor(1.4142)
    """
    if spatial.dim() != 4:
        raise ValueError(f"expected spatial attention of shape (B, T, h, w), "
                         f"got {tuple(spatial.shape)}")
    if pairs not in _PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}; choose one of: {', '.join(_PAIRS)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; "
                         f"choose one of: {', '.join(_REDUCTIONS)}")
    B, T = spatial.shape[:2]
    flat = spatial.flatten(2)  # (B, T, h*w)
    if T < 2:
        reg = flat.sum(dim=(1, 2)) * 0.0  # (B,) zeros, still attached to the graph
    else:
        if pairs == "all":
            i, j = torch.triu_indices(T, T, offset=1, device=spatial.device)
        else:
            i = torch.tensor([0], device=spatial.device)
            j = torch.tensor([T - 1], device=spatial.device)
        dist = torch.linalg.vector_norm(flat[:, i] - flat[:, j], dim=-1)  # (B, P)
        reg = dist.mean(dim=1)  # (B,)
    reg = weight * reg
    return reg.mean() if reduction == "mean" else reg
