r"""RRU + STIM: spatial and temporal mutual promotion.

Liu, Ma, Yang, Yi, Hu, Zhang and Luo, "Spatial and Temporal Mutual Promotion for
Video-based Person Re-identification", AAAI 2019. https://arxiv.org/abs/1812.10305
(official code: github.com/yolomax/rru-reid, github.com/yolomax/person-reid-lib).

Backbone maps -> refining recurrent unit over the frames
(:class:`~stgraph.nn.RRU`) -> spatial-temporal clues integration module
(:class:`~stgraph.nn.STIM`) -> 256-d clip feature (CE + batch-hard triplet), plus a
part triplet loss on horizontal rows of the refined maps.
"""

from __future__ import annotations

from torch import Tensor, nn

from stgraph.models.base import ReIDOutput, VideoReIDModel, check_positive
from stgraph.models.registry import register_model
from stgraph.nn import RRU, STIM, BNNeck
from stgraph.nn._export import adaptive_avg_pool1d

__all__ = ["RRUSTIM"]


@register_model("rru")
class RRUSTIM(VideoReIDModel):
    r"""RRU + STIM (Liu et al., AAAI 2019): refine each frame's map from the past
    frames, integrate the clip with 3D convolutions.

    On the backbone maps :math:`X_t` (:math:`C \times h \times w`):

    .. math::
        S = \mathrm{RRU}(X_0, \dots, X_{T-1}), \qquad
        f = \mathrm{STIM}(S) \in \mathbb{R}^{256}, \qquad
        p_r = \frac{1}{T\,|R_r|\,w} \sum_{t} \sum_{i \in R_r} \sum_j S_{t,:,i,j}
        \in \mathbb{R}^C

    :math:`f` goes through a BNNeck (label-smoothed cross-entropy on its logits,
    batch-hard triplet on :math:`f`; the retrieval embedding is :math:`f` after the
    BNNeck); the :math:`P` = ``num_rows`` row features :math:`p_r` are returned as
    ``part_triplet_features`` :math:`(B, P, C)`, whose batch-hard triplet loss
    :class:`~stgraph.losses.ReIDLoss` averages over the rows (the paper's part loss,
    weight 1). All three loss weights are 1 in the paper, and its triplet margin is
    0.4 (``ReIDLoss(margin=0.4)``; stgraph's default is 0.3).

    Our choices (the paper and the official code use Inception-v3's 8 x 8 maps):

    * the spatial attention of the RRU's gate on maps that are not 8 x 8: an MLP over
      a fixed ``spatial_grid`` of positions, the map resampled to it by area averaging
      (exactly the official layer on 8 x 8 maps; see :class:`~stgraph.nn.RRU`);
    * the rows :math:`R_r`: adaptive average pooling of the :math:`h` rows of the
      time-and-width mean into ``num_rows`` rows (on 8-high maps with 8 rows, each
      row is one map row, as in the official code; on a 16-high map each row averages
      two; on maps lower than ``num_rows`` the rows are area-resampled by the same
      adaptive average pooling, so the part loss weighs each map row by its share of
      the pooled rows);
    * no auxiliary classifier (the official code adds Inception-v3's auxiliary logits
      with a CE loss, a property of that backbone);
    * a BNNeck on :math:`f` and label smoothing (the repository's common recipe; the
      official classifier is Linear 256 -> 512 + BN + LeakyReLU + dropout + Linear,
      with a plain cross-entropy).

    :meth:`attention_head` gives the spatial and temporal attention for plotting
    (``stgraph plot --what attention``); see there.

    Args:
        num_classes, backbone, last_stride, pretrained: see
            :class:`~stgraph.models.base.VideoReIDModel`.
        hidden_channels (int): channels of the RRU's transition layer (the official
            256). (default: :obj:`256`)
        embed_channels (int): width of the STIM feature, the embedding (the official
            256; STIM's hidden width is the same). (default: :obj:`256`)
        spatial_grid ((int, int)): grid of the RRU's spatial attention (ours; the
            official 8 x 8). (default: :obj:`(8, 8)`)
        spatial_hidden (int): hidden width of the spatial attention (the official 128).
            (default: :obj:`128`)
        num_rows (int): horizontal rows of the part triplet loss (the official 8,
            one per row of its 8-high maps; adaptive pooling on other heights is
            ours). (default: :obj:`8`)

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`
        - **output:** dict with ``embedding`` :math:`(B, \text{embed\_channels})`, one
          branch ``"stim"``, and ``part_triplet_features`` :math:`(B, P, C)` (in train
          and eval mode).

    Raises:
        ValueError: ``num_rows < 1`` or a bad RRU / STIM size; feature maps that are
            not :math:`(B, T, C, h, w)` with the backbone's :math:`C`.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None, hidden_channels: int = 256,
                 embed_channels: int = 256, spatial_grid: tuple[int, int] = (8, 8),
                 spatial_hidden: int = 128, num_rows: int = 8) -> None:
        check_positive(hidden_channels=hidden_channels, embed_channels=embed_channels,
                       spatial_hidden=spatial_hidden, num_rows=num_rows)
        grid = tuple(spatial_grid)
        if len(grid) != 2:
            raise ValueError(f"spatial_grid must be two integers (rows, columns), got "
                             f"{spatial_grid!r}")
        check_positive(spatial_grid_rows=grid[0], spatial_grid_columns=grid[1])
        super().__init__(num_classes, backbone, last_stride, pretrained)
        C = self.feat_channels
        self.num_rows = num_rows
        self.rru = RRU(C, hidden_channels, spatial_grid=spatial_grid,
                       spatial_hidden=spatial_hidden)
        self.stim = STIM(C, embed_channels, hidden_channels=embed_channels)
        self.necks = nn.ModuleList([BNNeck(embed_channels, num_classes)])

    def part_features(self, states: Tensor) -> Tensor:
        """Row features of refined maps ``states`` :math:`(B, T, C, h, w)` ->
        :math:`(B, P, C)`: the mean over time and width, pooled into ``num_rows`` rows."""
        rows = states.mean(dim=(1, 4))  # (B, C, h)
        return adaptive_avg_pool1d(rows, self.num_rows).transpose(1, 2)  # (B, P, C)

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        """The head on backbone maps ``(B, T, C, h, w)``; see the class docstring."""
        states = self.rru(feature_maps, return_gates=False).states  # (B, T, C, h, w)
        f = self.stim(states)  # (B, embed_channels)
        out = self._output(("stim",), [f], self.necks)
        out["part_triplet_features"] = self.part_features(states)
        return out

    def attention_head(self, feature_maps: Tensor) -> dict[str, Tensor]:
        r"""The RRU's gates as attention maps, for plotting.

        * ``"spatial"`` :math:`(B, T, 1, h, w)`: the gate averaged over channels,
          :math:`\bar z_t(i, j) = \frac{1}{C} \sum_c z_t(c, i, j)`, normalised to sum 1
          over :math:`(h, w)`: where frame :math:`t` is written into the state (ours:
          the spatial attention :math:`a^s_t` alone is a signed score whose effect
          depends on the sign of :math:`a^c_t`, so it is not an importance map by
          itself). Frame 0 has no gate (:math:`S_0 = X_0`, :math:`z_0 \equiv 1`), so
          its map is uniform.
        * ``"temporal"`` :math:`(B, T, 1)`: the mean gate of each frame over
          :math:`(C, h, w)`, in :math:`(0, 1]`: the fraction of the refined map taken
          from frame :math:`t`; 1 for frame 0 (ours). Not normalised over frames.
        * ``"gates"`` :math:`(B, T, C, h, w)`: the gates themselves.

        Raises:
            ValueError: feature maps that are not :math:`(B, T, C, h, w)` with the
                backbone's :math:`C`.
        """
        gates = self.rru(feature_maps).gates  # (B, T, C, h, w)
        mean = gates.mean(dim=2, keepdim=True)  # (B, T, 1, h, w)
        spatial = mean / mean.sum(dim=(3, 4), keepdim=True).clamp_min(1e-12)
        return {"spatial": spatial, "temporal": mean.mean(dim=(3, 4)), "gates": gates}
