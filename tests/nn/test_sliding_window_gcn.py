import copy

import pytest
import torch

from stgraph.graph import COCO17, KeypointGraphBuilder
from stgraph.nn import DenseContextBlock, DenseSlidingWindowGCN, SlidingWindowGCN

PATH3 = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])  # 3-node skeleton 0-1-2


def _randomise(layer):
    """Non-trivial values for the zero- or constant-initialised parameters."""
    with torch.no_grad():
        if layer.topology.mask is not None:
            layer.topology.mask.normal_(std=0.3)
        if layer.bias is not None:
            layer.bias.normal_(std=0.1)
        layer.collapse.weight.normal_()
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.normal_(std=0.1)
    return layer


def _reference(layer, x):
    """3D-GCL computed window by window with explicit zero padding (eq. 3-4)."""
    ref = copy.deepcopy(layer)
    B, T, N, C = x.shape
    tau = ref.tau
    left, right = (tau - 1) // 2, tau - 1 - (tau - 1) // 2
    padded = torch.cat([x.new_zeros(B, left, N, C), x, x.new_zeros(B, right, N, C)], dim=1)
    topo = ref.topology
    static = x.new_zeros(tau * N, tau * N)
    eye = torch.eye(N, dtype=x.dtype)
    for i in range(tau):
        for j in range(tau):
            blk = x.new_zeros(N, N)
            if topo.use_physical:
                blk = blk + topo.physical + (eye if i != j else 0)
            if topo.mask is not None:
                blk = blk + topo.mask
            static[i * N:(i + 1) * N, j * N:(j + 1) * N] = blk
    if topo.context is not None:
        block = DenseContextBlock(C, tau * N).to(x.dtype)
        block.load_state_dict(topo.context.state_dict())
    outs = []
    for t in range(T):
        xw = padded[:, t:t + tau].reshape(B, tau * N, C)  # the window's nodes, frame-major
        a = static.expand(B, -1, -1)
        if topo.context is not None:
            a = a + block(xw.unsqueeze(1))
        a_hat = a + torch.eye(tau * N, dtype=x.dtype)
        d = a_hat.abs().sum(-1).rsqrt()
        norm = d.unsqueeze(-1) * a_hat * d.unsqueeze(-2)
        h = norm @ ref.lin(xw)
        if ref.bias is not None:
            h = h + ref.bias
        h = torch.relu(h).view(B, tau, N, -1)
        outs.append(sum(ref.collapse.weight[:, 0, k] * h[:, k] for k in range(tau)))
    y = torch.stack(outs, dim=1)  # (B, T, N, C')
    y = torch.relu(ref.bn(y.reshape(B * T * N, -1))).view(B, T, N, -1)
    return y + x if ref.residual else y


def test_normalised_block_adjacency_by_hand():
    # physical only, tau = 3: A^ = J (x) (A^p + I); row sums 3 * (deg + 1): 6, 9, 6
    layer = DenseSlidingWindowGCN(2, 2, PATH3, tau=3, use_mask=False, use_context=False)
    _, a_hat = layer(torch.randn(1, 2, 3, 2), return_adjacency=True)
    tile = torch.kron(torch.ones(3, 3), PATH3 + torch.eye(3))
    d = torch.tensor([6.0, 9.0, 6.0]).repeat(3)
    torch.testing.assert_close(a_hat[0, 1], tile / (d.unsqueeze(1) * d.unsqueeze(0)).sqrt())
    assert a_hat[0, 0, 0, 3] == pytest.approx(1 / 6)  # node 0 to itself one frame later


@pytest.mark.parametrize("tau", [2, 3, 5])
@pytest.mark.parametrize("flags", [{}, {"use_context": False}, {"use_mask": False}])
def test_equals_computing_each_window_explicitly(tau, flags):
    torch.manual_seed(tau)
    layer = _randomise(DenseSlidingWindowGCN(4, 4, PATH3, tau=tau, **flags))
    x = torch.randn(2, 4, 3, 4)
    torch.testing.assert_close(layer(x), _reference(layer, x), atol=1e-5, rtol=1e-5)
    sparse = SlidingWindowGCN(4, 4, PATH3, tau=tau, **flags)
    sparse.load_state_dict(layer.state_dict())
    torch.testing.assert_close(sparse(x), _reference(layer, x), atol=1e-5, rtol=1e-5)


def test_tau_one_is_the_framewise_gcn():
    torch.manual_seed(0)
    a_p = COCO17.physical_adjacency("s3")
    layer = _randomise(DenseSlidingWindowGCN(6, 6, a_p, tau=1))
    x = torch.randn(3, 4, 5, 6)
    ref = copy.deepcopy(layer)
    block = DenseContextBlock(6, 5)
    block.load_state_dict(ref.topology.context.state_dict())
    # eq. (4) on each frame's graph A^p + A^m + A^c_t, no window anywhere
    a_c = block(x.reshape(12, 1, 5, 6)).view(3, 4, 5, 5)
    a_hat = a_p + ref.topology.mask + a_c + torch.eye(5)
    d = a_hat.abs().sum(-1).rsqrt()
    h = torch.relu((d.unsqueeze(-1) * a_hat * d.unsqueeze(-2)) @ ref.lin(x) + ref.bias)
    y = h * ref.collapse.weight[:, 0, 0]
    y = torch.relu(ref.bn(y.reshape(-1, 6))).view(3, 4, 5, 6) + x
    torch.testing.assert_close(layer(x), y, atol=1e-5, rtol=1e-5)


def test_zero_padding_isolates_the_clip_ends():
    # physical only, mask off: frame 0's output depends on frames 0 and 1 only (tau = 3)
    torch.manual_seed(1)
    layer = DenseSlidingWindowGCN(3, 3, PATH3, tau=3, use_mask=False, use_context=False).eval()
    x = torch.randn(1, 5, 3, 3)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(layer(x)[:, :2], layer(x2)[:, :2])
    assert not torch.allclose(layer(x)[:, 2], layer(x2)[:, 2])


@pytest.mark.parametrize("flags", [
    {},
    {"use_mask": False, "use_context": False},
    {"use_physical": False, "use_mask": False, "use_context": False},
    {"residual": False, "bias": False},
])
def test_dense_equals_sparse_values_and_gradients(flags):
    torch.manual_seed(2)
    c_out = 5 if flags.get("residual", True) is False else 6
    a_p = COCO17.physical_adjacency("s2")
    sparse = _randomise(SlidingWindowGCN(6, c_out, a_p, tau=3, **flags)).double()
    dense = DenseSlidingWindowGCN(6, c_out, a_p, tau=3, **flags).double()
    assert list(dense.state_dict()) == list(sparse.state_dict())
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(3, 4, 10, 6, dtype=torch.float64)
    xd, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    target = torch.randn(3, 4, 10, c_out, dtype=torch.float64)
    out_d, out_s = dense(xd), sparse(xs)
    torch.testing.assert_close(out_s, out_d, atol=1e-10, rtol=1e-8)
    ((out_d - target) ** 2).sum().backward()
    ((out_s - target) ** 2).sum().backward()
    grads_d = dict(dense.named_parameters())
    for k, p in sparse.named_parameters():
        torch.testing.assert_close(p.grad, grads_d[k].grad, atol=1e-5, rtol=1e-5)
        assert p.grad.abs().sum() > 0, f"no gradient reaches {k}"
    torch.testing.assert_close(xs.grad, xd.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse.bn.running_mean, dense.bn.running_mean)


def test_sparse_accepts_pyg_nodes_in_any_order():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 4)
    layer = SlidingWindowGCN(4, 4, COCO17.physical_adjacency("s3"), tau=3).eval()
    batch = KeypointGraphBuilder().to_batch(x, "s3")
    perm = torch.randperm(batch.num_nodes)
    out = layer(batch.x[perm], clip=batch.clip[perm], frame=batch.frame[perm],
                part=batch.part[perm])
    torch.testing.assert_close(out, layer(x).reshape(-1, 4)[perm])
    x_win, edge_index, w = layer.window_graph(x)
    assert x_win.shape == (2 * 3 * 3 * 5, 4) and edge_index.size(1) == w.numel() == 6 * 15 * 15
    assert bool((x_win.view(2, 3, 3, 5, 4)[:, 0, 0] == 0).all())  # padding before frame 0


def test_batch_permutation_equivariance():
    torch.manual_seed(4)
    layer = DenseSlidingWindowGCN(4, 4, PATH3, tau=3)  # train mode: BN batch statistics
    x = torch.randn(5, 3, 3, 4)
    perm = torch.randperm(5)
    torch.testing.assert_close(layer(x[perm]), layer(x)[perm], atol=1e-5, rtol=1e-5)
    sparse = SlidingWindowGCN(4, 4, PATH3, tau=3)
    sparse.load_state_dict(layer.state_dict())
    torch.testing.assert_close(sparse(x[perm]), sparse(x)[perm], atol=1e-5, rtol=1e-5)


def test_repr_and_errors():
    a_p = COCO17.physical_adjacency("s1")
    assert repr(SlidingWindowGCN(256, 256, a_p, tau=3)) == "SlidingWindowGCN(256, 256, tau=3)"
    assert repr(DenseSlidingWindowGCN(256, 256, a_p)) == "DenseSlidingWindowGCN(256, 256, tau=3)"
    with pytest.raises(ValueError, match="residual=True needs in_channels == out_channels"):
        DenseSlidingWindowGCN(8, 4, a_p)
    with pytest.raises(ValueError, match="tau must be >= 1"):
        SlidingWindowGCN(4, 4, a_p, tau=0)
    with pytest.raises(ValueError, match=r"\(B, T, 17, 4\), got \(2, 3, 10, 4\)"):
        DenseSlidingWindowGCN(4, 4, a_p)(torch.zeros(2, 3, 10, 4))
    with pytest.raises(ValueError, match=r"\(B, T, 17, 4\), got \(2, 3, 10, 4\)"):
        SlidingWindowGCN(4, 4, a_p)(torch.zeros(2, 3, 10, 4))
    with pytest.raises(ValueError, match="need clip, frame and part"):
        SlidingWindowGCN(4, 4, a_p)(torch.zeros(17, 4))
    with pytest.raises(ValueError, match="do not fill"):
        SlidingWindowGCN(4, 4, PATH3)(torch.zeros(5, 4), clip=torch.zeros(5, dtype=torch.long),
                                       frame=torch.tensor([0, 0, 0, 1, 1]),
                                       part=torch.tensor([0, 1, 2, 0, 1]))
