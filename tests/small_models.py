"""The small models that model-level tests build (imported by tests; see conftest.py).

ResNet-18 at 64 x 32 with last stride 1 gives 4 x 2 maps; clips have T = 4 frames, so
STGCN splits each map into 2 horizontal patches.
"""

import torch

from stgraph.models import create_model

T, H, W = 4, 64, 32


def small_kwargs(name: str) -> dict:
    """Constructor arguments of model ``name`` that fit clips of (T, 3, H, W)."""
    kw = {"backbone": "resnet18"}
    if name == "stgcn":
        kw.update(seq_len=T, num_patches=2)
    return kw


def small_model(name: str, num_classes: int, seed: int = 0, **overrides):
    """Model ``name`` with :func:`small_kwargs`, weights drawn after ``manual_seed(seed)``."""
    torch.manual_seed(seed)
    return create_model(name, num_classes=num_classes, **{**small_kwargs(name), **overrides})
