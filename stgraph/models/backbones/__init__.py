"""Frame backbones: images -> feature maps, with torchvision-compatible weights."""

from stgraph.models.backbones.resnet import (
    BasicBlock,
    Bottleneck,
    LoadReport,
    ResNet,
    build_backbone,
    load_pretrained,
    resnet18,
    resnet34,
    resnet50,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "LoadReport",
    "ResNet",
    "build_backbone",
    "load_pretrained",
    "resnet18",
    "resnet34",
    "resnet50",
]
