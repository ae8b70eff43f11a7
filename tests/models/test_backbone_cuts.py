"""Cut points inside the backbones: the part before a cut and the tail after it compose to
the whole backbone, and the tail's parameters are what the partial protocol trains."""

import pytest
import torch

from stgraph.models.backbones import build_backbone

CASES = [("resnet18", {"layer4": 256, "layer3": 128, "end": 512}),
         ("resnet50", {"layer4": 1024, "layer3": 512, "end": 2048}),
         ("efficientnet_lite0", {"head": 320, "last_stage": 192, "end": 1280})]


@pytest.mark.parametrize(("name", "channels"), CASES)
def test_before_and_after_each_cut_compose_to_the_backbone(name, channels):
    torch.manual_seed(0)
    net = build_backbone(name).double().eval()
    assert net.CUTS[0] == net.default_cut and net.CUTS[-1] == "end"
    assert set(net.CUTS) == set(channels)
    x = torch.randn(2, 3, 64, 32, dtype=torch.float64)
    want = net(x)
    for cut, c in channels.items():
        maps = net.forward_to(x, cut)
        assert maps.shape[1] == c, cut
        # every cut is at stride 16: the maps keep the 4 x 2 grid of a 64 x 32 frame, but
        # layer3's input (resnets) is at stride 8
        assert maps.shape[-2:] == ((8, 4) if cut == "layer3" else (4, 2)), cut
        torch.testing.assert_close(net.forward_from(maps, cut), want, rtol=0, atol=1e-12)


def test_the_tail_is_what_follows_the_cut():
    net = build_backbone("efficientnet_lite0")
    head = {id(p) for p in (net._conv_head.weight, *net._bn1.parameters())}
    assert {id(p) for p in net.tail_parameters("head")} == head
    last = {id(p) for p in net._blocks[-1].parameters()}  # Lite0's last stage: one block
    assert {id(p) for p in net.tail_parameters("last_stage")} == head | last
    assert net.tail_parameters("end") == []
    res = build_backbone("resnet18")
    assert {id(p) for p in res.tail_parameters("layer4")} == {id(p) for p in
                                                              res.layer4.parameters()}


def test_an_unknown_cut_names_the_cuts():
    with pytest.raises(ValueError, match=r"ResNet-18 has no cut 'layer5'; choose one of: "
                                         r"layer4, layer3, end"):
        build_backbone("resnet18").forward_to(torch.zeros(1, 3, 64, 32), "layer5")
