import doctest

import pytest
import torch
from torch import nn

import stgraph.nn.stim as stim_module
from stgraph.nn import STIM


def _explicit_stack(stim):
    """The official stack written out, with STIM's weights."""
    seq = nn.Sequential(
        nn.Conv3d(stim.in_channels, stim.hidden_channels, 1, bias=False),
        nn.BatchNorm3d(stim.hidden_channels), nn.ReLU(),
        nn.Conv3d(stim.hidden_channels, stim.out_channels, 3, padding=1, bias=False),
        nn.BatchNorm3d(stim.out_channels), nn.ReLU(),
    ).double()
    seq.load_state_dict({
        "0.weight": stim.conv1.weight, **{f"1.{k}": v for k, v in stim.bn1.state_dict().items()},
        "3.weight": stim.conv2.weight, **{f"4.{k}": v for k, v in stim.bn2.state_dict().items()},
    })
    return seq


def _randomise_bn(stim):
    with torch.no_grad():
        for bn in (stim.bn1, stim.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("train", [True, False])
def test_equals_explicit_conv3d_stack(train):
    torch.manual_seed(0)
    stim = STIM(6, out_channels=5, hidden_channels=4).double()
    _randomise_bn(stim)
    seq = _explicit_stack(stim)
    stim.train(train), seq.train(train)
    x = torch.randn(3, 4, 6, 4, 2, dtype=torch.float64, requires_grad=True)  # (B, T, C, h, w)
    f = stim(x)
    expected = seq(x.permute(0, 2, 1, 3, 4)).mean(dim=(2, 3, 4))
    torch.testing.assert_close(f, expected, atol=1e-12, rtol=1e-12)
    assert f.shape == (3, 5)
    # same running statistics afterwards (train mode updates both alike)
    torch.testing.assert_close(stim.bn2.running_mean, seq[4].running_mean)
    # same gradients for the input
    (g,) = torch.autograd.grad(f.pow(2).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(seq(x2.permute(0, 2, 1, 3, 4)).mean(dim=(2, 3, 4))
                                .pow(2).sum(), x2)
    torch.testing.assert_close(g, g2, atol=1e-12, rtol=1e-12)


def test_value_by_hand_one_cell():
    # T = h = w = 1, one channel each, eval BN at identity: f = ReLU(w2c * ReLU(w1 * x))
    # with w2c the centre tap of the 3x3x3 kernel (the others see the zero padding)
    stim = STIM(1, out_channels=1, hidden_channels=1).double().eval()
    with torch.no_grad():
        stim.conv1.weight.fill_(2.0)
        stim.conv2.weight.fill_(10.0)
        stim.conv2.weight[0, 0, 1, 1, 1] = -0.5
    for bn in (stim.bn1, stim.bn2):
        bn.running_var.fill_(1 - bn.eps)  # (x - 0) / sqrt(1) exactly
    x = torch.tensor([3.0, -3.0], dtype=torch.float64).view(2, 1, 1, 1, 1)
    torch.testing.assert_close(stim(x), torch.tensor([[0.0], [0.0]], dtype=torch.float64))
    with torch.no_grad():
        stim.conv2.weight[0, 0, 1, 1, 1] = 0.5
    torch.testing.assert_close(stim(x), torch.tensor([[3.0], [0.0]], dtype=torch.float64))


@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 2, 1), (8, 8, 8), (3, 16, 8)])
def test_any_clip_size(shape):
    T, h, w = shape
    stim = STIM(4, out_channels=3, hidden_channels=2)
    f = stim(torch.randn(2, T, 4, h, w))
    assert f.shape == (2, 3) and torch.isfinite(f).all() and (f >= 0).all()


def test_frame_order_matters_through_the_temporal_kernel():
    torch.manual_seed(0)
    stim = STIM(4, out_channels=3, hidden_channels=2).double().eval()
    _randomise_bn(stim)
    x = torch.randn(2, 4, 4, 2, 2, dtype=torch.float64)
    assert not torch.allclose(stim(x), stim(x[:, [2, 0, 3, 1]]))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    stim = STIM(4, out_channels=3, hidden_channels=2)
    stim(torch.randn(2, 3, 4, 2, 2)).pow(2).sum().backward()
    for name, p in stim.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_errors_and_repr():
    stim = STIM(4)
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\), got \(2, 4, 2, 2\)"):
        stim(torch.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"in_channels=4 .* got \(2, 3, 5, 2, 2\)"):
        stim(torch.zeros(2, 3, 5, 2, 2))
    with pytest.raises(ValueError, match="out_channels must be >= 1"):
        STIM(4, out_channels=0)
    assert repr(STIM(2048)) == "STIM(2048, 256, hidden_channels=256)"
    assert sum(p.numel() for p in STIM(2048).parameters()) == (
        2048 * 256 + 2 * 256 + 256 * 256 * 27 + 2 * 256)


def test_docstring_examples():
    assert doctest.testmod(stim_module).failed == 0
