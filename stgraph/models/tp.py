"""Temporal average pooling baseline.

Gao and Nevatia, "Revisiting Temporal Modeling for Video-based Person ReID",
arXiv:1805.02104, 2018 (the "TP" baseline), with a BNNeck (Luo et al., CVPRW 2019).
"""

from __future__ import annotations

from torch import Tensor, nn

from stgraph.models.base import ReIDOutput, VideoReIDModel
from stgraph.models.registry import register_model
from stgraph.nn import BNNeck

__all__ = ["TemporalPooling"]


@register_model("tp")
class TemporalPooling(VideoReIDModel):
    r"""Global average pooling per frame, mean over the clip's frames, BNNeck.

    .. math:: f = \frac{1}{T} \sum_t \mathrm{GAP}(F_t) \in \mathbb{R}^C

    Args: see :class:`~stgraph.models.base.VideoReIDModel`.

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`
        - **output:** dict with ``embedding`` :math:`(B, C)`, one branch ``"global"``.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None) -> None:
        super().__init__(num_classes, backbone, last_stride, pretrained)
        self.necks = nn.ModuleList([BNNeck(self.feat_channels, num_classes)])

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        f = feature_maps.mean(dim=(1, 3, 4))  # (B, C): GAP per frame, mean over T
        return self._output(("global",), [f], self.necks)

