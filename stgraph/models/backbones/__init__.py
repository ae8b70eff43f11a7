"""Frame backbones: images -> feature maps, with ImageNet weights from local or packaged files."""

from stgraph.models.backbones.cut import END, CutBackbone
from stgraph.models.backbones.efficientnet import (
    EfficientNetLite,
    MBConvBlock,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from stgraph.models.backbones.loading import LoadReport, load_pretrained
from stgraph.models.backbones.registry import (
    backbone_input_norm,
    build_backbone,
    list_backbones,
)
from stgraph.models.backbones.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
)

__all__ = [
    "END",
    "BasicBlock",
    "Bottleneck",
    "CutBackbone",
    "EfficientNetLite",
    "LoadReport",
    "MBConvBlock",
    "ResNet",
    "backbone_input_norm",
    "build_backbone",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "list_backbones",
    "load_pretrained",
    "resnet18",
    "resnet34",
    "resnet50",
]
