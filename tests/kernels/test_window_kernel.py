"""Sliding-window propagation of the 3D-GCL: reference == the layer's math, Triton == reference.

Without a GPU the Triton kernel runs through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), so the sizes stay tiny.
"""

import doctest

import pytest
import torch

pytest.importorskip("triton")

import stgraph.kernels.window as window_module  # noqa: E402
from stgraph.graph import COCO17  # noqa: E402
from stgraph.kernels.window import window_propagate, window_propagate_reference  # noqa: E402
from stgraph.models import CTL  # noqa: E402
from stgraph.nn import DenseSlidingWindowGCN, SlidingWindowGCN, sliding_windows  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (B, T, N, C, tau): odd N and C, T < tau, even tau, tau = 1
SIZES = [
    (2, 3, 5, 7, 3),
    (1, 1, 17, 33, 3),
    (1, 2, 10, 7, 3),
    (2, 4, 5, 7, 2),
    (1, 3, 5, 33, 4),
    (1, 3, 10, 7, 1),
]


def _inputs(B, T, N, C, tau, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = tau * N
    a = torch.randn(B, T, S, S, generator=g, dtype=dtype) / S**0.5
    x = torch.randn(B, T, N, C, generator=g, dtype=dtype)
    bias = torch.randn(C, generator=g, dtype=dtype) * 0.1
    collapse = torch.randn(C, tau, generator=g, dtype=dtype)
    return [t.to(DEVICE).requires_grad_() for t in (a, x, bias, collapse)]


def _old_layer_math(a_hat, xw, tau, bias, collapse):
    """DenseSlidingWindowGCN.forward before the kernel: windows, matmul, bias, ReLU, collapse."""
    B, T, N, C = xw.shape
    h = sliding_windows(xw, tau).reshape(B, T, tau * N, C)
    h = torch.matmul(a_hat, h)
    if bias is not None:
        h = h + bias
    h = torch.relu(h).view(B, T, tau, N, C)
    c = collapse.t().reshape(1, 1, tau, 1, C)
    return (h * c).sum(dim=2)


def _window_by_window(a_hat, xw, tau):
    """The bare propagation with explicit frame indices: X_win[k*N+m] = xw[t + k - left, m]."""
    B, T, N, C = xw.shape
    left = (tau - 1) // 2
    out = xw.new_zeros(B, T, tau * N, C)
    for t in range(T):
        for k in range(tau):
            src = t + k - left
            if 0 <= src < T:
                out[:, t] += a_hat[:, t, :, k * N:(k + 1) * N] @ xw[:, src]
    return out


def _close(actual, expected, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------- reference

@pytest.mark.parametrize("tau", [1, 2, 3, 4])
def test_reference_is_the_layers_math_and_explicit_windows(tau):
    a, x, b, c = _inputs(2, 3, 5, 7, tau)
    y = window_propagate_reference(a, x, tau, b, c)
    assert y.shape == (2, 3, 5, 7)
    torch.testing.assert_close(y, _old_layer_math(a, x, tau, b, c), atol=0, rtol=0)
    assert window_propagate_reference(a, x, tau, collapse=c).shape == (2, 3, 5, 7)
    bare = window_propagate_reference(a, x, tau)
    assert bare.shape == (2, 3, tau * 5, 7)
    _close(bare, _window_by_window(a, x, tau))


def test_docstring_examples():
    assert doctest.testmod(window_module).failed == 0


def test_errors_are_clear():
    a, x, b, c = _inputs(1, 2, 5, 7, 3)
    with pytest.raises(ValueError, match=r"\(B, T, tau\*N, tau\*N\)"):
        window_propagate_reference(a[:, :, :10], x, 3, b, c)
    with pytest.raises(ValueError, match="node features of shape"):
        window_propagate_reference(a, x[0], 3, b, c)
    with pytest.raises(ValueError, match="bias of shape"):
        window_propagate_reference(a, x, 3, b[:3], c)
    with pytest.raises(ValueError, match="collapse weights of shape"):
        window_propagate_reference(a, x, 3, b, c.t())
    with pytest.raises(ValueError, match="bias is applied with the collapse only"):
        window_propagate(a, x, 3, b, None, backend="triton")
    with pytest.raises(ValueError, match="tau must be"):
        window_propagate_reference(a, x, 0)
    with pytest.raises(ValueError, match="unknown backend"):
        window_propagate(a, x, 3, b, c, backend="cuda")
    with pytest.raises(ValueError, match="floating tensors"):
        window_propagate(a.detach().long(), x.detach().long(), 3, backend="triton")


# ---------------------------------------------------------------------------------- Triton

@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}T{}N{}C{}tau{}".format(*s))
def test_triton_forward_and_backward_equal_reference(size):
    tau = size[-1]
    a, x, b, c = _inputs(*size)
    y = window_propagate(a, x, tau, b, c, backend="triton")
    y_ref = window_propagate_reference(a, x, tau, b, c)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    _close(y, y_ref)
    grad = torch.randn_like(y)
    g = torch.autograd.grad(y, (a, x, b, c), grad)
    g_ref = torch.autograd.grad(y_ref, (a, x, b, c), grad)
    for name, u, v in zip(("a_hat", "xw", "bias", "collapse"), g, g_ref, strict=True):
        assert u.shape == v.shape, name
        _close(u, v)


@pytest.mark.parametrize("size", [(1, 2, 5, 7, 3), (2, 3, 10, 33, 2)])
def test_triton_without_bias_and_without_collapse(size):
    tau = size[-1]
    a, x, _, c = _inputs(*size, seed=1)
    grad = torch.randn(size[:4], device=DEVICE)
    y = window_propagate(a, x, tau, None, c, backend="triton")
    y_ref = window_propagate_reference(a, x, tau, None, c)
    _close(y, y_ref)
    for u, v in zip(torch.autograd.grad(y, (a, x, c), grad),
                    torch.autograd.grad(y_ref, (a, x, c), grad), strict=True):
        _close(u, v)
    # collapse=None: the bare, un-collapsed propagation
    y = window_propagate(a, x, tau, backend="triton")
    y_ref = window_propagate_reference(a, x, tau)
    assert y.shape == (*size[:2], tau * size[2], size[3])
    _close(y, y_ref)
    grad = torch.randn_like(y)
    for u, v in zip(torch.autograd.grad(y, (a, x), grad),
                    torch.autograd.grad(y_ref, (a, x), grad), strict=True):
        _close(u, v)


def test_triton_float64_gradcheck():
    # fast mode (random directions): each kernel launch costs a few ms in the interpreter
    a, x, b, c = _inputs(1, 2, 3, 5, 3, dtype=torch.float64, seed=2)
    assert torch.autograd.gradcheck(
        lambda *t: window_propagate(*t[:2], 3, *t[2:], backend="triton"), (a, x, b, c),
        fast_mode=True)
    a, x, _, _ = _inputs(1, 3, 2, 3, 2, dtype=torch.float64, seed=3)
    assert torch.autograd.gradcheck(
        lambda a, x: window_propagate(a, x, 2, backend="triton"), (a, x), fast_mode=True)


def test_triton_bfloat16_forward():
    a, x, b, c = (t.detach().bfloat16() for t in _inputs(2, 3, 5, 33, 3, seed=4))
    y = window_propagate(a, x, 3, b, c, backend="triton")
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 5, 33)
    y_ref = window_propagate_reference(a.float(), x.float(), 3, b.float(), c.float())
    _close(y.float(), y_ref, atol=5e-2, rtol=5e-2)
    # autocast-like mix: float32 adjacency and weights, bfloat16 features -> float32 result
    y = window_propagate(a.float(), x, 3, b.float(), c.float(), backend="triton")
    assert y.dtype == torch.float32
    _close(y, y_ref, atol=5e-2, rtol=5e-2)


# ---------------------------------------------------------------------------------- layer

@pytest.mark.parametrize("tau", [2, 3])
def test_layer_triton_equals_torch_with_gradients(tau):
    torch.manual_seed(tau)
    adjacency = COCO17.physical_adjacency("s3")  # N = 5
    layers = {b: DenseSlidingWindowGCN(7, 7, adjacency, tau=tau, backend=b).to(DEVICE)
              for b in ("torch", "triton")}
    with torch.no_grad():
        layers["torch"].topology.mask.normal_(std=0.3)
        layers["torch"].bias.normal_(std=0.1)
        layers["torch"].collapse.weight.normal_()
    layers["triton"].load_state_dict(layers["torch"].state_dict())
    x = torch.randn(2, 3, 5, 7, device=DEVICE)
    out = {}
    for name, layer in layers.items():
        xi = x.clone().requires_grad_()
        y, a_hat = layer(xi, return_adjacency=True)
        assert a_hat.shape == (2, 3, 5 * tau, 5 * tau)
        y.square().sum().backward()
        out[name] = (y, a_hat, xi.grad, {k: p.grad for k, p in layer.named_parameters()})
    (y_t, a_t, gx_t, gp_t), (y_k, a_k, gx_k, gp_k) = out["torch"], out["triton"]
    _close(y_k, y_t)
    _close(a_k, a_t)
    _close(gx_k, gx_t, atol=1e-4, rtol=1e-4)
    assert gp_k.keys() == gp_t.keys()
    for k in gp_t:
        _close(gp_k[k], gp_t[k], atol=1e-4, rtol=1e-4)


def test_layer_backend_argument_and_state_dict():
    adjacency = COCO17.physical_adjacency("s3")
    dense = DenseSlidingWindowGCN(4, 4, adjacency, backend="triton")
    assert DenseSlidingWindowGCN(4, 4, adjacency).backend == "auto"
    assert list(dense.state_dict()) == list(SlidingWindowGCN(4, 4, adjacency).state_dict())
    with pytest.raises(ValueError, match="choose one of: auto, torch, triton"):
        DenseSlidingWindowGCN(4, 4, adjacency, backend="pyg")


def test_ctl_backends():
    def gcl_backends(model):
        return {getattr(layer, "backend", "pyg") for layers in model.gcls.values()
                for layer in layers}

    small = {"backbone": "resnet18", "num_classes": 3, "num_layers": 1, "cross_scale": "add"}
    assert CTL(**small).backend == "auto"
    alias = CTL(**small, backend="dense")
    assert alias.backend == "auto" and gcl_backends(alias) == {"auto"}
    assert gcl_backends(CTL(**small, backend="triton")) == {"triton"}
    pyg = CTL(**small, backend="pyg")
    assert all(isinstance(layer, SlidingWindowGCN) for layers in pyg.gcls.values()
               for layer in layers)
    with pytest.raises(ValueError, match="auto, torch, triton, pyg, dense"):
        CTL(**small, backend="sparse")


def test_layer_under_autocast_triton_equals_torch():
    # --amp: float16 features from the layer's linear map, float32 adjacency and weights
    torch.manual_seed(0)
    adjacency = COCO17.physical_adjacency("s3")
    layers = {b: DenseSlidingWindowGCN(7, 7, adjacency, tau=3, backend=b).to(DEVICE)
              for b in ("torch", "triton")}
    layers["triton"].load_state_dict(layers["torch"].state_dict())
    x = torch.randn(2, 3, 5, 7, device=DEVICE)
    out, grads = {}, {}
    for name, layer in layers.items():
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.float16):
            y = layer(x)
        y.float().square().sum().backward()
        out[name] = y.float()
        grads[name] = {k: p.grad for k, p in layer.named_parameters()}
    torch.testing.assert_close(out["triton"], out["torch"], atol=2e-2, rtol=2e-2)
    for k in grads["torch"]:
        torch.testing.assert_close(grads["triton"][k], grads["torch"][k], atol=5e-2, rtol=5e-2)
