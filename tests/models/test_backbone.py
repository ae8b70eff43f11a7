"""Tests of stgraph.models.backbones (ResNet-18/34/50 feature-map backbones)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stgraph.models.backbones import (
    LoadReport,
    ResNet,
    build_backbone,
    load_pretrained,
    resnet18,
    resnet34,
    resnet50,
)


def torchvision_keys(depth: int) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's ResNet state-dict keys and shapes in order, fc excluded.

    Written out independently from torchvision's ``resnet.py`` (no torchvision here):
    stem conv1/bn1, then per block conv1,bn1,conv2,bn2[,conv3,bn3][,downsample.0/.1].
    """
    def bn(prefix, c):
        return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)),
                (f"{prefix}.running_mean", (c,)), (f"{prefix}.running_var", (c,)),
                (f"{prefix}.num_batches_tracked", ())]

    bottleneck = depth == 50
    layers = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    expansion = 4 if bottleneck else 1
    keys = [("conv1.weight", (64, 3, 7, 7))] + bn("bn1", 64)
    cin = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            cout = planes * expansion
            if bottleneck:
                keys += [(f"{p}.conv1.weight", (planes, cin, 1, 1))] + bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + bn(f"{p}.bn2", planes)
                keys += [(f"{p}.conv3.weight", (cout, planes, 1, 1))] + bn(f"{p}.bn3", cout)
            else:
                keys += [(f"{p}.conv1.weight", (planes, cin, 3, 3))] + bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + bn(f"{p}.bn2", planes)
            if b == 0 and (li > 1 or cin != cout):
                keys += [(f"{p}.downsample.0.weight", (cout, cin, 1, 1))]
                keys += bn(f"{p}.downsample.1", cout)
            cin = cout
    return keys


def keys_and_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def r50() -> ResNet:
    torch.manual_seed(0)
    return resnet50()


# ---------------------------------------------------------------- architecture


def test_resnet50_state_dict_is_torchvisions(r50):
    sd = r50.state_dict()
    # torchvision's resnet50 state dict has 320 entries; minus fc.weight, fc.bias -> 318:
    # stem 1 conv + 5 BN entries = 6; 16 bottlenecks x (3 convs + 3 x 5 BN) = 288;
    # 4 downsamples x (1 + 5) = 24; 6 + 288 + 24 = 318.
    assert len(sd) == 318
    assert keys_and_shapes(r50) == torchvision_keys(50)
    assert tuple(sd["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(sd["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd["layer4.0.downsample.1.running_mean"].shape) == (2048,)
    assert tuple(sd["layer3.5.bn3.running_var"].shape) == (1024,)
    assert "layer3.6.conv1.weight" not in sd and "fc.weight" not in sd
    # torchvision resnet50: 25,557,032 parameters, of which fc has 2048*1000 + 1000.
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032 - 2_049_000


@pytest.mark.parametrize("factory,entries,params", [
    (resnet18, 120, 11_689_512 - 513_000),  # torchvision totals minus fc (512*1000 + 1000)
    (resnet34, 216, 21_797_672 - 513_000),
])
def test_basicblock_state_dicts_are_torchvisions(factory, entries, params):
    model = factory()
    assert len(model.state_dict()) == entries
    assert keys_and_shapes(model) == torchvision_keys(model.depth)
    assert "layer1.0.downsample.0.weight" not in model.state_dict()  # 64 -> 64: identity
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.out_channels == 512


def test_strides_follow_torchvision_v1_5(r50):
    assert r50.layer2[0].conv1.stride == (1, 1)  # stride on the 3x3, not the first 1x1
    assert r50.layer2[0].conv2.stride == (2, 2)
    assert r50.layer4[0].conv2.stride == (1, 1) and r50.layer4[0].downsample[0].stride == (1, 1)
    r50s2 = resnet50(last_stride=2)
    assert r50s2.layer4[0].conv2.stride == (2, 2)
    assert r50s2.layer4[0].downsample[0].stride == (2, 2)


def test_resnet50_output_size_last_stride_1(r50):
    r50.eval()
    with torch.no_grad():
        out = r50(torch.randn(1, 3, 256, 128))
    assert out.shape == (1, 2048, 16, 8)
    assert r50.out_channels == 2048 and r50.depth == 50 and r50.last_stride == 1


@pytest.mark.parametrize("last_stride,size", [(1, (16, 8)), (2, (8, 4))])
def test_output_size_resnet18(last_stride, size):
    model = resnet18(last_stride=last_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 128))
    assert out.shape == (2, 512, *size)
    assert (out >= 0).all()  # ends with a ReLU: feature maps, not logits


def test_init():
    torch.manual_seed(0)
    model = resnet34()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    w = model.layer4[1].conv2.weight  # 512 x 512 x 3 x 3, fan_out = 512 * 9
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)
    assert abs(w.mean().item()) < 1e-3


def test_every_parameter_gets_a_gradient():
    model = resnet18().train()
    model(torch.randn(2, 3, 64, 32)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_repr_and_errors():
    assert "depth=18, last_stride=1" in repr(resnet18())
    valid = "choose one of: resnet18, resnet34, resnet50"
    with pytest.raises(ValueError, match=f"unknown backbone 'resnet101'; {valid}"):
        build_backbone("resnet101")
    with pytest.raises(ValueError, match="last_stride must be 1 or 2, got 3"):
        ResNet(18, last_stride=3)
    with pytest.raises(ValueError, match="unknown ResNet depth 101"):
        ResNet(101)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(2, 4, 32, 32\)"):
        resnet18()(torch.randn(2, 4, 32, 32))


def test_build_backbone():
    model = build_backbone("resnet34", last_stride=2)
    assert isinstance(model, ResNet) and model.depth == 34 and model.last_stride == 2


# ---------------------------------------------------------------- pretrained loading


def _altered_state(model: ResNet, seed: int = 1) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor replaced, plus an ImageNet-style fc."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    state["fc.weight"] = torch.randn(1000, model.out_channels, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_load_pretrained_reproduces_outputs(tmp_path):
    source = resnet18()
    state = _altered_state(source)
    source.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    path = tmp_path / "resnet18-test.pth"
    torch.save(state, path)

    target = resnet18()
    report = load_pretrained(target, path)
    assert isinstance(report, LoadReport)
    assert report.ignored == ("fc.weight", "fc.bias")
    assert len(report.loaded) == 120 and report.defaulted == ()
    assert report.path == str(path) and "ignored ['fc.weight', 'fc.bias']" in str(report)
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))
    assert target.bn1.num_batches_tracked.item() == 7

    # the same file through the factory and the builder
    for model in (resnet18(pretrained=str(path)), build_backbone("resnet18", pretrained=path)):
        with torch.no_grad():
            assert torch.equal(source(x), model.eval()(x))


def test_load_pretrained_tolerates_missing_num_batches_tracked(tmp_path):
    model = resnet18()
    state = _altered_state(model)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    report = load_pretrained(model, tmp_path / "old.pth")
    assert len(report.defaulted) == 20  # 20 BatchNorms in ResNet-18
    assert len(report.loaded) == 100
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert model.bn1.num_batches_tracked.item() == 0  # left at the model's value


def test_load_pretrained_missing_and_unexpected_keys(tmp_path):
    model = resnet18()
    state = _altered_state(model)
    del state["layer2.1.bn2.running_var"]
    state["backbone.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    before = model.conv1.weight.clone()
    with pytest.raises(KeyError) as info:
        load_pretrained(model, path)
    msg = str(info.value)
    assert "missing keys 1: [layer2.1.bn2.running_var]" in msg
    assert "unexpected keys 1: [backbone.extra.weight]" in msg
    assert "broken.pth" in msg
    assert torch.equal(model.conv1.weight, before)  # nothing loaded


def test_load_pretrained_lists_first_keys_and_count(tmp_path):
    state = {f"module.{k}": v for k, v in resnet18().state_dict().items()}  # DataParallel prefix
    torch.save(state, tmp_path / "prefixed.pth")
    with pytest.raises(KeyError, match=r"missing keys 120: \[conv1.weight, bn1.weight, .*"
                                       r"\(115 more\)\]; unexpected keys 120: \[module.conv1"):
        load_pretrained(resnet18(), tmp_path / "prefixed.pth")


def test_load_pretrained_shape_mismatch(tmp_path):
    state = resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape\.pth.*conv1\.weight \(64, 3, 3, 3\) in file "
                                         r"vs \(64, 3, 7, 7\) in model"):
        load_pretrained(resnet18(), tmp_path / "shape.pth")


def test_load_pretrained_wrong_depth(tmp_path):
    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(KeyError, match=r"ResNet-34: missing keys 96: \[layer1.2.conv1.weight"):
        load_pretrained(resnet34(), tmp_path / "r18.pth")


def test_load_pretrained_bad_files(tmp_path):
    missing = tmp_path / "nowhere" / "resnet50-0676ba61.pth"
    with pytest.raises(FileNotFoundError, match="nowhere/resnet50-0676ba61.pth"):
        load_pretrained(resnet18(), missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resnet18(pretrained=str(missing))
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="module.pth"):
        load_pretrained(resnet18(), tmp_path / "module.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list.pth.*got list"):
        load_pretrained(resnet18(), tmp_path / "list.pth")
