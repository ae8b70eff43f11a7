r"""Refining recurrent unit (RRU): gated refinement of a clip's feature maps over time.

Liu, Ma, Yang, Yi, Hu, Zhang and Luo, "Spatial and Temporal Mutual Promotion for
Video-based Person Re-identification", AAAI 2019, sec. 3.2 and fig. 3.
https://arxiv.org/abs/1812.10305 (official code: github.com/yolomax/rru-reid).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stgraph.nn._checks import check_clip_maps
from stgraph.nn._export import adaptive_avg_pool2d

__all__ = ["RRU", "RRUOutput"]


class RRUOutput(NamedTuple):
    """What :class:`RRU` returns.

    Attributes:
        states (Tensor): refined maps :math:`S_t`, :math:`(B, T, C, h, w)`.
        gates (Tensor, optional): update gates :math:`z_t`, :math:`(B, T, C, h, w)`, with
            :math:`z_0 \\equiv 1` (:math:`S_0 = X_0` is the update with the whole frame
            taken); :obj:`None` when called with ``return_gates=False``.
    """

    states: Tensor
    gates: Tensor | None


class RRU(nn.Module):
    r"""Refining recurrent unit: each frame's map refined by the past frames through a gate.

    For a clip of feature maps :math:`X_0, \dots, X_{T-1} \in \mathbb{R}^{C \times h
    \times w}`, with :math:`S_0 = X_0` and for :math:`t \ge 1`

    .. math::
        U_t = \mathrm{ReLU}\big(\mathrm{BN}(W_u [S_{t-1} - X_t \,;\, X_t - X_{t-1}])\big)
        \in \mathbb{R}^{D \times h \times w}

    .. math::
        a^c_t = W_c \,\mathrm{GAP}(U_t) \in \mathbb{R}^C, \qquad
        a^s_t = \mathcal{R}_{h \times w}\Big(W_2\, \mathrm{ReLU}\big(W_1\,
        \mathcal{R}_{G}\big(\tfrac{1}{D} \textstyle\sum_d U_{t,d}\big)\big)\Big)
        \in \mathbb{R}^{h \times w}

    .. math::
        z_t = \sigma\big(a^c_t \otimes a^s_t\big) \in (0, 1)^{C \times h \times w}, \qquad
        S_t = (1 - z_t) \odot S_{t-1} + z_t \odot X_t

    with :math:`W_u` a 1x1 convolution :math:`2C \to D` (the transition layer, no bias,
    BN :math:`\epsilon = 10^{-3}` as in the official code), :math:`W_c` a linear map
    :math:`D \to C` (the official 1x1 convolution after an 8x8 average pool) and
    :math:`W_1, W_2` the spatial attention, an MLP over the :math:`G = G_h G_w` positions
    of a fixed grid (:math:`G \to` ``spatial_hidden`` :math:`\to G`, no biases).
    :math:`[S_{t-1} - X_t]` models the appearance difference, :math:`[X_t - X_{t-1}]`
    the motion context. The weights are shared over time; the loop over frames is the
    recurrence itself (each step needs :math:`S_{t-1}`). The motion half of
    :math:`W_u` is applied to all frames in one call before the loop (the same numbers,
    half the work inside it).

    **The spatial attention on any map size (ours).** The official layer is a Conv2d
    with an 8x8 kernel on the 8x8 map of Inception-v3 (one output position), then a
    1x1 convolution to 64 channels reshaped to 8x8: an MLP over the 64 positions, which
    exists only for 8x8 maps. Ours keeps that MLP on a fixed grid of ``spatial_grid``
    :math:`= (G_h, G_w)` positions (default :math:`(8, 8)`): the channel-mean map is
    area-resampled to the grid (:math:`\mathcal{R}_G`, adaptive average pooling,
    :func:`~torch.nn.functional.adaptive_avg_pool2d`: each grid position is the mean
    of the map cells its bin overlaps, whether the map is larger or smaller than the
    grid), and the MLP's output back to :math:`h \times w` the same way
    (:math:`\mathcal{R}_{h \times w}`). So

    * on a map of exactly the grid's size both resamplings are the identity and the
      layer *is* the MLP over the :math:`hw` positions (on 8x8 maps: the official
      layer, weight for weight; pass ``spatial_grid=(16, 8)`` for the exact MLP over
      the positions of ResNet-50's 256 x 128 maps);
    * one module works on every map size, with parameters fixed at construction (no
      lazily built layer, so optimisers, checkpoints and the frozen-feature protocol
      see all parameters from the start), position-aware like the official layer;
    * on larger maps the spatial attention is coarser than the map (blocks of
      :math:`\lceil h / G_h \rceil \times \lceil w / G_w \rceil` cells share a value
      up to the averaging); on smaller maps every cell reaches the MLP, through the
      area-resampled (adaptive average pooled) grid positions whose bins overlap it.

    The alternatives were a Linear over the :math:`hw` positions built for one map
    size (the CLI does not know the map size when it builds the model, and a lazily
    built layer is missing from an optimiser made before the first batch) and a small
    convolution (works on any size, but is translation-equivariant: the official layer
    can prefer positions, e.g. the centre of the body).

    **Frame 0 (as the official code, one difference):** :math:`S_0 = X_0` and no gate is
    computed; the official loop also evaluates the gate at :math:`t = 0` on an all-zero
    input (both differences vanish) whose value cannot change :math:`S_0`, but whose
    batch-norm call shifts the running statistics; we skip it. The returned gates have
    :math:`z_0 \equiv 1`.

    **Forcing the gate (for tests and ablations):** ``forward(x, gate=g)`` skips the gate
    network and uses :math:`z_t = g` for every :math:`t \ge 1`: ``gate=1`` returns
    :math:`S_t = X_t`, ``gate=0`` returns :math:`S_t = X_0` (exactly: the update is
    :func:`torch.lerp`, exact at both ends).

    Args:
        in_channels (int): channels :math:`C` of the maps.
        hidden_channels (int): channels :math:`D` of the transition layer (the
            official 256). (default: :obj:`256`)
        spatial_grid ((int, int)): grid :math:`(G_h, G_w)` of the spatial attention's
            MLP (ours, see above; the official layer is :math:`(8, 8)`).
            (default: :obj:`(8, 8)`)
        spatial_hidden (int): hidden width of the spatial attention's MLP (the
            official 128). (default: :obj:`128`)

    Shapes:
        - **input:** maps :math:`X` :math:`(B, T, C, h, w)`, any :math:`T \ge 1`,
          :math:`h, w \ge 1`
        - **output:** :class:`RRUOutput`: ``states`` :math:`(B, T, C, h, w)`, ``gates``
          :math:`(B, T, C, h, w)` or :obj:`None`

    Raises:
        ValueError: non-positive sizes in the constructor; maps that are not 5-D or
            have other than ``in_channels`` channels; a forced ``gate`` that does not
            broadcast to :math:`(B, C, h, w)`.

    Examples:
        >>> import torch
        >>> rru = RRU(16, hidden_channels=8)
        >>> out = rru(torch.randn(2, 3, 16, 4, 2))
        >>> out.states.shape, out.gates.shape
        (torch.Size([2, 3, 16, 4, 2]), torch.Size([2, 3, 16, 4, 2]))
        >>> x = torch.randn(2, 3, 16, 4, 2)
        >>> bool((rru(x, gate=0.0).states == x[:, :1]).all())
        True
    """

    def __init__(self, in_channels: int, hidden_channels: int = 256,
                 spatial_grid: tuple[int, int] = (8, 8), spatial_hidden: int = 128) -> None:
        super().__init__()
        spatial_grid = tuple(int(g) for g in spatial_grid)
        if len(spatial_grid) != 2 or min(spatial_grid) < 1:
            raise ValueError(f"spatial_grid must be two positive ints (G_h, G_w), "
                             f"got {spatial_grid}")
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("spatial_hidden", spatial_hidden)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.spatial_grid = spatial_grid
        self.spatial_hidden = spatial_hidden
        positions = spatial_grid[0] * spatial_grid[1]
        # transition: 1x1 conv over [S_{t-1} - X_t ; X_t - X_{t-1}] + BN + ReLU
        self.transition = nn.Conv2d(2 * in_channels, hidden_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden_channels, eps=1e-3)
        self.channel_attention = nn.Linear(hidden_channels, in_channels, bias=False)
        self.spatial_attention = nn.Sequential(
            nn.Linear(positions, spatial_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(spatial_hidden, positions, bias=False),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.transition.reset_parameters()
        self.bn.reset_parameters()
        self.channel_attention.reset_parameters()
        for layer in self.spatial_attention:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def attention(self, u: Tensor) -> tuple[Tensor, Tensor]:
        r"""Channel and spatial attention of transition outputs ``u`` :math:`(N, D, h, w)`.

        Returns:
            ``(a_c (N, C), a_s (N, h, w))``, unbounded scores; the gate is
            :math:`\sigma(a_c \otimes a_s)`.

        Raises:
            ValueError: ``u`` that is not 4-D :math:`(N, D, h, w)` with
                :math:`D` = ``hidden_channels``.
        """
        if u.dim() != 4 or u.size(1) != self.hidden_channels:
            raise ValueError(f"expected transition outputs u of shape (N, D, h, w) with "
                             f"D = hidden_channels = {self.hidden_channels}, "
                             f"got {tuple(u.shape)}")
        N, _, h, w = u.shape
        a_c = self.channel_attention(u.mean(dim=(2, 3)))  # (N, C)
        m = u.mean(dim=1, keepdim=True)  # (N, 1, h, w) channel mean
        grid = self.spatial_grid
        if (h, w) != grid:
            m = adaptive_avg_pool2d(m, grid)  # (N, 1, G_h, G_w)
        a_s = self.spatial_attention(m.flatten(1)).view(N, 1, *grid)
        if (h, w) != grid:
            a_s = adaptive_avg_pool2d(a_s, (h, w))
        return a_c, a_s[:, 0]

    def gate(self, s_prev: Tensor, x_t: Tensor, x_prev: Tensor) -> Tensor:
        r"""The update gate :math:`z_t = g(S_{t-1}, X_t, X_{t-1})` of one step, each
        :math:`(N, C, h, w)` -> :math:`(N, C, h, w)` in :math:`(0, 1)`.

        The plain form of what :meth:`forward` computes inside its loop (which applies
        the motion half of the transition to all frames at once).

        Raises:
            ValueError: ``s_prev``, ``x_t``, ``x_prev`` not all of one 4-D shape
                :math:`(N, C, h, w)` with :math:`C` = ``in_channels``.
        """
        if not (s_prev.shape == x_t.shape == x_prev.shape and x_t.dim() == 4
                and x_t.size(1) == self.in_channels):
            raise ValueError(f"expected s_prev, x_t and x_prev of one shape (N, C, h, w) with "
                             f"C = in_channels = {self.in_channels}, got "
                             f"{tuple(s_prev.shape)}, {tuple(x_t.shape)} and "
                             f"{tuple(x_prev.shape)}")
        u = self.transition(torch.cat([s_prev - x_t, x_t - x_prev], dim=1))
        a_c, a_s = self.attention(F.relu(self.bn(u)))
        return torch.sigmoid(a_c[:, :, None, None] * a_s[:, None])

    def forward(self, x: Tensor, gate: float | Tensor | None = None,
                return_gates: bool = True) -> RRUOutput:
        """Refine the clip ``x`` :math:`(B, T, C, h, w)`; see the class docstring.

        Args:
            x (Tensor): backbone maps of the clip's frames.
            gate (float or Tensor, optional): a forced gate :math:`z_t` for every
                :math:`t \\ge 1`, broadcastable to :math:`(B, C, h, w)`; the gate
                network is not used. (default: :obj:`None`, the learned gate)
            return_gates (bool): also return the gates (one more clip-sized tensor).
                (default: :obj:`True`)
        """
        check_clip_maps(x, self.in_channels)
        B, T, C, h, w = x.shape
        forced = None
        if gate is not None:
            forced = torch.as_tensor(gate, dtype=x.dtype, device=x.device)
            try:
                forced = forced.expand(B, C, h, w)
            except RuntimeError:
                raise ValueError(f"a forced gate must broadcast to (B, C, h, w) = "
                                 f"{(B, C, h, w)}, got {tuple(forced.shape)}") from None
        s = x[:, 0]
        states, gates = [s], [torch.ones_like(s)] if return_gates else None
        if T > 1 and forced is None:
            # motion half of the transition for every step at once: W_x (X_t - X_{t-1})
            w_s, w_x = self.transition.weight.split(C, dim=1)  # (D, C, 1, 1) each
            motion = (x[:, 1:] - x[:, :-1]).flatten(0, 1)  # (B*(T-1), C, h, w)
            motion = F.conv2d(motion, w_x)  # (B*(T-1), D, h, w)
            # reshape, not unflatten, which the ONNX exporter gives a constant batch size
            motion = motion.reshape(B, T - 1, *motion.shape[1:])  # (B, T-1, D, h, w)
        for t in range(1, T):  # the recurrence: S_t needs S_{t-1}
            x_t = x[:, t]
            if forced is None:
                u = F.conv2d(s - x_t, w_s) + motion[:, t - 1]  # (B, D, h, w)
                a_c, a_s = self.attention(F.relu(self.bn(u)))
                z = torch.sigmoid(a_c[:, :, None, None] * a_s[:, None])  # (B, C, h, w)
            else:
                z = forced
            s = torch.lerp(s, x_t, z)  # (1 - z) S_{t-1} + z X_t, exact at z = 0 and 1
            states.append(s)
            if return_gates:
                gates.append(z.expand(B, C, h, w))
        return RRUOutput(torch.stack(states, dim=1),
                         torch.stack(gates, dim=1) if return_gates else None)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, "
                f"hidden_channels={self.hidden_channels}, spatial_grid={self.spatial_grid})")
