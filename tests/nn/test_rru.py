import doctest

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stgraph.nn.rru as rru_module
from stgraph.nn import RRU, RRUOutput


def _maps(B=3, T=4, C=6, h=4, w=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, h, w, generator=g, dtype=dtype)


def _rru(C=6, seed=0, **kw):
    torch.manual_seed(seed)
    return RRU(C, hidden_channels=5, spatial_hidden=7, **kw).double()


@pytest.mark.parametrize("size", [(4, 2), (8, 8), (3, 5)])
def test_gate_forced_to_one_returns_every_frame(size):
    x = _maps(h=size[0], w=size[1])
    out = _rru()(x, gate=1.0)
    assert isinstance(out, RRUOutput)
    assert torch.equal(out.states, x)  # exact: S_t = X_t at every t
    assert torch.equal(out.gates, torch.ones_like(x))


@pytest.mark.parametrize("size", [(4, 2), (8, 8), (3, 5)])
def test_gate_forced_to_zero_returns_the_first_frame(size):
    x = _maps(h=size[0], w=size[1])
    out = _rru()(x, gate=0.0)
    assert torch.equal(out.states, x[:, :1].expand_as(x))  # S_t = X_0 at every t
    expected = torch.zeros_like(x)
    expected[:, 0] = 1  # z_0 = 1: S_0 = X_0
    assert torch.equal(out.gates, expected)


def test_forced_gate_tensor_mixes_frames_by_hand():
    # z = 0.25 on channel 0, 1 on the others: channel 0 follows the recursion by hand
    x = _maps(B=1, T=3, C=2, h=1, w=1)
    z = torch.tensor([0.25, 1.0], dtype=torch.float64).view(2, 1, 1)
    s = _rru(C=2)(x, gate=z).states
    x0, x1, x2 = x[0, :, 0, 0, 0]
    s1 = 0.75 * x0 + 0.25 * x1
    s2 = 0.75 * s1 + 0.25 * x2
    torch.testing.assert_close(s[0, :, 0, 0, 0], torch.stack([x0, s1, s2]))
    torch.testing.assert_close(s[0, :, 1], x[0, :, 1])


def _reference_states(rru, x):
    """The recursion written plainly: gate on the concatenated input at every step."""
    s, out, gates = x[:, 0], [x[:, 0]], [torch.ones_like(x[:, 0])]
    for t in range(1, x.size(1)):
        u = rru.transition(torch.cat([s - x[:, t], x[:, t] - x[:, t - 1]], dim=1))
        u = F.relu(rru.bn(u))
        a_c = rru.channel_attention(u.mean(dim=(2, 3)))
        m = F.adaptive_avg_pool2d(u.mean(dim=1, keepdim=True), rru.spatial_grid)
        a_s = rru.spatial_attention(m.flatten(1)).view(-1, 1, *rru.spatial_grid)
        a_s = F.adaptive_avg_pool2d(a_s, x.shape[-2:])
        z = torch.sigmoid(a_c[:, :, None, None] * a_s)
        s = (1 - z) * s + z * x[:, t]
        out.append(s)
        gates.append(z)
    return torch.stack(out, 1), torch.stack(gates, 1)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [(4, 2), (8, 8), (16, 8)])
def test_learned_gate_equals_the_plain_recursion(train, size):
    rru = _rru().train(train)
    x = _maps(h=size[0], w=size[1], seed=1)
    out = rru(x)
    ref_states, ref_gates = _reference_states(rru, x)
    torch.testing.assert_close(out.states, ref_states, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.gates, ref_gates, atol=1e-12, rtol=1e-12)
    assert bool(((out.gates[:, 1:] > 0) & (out.gates[:, 1:] < 1)).all())
    # the public one-step gate is the same function
    z1 = rru.gate(x[:, 0], x[:, 1], x[:, 0])
    torch.testing.assert_close(z1, out.gates[:, 1], atol=1e-12, rtol=1e-12)


def test_spatial_attention_on_8x8_is_the_official_conv_layer():
    # official: Conv2d(1, 128, 8) -> ReLU -> Conv2d(128, 64, 1), output viewed as 8 x 8
    rru = _rru(spatial_grid=(8, 8))
    conv1 = nn.Conv2d(1, 7, 8, bias=False).double()
    conv2 = nn.Conv2d(7, 64, 1, bias=False).double()
    with torch.no_grad():
        conv1.weight.copy_(rru.spatial_attention[0].weight.view(7, 1, 8, 8))
        conv2.weight.copy_(rru.spatial_attention[2].weight.view(64, 7, 1, 1))
    u = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    _, a_s = rru.attention(u)
    expected = conv2(F.relu(conv1(u.mean(dim=1, keepdim=True)))).view(3, 8, 8)
    torch.testing.assert_close(a_s, expected, atol=1e-12, rtol=1e-12)


def test_spatial_attention_resamples_by_area_by_hand():
    # grid (2, 1), identity MLP: a 4 x 2 map is averaged into 2 x 1 cells and the
    # scores repeated back over each 2 x 2 block; a 1 x 1 map is repeated to the grid
    torch.manual_seed(0)
    rru = RRU(1, hidden_channels=1, spatial_grid=(2, 1), spatial_hidden=2).double()
    with torch.no_grad():
        rru.spatial_attention[0].weight.copy_(torch.eye(2))
        rru.spatial_attention[2].weight.copy_(torch.eye(2))
    u = torch.tensor([[1.0, 3.0], [5.0, 7.0], [2.0, 2.0], [-8.0, -4.0]], dtype=torch.float64)
    _, a_s = rru.attention(u.view(1, 1, 4, 2))
    # block means 4 and -2; ReLU -> 4 and 0
    expected = torch.tensor([[4.0, 4.0], [4.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(a_s[0], expected.double())
    _, a_s = rru.attention(torch.full((1, 1, 1, 1), 3.0, dtype=torch.float64))
    torch.testing.assert_close(a_s, torch.full((1, 1, 1), 3.0, dtype=torch.float64))


def test_output_depends_on_frame_order():
    rru = _rru().eval()
    x = _maps(seed=2)
    perm = torch.tensor([3, 1, 0, 2])
    s = rru(x).states
    s_perm = rru(x[:, perm]).states
    # neither the last state nor the time mean is invariant to the order of the frames
    assert not torch.allclose(s[:, -1], s_perm[:, -1], atol=1e-6)
    assert not torch.allclose(s.mean(1), s_perm.mean(1), atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (4, 2), (8, 4), (16, 8), (3, 5)])
def test_any_map_size_with_one_module(size):
    rru = _rru(spatial_grid=(8, 8))
    x = _maps(h=size[0], w=size[1])
    out = rru(x)
    assert out.states.shape == out.gates.shape == x.shape
    assert torch.isfinite(out.states).all()
    torch.testing.assert_close(out.states[:, 0], x[:, 0])


def test_single_frame_and_no_gates():
    rru = _rru()
    x = _maps(T=1)
    out = rru(x)
    assert torch.equal(out.states, x)
    assert rru(_maps(), return_gates=False).gates is None


def test_frame_zero_does_not_touch_batch_norm():
    # the official loop also runs the gate (and its BN) on a zero input at t = 0; ours not
    rru = _rru().train()
    rru(_maps(T=5))
    assert int(rru.bn.num_batches_tracked) == 4


def test_gradients_reach_every_parameter_and_the_input():
    rru = _rru()
    x = _maps(seed=3).requires_grad_(True)
    out = rru(x)
    (out.states.pow(2).sum() + out.gates.sum()).backward()
    for name, p in rru.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda v: rru.eval()(v).states,
                                    (_maps(B=2, T=3, h=2, w=2).requires_grad_(True),))


def test_errors():
    rru = _rru()
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\), got \(3, 6, 4, 2\)"):
        rru(torch.zeros(3, 6, 4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"in_channels=6 .* got \(3, 4, 5, 4, 2\)"):
        rru(torch.zeros(3, 4, 5, 4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"forced gate must broadcast to \(B, C, h, w\)"):
        rru(_maps(), gate=torch.ones(5, 1, 1))
    with pytest.raises(ValueError, match="spatial_grid"):
        RRU(4, spatial_grid=(8, 0))
    with pytest.raises(ValueError, match="spatial_grid"):
        RRU(4, spatial_grid=(8,))
    with pytest.raises(ValueError, match="hidden_channels must be >= 1"):
        RRU(4, hidden_channels=0)


def test_gate_and_attention_errors():
    rru = _rru()  # C = 6
    D = rru.hidden_channels
    x = torch.zeros(3, 6, 4, 2, dtype=torch.float64)
    assert rru.gate(x, x, x).shape == x.shape
    with pytest.raises(ValueError, match=r"one shape \(N, C, h, w\) with C = in_channels = 6, "
                                         r"got \(3, 6, 4, 2\), \(3, 6, 4, 1\) and"):
        rru.gate(x, x[..., :1], x)
    with pytest.raises(ValueError, match="in_channels = 6"):
        rru.gate(x[:, :5], x[:, :5], x[:, :5])
    with pytest.raises(ValueError, match="in_channels = 6"):
        rru.gate(x[0], x[0], x[0])
    u = torch.zeros(3, D, 4, 2, dtype=torch.float64)
    a_c, a_s = rru.attention(u)
    assert a_c.shape == (3, 6) and a_s.shape == (3, 4, 2)
    with pytest.raises(ValueError, match=rf"D = hidden_channels = {D}, got \(3, {D + 1}, 4, 2\)"):
        rru.attention(torch.zeros(3, D + 1, 4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"got \({D}, 4, 2\)"):
        rru.attention(u[0])


def test_repr_and_parameters():
    rru = RRU(2048)
    assert repr(rru) == "RRU(2048, hidden_channels=256, spatial_grid=(8, 8))"
    # transition 4096 -> 256 (+BN), channel attention 256 -> 2048, spatial 64 -> 128 -> 64
    n = sum(p.numel() for p in rru.parameters())
    assert n == 4096 * 256 + 2 * 256 + 256 * 2048 + 2 * 64 * 128
    assert RRU(8, spatial_grid=[4, 2]).spatial_grid == (4, 2)


def test_docstring_examples():
    assert doctest.testmod(rru_module).failed == 0
