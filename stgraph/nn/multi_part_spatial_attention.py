r"""DRSTA's multiple spatial attention models and their Hellinger diversity term.

Li, Bak, Carr and Wang, "Diversity Regularized Spatiotemporal Attention for
Video-based Person Re-identification", CVPR 2018, sec. 3.2 (multiple spatial
attention models) and sec. 3.3 (diversity regularisation).
https://openaccess.thecvf.com/content_cvpr_2018/html/Li_Diversity_Regularized_Spatiotemporal_CVPR_2018_paper.html
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MultiPartSpatialAttention", "hellinger_diversity"]

_REDUCTIONS = ("mean", "sum", "none")


class MultiPartSpatialAttention(nn.Module):
    r"""K spatial attention models over the cells of a feature map (DRSTA, CVPR 2018).

    For a frame :math:`n` whose map has :math:`L = h w` cells with features
    :math:`\mathbf{x}_{n,l} \in \mathbb{R}^C`, attention model :math:`k` scores
    every cell with a two-layer perceptron, normalises the scores over the
    cells and pools the cells with them:

    .. math::
        e_{n,k,l} = \mathbf{w}'^{\top}_k \,
        \mathrm{ReLU}\big(W_k \mathbf{x}_{n,l} + \mathbf{b}_k\big), \qquad
        s_{n,k,l} = \frac{\exp e_{n,k,l}}{\sum_{j=1}^{L} \exp e_{n,k,j}}, \qquad
        \mathbf{x}_{n,k} = \sum_{l=1}^{L} s_{n,k,l}\, \mathbf{x}_{n,l}

    with :math:`W_k \in \mathbb{R}^{d \times C}` (``hidden_channels`` :math:`d`).
    The paper's scalar bias :math:`b'_k` is left out: the softmax over
    :math:`l` is invariant to it, so it would never receive a gradient.

    The :math:`K` models run as two convolutions, no loop over parts: a 1x1
    convolution :math:`C \to K d` (the :math:`W_k` stacked) and a grouped
    1x1 convolution :math:`K d \to K` with :math:`K` groups (the
    :math:`\mathbf{w}'_k`).

    With ``shared=True``, the layer of the authors' partial code instead
    (``SattentionNet`` in ``multiple_spatial_attention.py`` of
    github.com/ShuangLI59/Diversity-Regularized-Spatiotemporal-Attention): one
    1x1 convolution :math:`C \to d` shared by the :math:`K` models, batch norm,
    ReLU, a 1x1 convolution :math:`d \to K`, and a second batch norm over the
    :math:`K` score channels (the code's ``bn2``), i.e.

    .. math::
        e_{n,k,l} = \mathrm{BN}_k\Big(\mathbf{w}'^{\top}_k
        \mathrm{ReLU}\big(\mathrm{BN}(W \mathbf{x}_{n,l})\big)\Big)

    (no convolution biases: the first BN's shift replaces :math:`\mathbf{b}`).
    The score BN is not inert under the softmax over the cells: it divides
    model :math:`k`'s scores by their standard deviation (over the batch and
    the cells in training, the running one in eval) and multiplies them by a
    learned :math:`\gamma_k`, a learned per-part temperature. Its shift
    :math:`\beta_k` is, like the subtracted mean and :math:`b'_k`, a constant
    over the cells that the softmax ignores: the parameter is kept, so the
    layer holds the authors' parameters one for one, but frozen at 0
    (``requires_grad=False``, it could never get a gradient). This variant has
    :math:`K` times fewer parameters in the first layer. The default is the
    paper's equation (``shared=False``): per-model :math:`W_k` is what sec. 3.2
    writes, and the authors' code is partial (it never released the temporal
    attention).

    Ours: the default width :math:`d = 64` (the paper gives none; 64 is the
    width of the authors' code) and the default :math:`K = 6` (the paper's
    figures show 6 models; the authors' code uses 3).

    Args:
        in_channels (int): feature channels :math:`C`.
        num_parts (int): attention models :math:`K`. (default: :obj:`6`)
        hidden_channels (int): hidden width :math:`d` of each model (of the
            shared layer with ``shared=True``). (default: :obj:`64`)
        shared (bool): the authors' shared variant (see above). (default: :obj:`False`)

    Shapes:
        - **input:** feature maps :math:`(*, C, h, w)`, e.g. :math:`(B, T, C, h, w)`
        - **output:** ``(parts, attention)``: part features :math:`(*, K, C)`
          and the attention maps :math:`s` :math:`(*, K, h, w)`, each map
          non-negative and summing to 1 over its :math:`h w` cells

    Raises:
        ValueError: a non-positive ``in_channels`` / ``num_parts`` /
            ``hidden_channels``, or input that is not :math:`(*, C, h, w)` with
            this layer's :math:`C`.

    Examples:
        >>> layer = MultiPartSpatialAttention(16, num_parts=3, hidden_channels=8)
        >>> parts, s = layer(torch.randn(2, 4, 16, 8, 4))  # (B, T, C, h, w)
        >>> parts.shape, s.shape
        (torch.Size([2, 4, 3, 16]), torch.Size([2, 4, 3, 8, 4]))
    """

    def __init__(self, in_channels: int, num_parts: int = 6, hidden_channels: int = 64,
                 shared: bool = False) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_parts", num_parts),
                            ("hidden_channels", hidden_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.num_parts = num_parts
        self.hidden_channels = hidden_channels
        self.shared = bool(shared)
        K, d = num_parts, hidden_channels
        if self.shared:
            self.hidden = nn.Conv2d(in_channels, d, 1, bias=False)  # shared W
            self.bn = nn.BatchNorm2d(d)
            self.score = nn.Conv2d(d, K, 1, bias=False)  # the w'_k as rows
            # the authors' bn2: a learned per-part temperature gamma_k; its shift beta_k is
            # constant over the cells, ignored by the softmax, so it stays frozen at 0
            self.score_bn = nn.BatchNorm2d(K)
            self.score_bn.bias.requires_grad_(False)
        else:
            self.hidden = nn.Conv2d(in_channels, K * d, 1)  # W_k, b_k of the K models stacked
            self.register_module("bn", None)
            self.score = nn.Conv2d(K * d, K, 1, groups=K, bias=False)  # w'_k on group k
            self.register_module("score_bn", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.hidden.reset_parameters()
        if self.bn is not None:
            self.bn.reset_parameters()
        self.score.reset_parameters()
        if self.score_bn is not None:
            self.score_bn.reset_parameters()  # gamma = 1, beta = 0 (frozen)

    def scores(self, x: Tensor) -> Tensor:
        r"""The unnormalised scores :math:`e`: :math:`(*, C, h, w) \to (*, K, h, w)`."""
        self._check(x)
        lead = x.shape[:-3]
        h = self.hidden(x.reshape(-1, *x.shape[-3:]))  # (N, K d, h, w) or (N, d, h, w)
        if self.bn is not None:
            h = self.bn(h)
        e = self.score(torch.relu(h))  # (N, K, h, w)
        if self.score_bn is not None:
            e = self.score_bn(e)  # per-part temperature (shared mode)
        return e.reshape(*lead, *e.shape[1:])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Part features and attention maps; see the class docstring."""
        e = self.scores(x)  # (*, K, h, w)
        s = torch.softmax(e.flatten(-2), dim=-1)  # (*, K, L): softmax over the cells
        parts = torch.einsum("...kl,...cl->...kc", s, x.flatten(-2))  # (*, K, C)
        return parts, s.view_as(e)

    def _check(self, x: Tensor) -> None:
        if x.dim() < 3 or x.size(-3) != self.in_channels:
            raise ValueError(f"expected feature maps of shape (*, {self.in_channels}, h, w) "
                             f"(C = in_channels), got {tuple(x.shape)}")

    def __repr__(self) -> str:
        extra = ", shared=True" if self.shared else ""
        return (f"{self.__class__.__name__}({self.in_channels}, num_parts={self.num_parts}, "
                f"hidden_channels={self.hidden_channels}{extra})")


def hellinger_diversity(attention: Tensor, reduction: str = "mean") -> Tensor:
    r"""DRSTA's diversity regulariser of :math:`K` attention maps (CVPR 2018, sec. 3.3).

    With the :math:`K` maps of frame :math:`n` as the rows of
    :math:`S_n \in \mathbb{R}^{K \times L}` (each a distribution over the
    :math:`L` cells) and :math:`Q_n = \sqrt{S_n}` elementwise,

    .. math::
        R_n = \big\lVert Q_n Q_n^{\top} - I_K \big\rVert_F^2
        = \sum_{i \ne j} \big(1 - H^2(\mathbf{s}_{n,i}, \mathbf{s}_{n,j})\big)^2

    where :math:`H` is the Hellinger distance,
    :math:`H^2(\mathbf{p}, \mathbf{q}) = 1 - \sum_l \sqrt{p_l q_l}` (the
    diagonal of :math:`Q_n Q_n^\top` is 1 for maps that sum to 1). :math:`R_n`
    is 0 for maps on disjoint cells and :math:`K(K-1)` for :math:`K`
    identical maps. The paper adds :math:`R` with a coefficient to the loss
    without saying how it combines the frames of a batch; ``"mean"`` (the
    default, ours) averages :math:`R_n` over every leading index (frames and
    clips), so the term does not grow with the batch or the clip length.

    The square root is taken of :math:`s` clamped at the smallest normal
    number of its dtype, so a cell whose softmax underflowed to 0 gets a
    finite (zero) gradient instead of :math:`1/(2\sqrt{0})`. In float32 that
    number is :math:`1.2 \cdot 10^{-38}`: a clamped cell adds at most
    :math:`\sqrt{1.2 \cdot 10^{-38}} \approx 1.1 \cdot 10^{-19}` to an entry
    of :math:`Q_n Q_n^\top` (less in float64). float16 and bfloat16 maps are
    upcast to float32 first and the result is float32: float16's smallest
    normal number, :math:`6.1 \cdot 10^{-5}`, has the square root
    :math:`0.0078`, which would make :math:`R_n` of disjoint one-hot maps
    visibly non-zero (0.0015 for :math:`K = 3` maps on 4 cells), and
    bfloat16's 8-bit mantissa would blur the sums of square roots.

    Args:
        attention (Tensor): maps :math:`(*, K, L)`, non-negative, each row summing
            to 1; flatten the cells of :math:`(*, K, h, w)` maps first
            (``attention.flatten(-2)``).
        reduction (str): ``"mean"`` or ``"sum"`` over the leading dimensions, or
            ``"none"`` for :math:`R_n` of shape :math:`(*)`. (default: ``"mean"``)

    Returns:
        Tensor: a scalar (``"mean"`` / ``"sum"``) or :math:`(*)` (``"none"``), in
        float32 for float16 / bfloat16 input, else in the input's dtype.

    Raises:
        ValueError: ``attention`` with fewer than 2 dimensions or no cells, or an
            unknown ``reduction``.

    Examples:
        >>> round(hellinger_diversity(torch.eye(3).expand(5, 3, 3)).item(), 6)  # disjoint
        0.0
        >>> round(hellinger_diversity(torch.full((2, 4, 6), 1 / 6)).item(), 6)  # K(K-1)
        12.0
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of: "
                         f"{', '.join(_REDUCTIONS)}")
    if attention.dim() < 2 or attention.size(-1) == 0:
        raise ValueError(f"expected attention maps of shape (*, K, L) (flatten the cells of "
                         f"(*, K, h, w) maps first), got {tuple(attention.shape)}")
    if attention.dtype in (torch.float16, torch.bfloat16):
        attention = attention.float()  # see the docstring: the clamp and the sums in float32
    q = attention.clamp_min(torch.finfo(attention.dtype).tiny).sqrt()  # (*, K, L)
    gram = q @ q.transpose(-1, -2)  # (*, K, K): 1 - H^2 of every pair
    eye = torch.eye(q.size(-2), dtype=q.dtype, device=q.device)
    r = (gram - eye).pow(2).sum(dim=(-2, -1))  # (*,)
    if reduction == "mean":
        return r.mean()
    if reduction == "sum":
        return r.sum()
    return r
