import pytest
import torch

from stgraph.graph import KeypointGraphBuilder, complete_edge_index
from stgraph.nn import ContextBlock, DenseContextBlock


def _frame_complete_edges(B, T, N):
    """Complete graph (self-loops included) inside every frame of frame-major nodes."""
    one = complete_edge_index(N)
    return torch.cat([one + g * N for g in range(B * T)], dim=1)


def test_values_by_hand():
    # C = 2, N = 2, T = 2; s = x[..., 0] (feature squeeze), z = mean over frames,
    # lin_node: A~ = [[z0, z1], [z0 + z1, -z1]] + bias [[0, 0], [0, 1]], rows L2-normalised.
    block = DenseContextBlock(2, num_nodes=2)
    with torch.no_grad():
        block.lin_feature.weight.copy_(torch.tensor([[1.0, 0.0]]))
        block.lin_feature.bias.zero_()
        block.lin_node.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, -1]]))
        block.lin_node.bias.copy_(torch.tensor([0.0, 0, 0, 1]))
    x = torch.tensor([[[[1.0, 9.0], [2.0, 9.0]], [[3.0, 9.0], [4.0, 9.0]]]])  # (1, 2, 2, 2)
    z0, z1 = 2.0, 3.0  # means of the first channel over the frames
    raw = torch.tensor([[z0, z1], [z0 + z1, -z1 + 1]])
    expected = raw / raw.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(block(x)[0], expected)


def test_learned_time_squeeze_by_hand():
    block = DenseContextBlock(1, num_nodes=1, num_frames=3)
    with torch.no_grad():
        block.lin_feature.weight.fill_(1.0)
        block.lin_feature.bias.zero_()
        block.lin_time.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        block.lin_time.bias.fill_(0.25)
        block.lin_node.weight.fill_(1.0)
        block.lin_node.bias.zero_()
    x = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    # z = 1 - 4 + 2 + 0.25 = -0.75 -> A~ = -0.75 -> normalised -1
    assert block(x).item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="num_frames=3 frames, got clips of 4 frames"):
        block(torch.zeros(1, 4, 1, 1))


def test_rows_have_unit_norm():
    torch.manual_seed(0)
    a = DenseContextBlock(8, num_nodes=17)(torch.randn(3, 6, 17, 8))
    assert a.shape == (3, 17, 17)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3, 17))


@pytest.mark.parametrize("num_frames", [None, 4])
def test_dense_equals_sparse_with_gradients(num_frames):
    torch.manual_seed(1)
    B, T, N, C = 3, 4, 10, 6
    sparse = ContextBlock(C, N, num_frames=num_frames).double()
    dense = DenseContextBlock(C, N, num_frames=num_frames).double()
    assert list(dense.state_dict()) == list(sparse.state_dict())
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(B, T, N, C, dtype=torch.float64, requires_grad=True)
    a = dense(x)  # (B, N, N)
    batch = KeypointGraphBuilder().to_batch(x, "s2")  # nodes of each clip, frame-major
    ei = _frame_complete_edges(B, T, N)
    w = sparse(batch.x, ei, batch.part, batch.batch, batch.frame)
    src, dst = ei
    expected = a[batch.batch[dst], batch.part[dst], batch.part[src]]
    torch.testing.assert_close(w, expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(sparse.adjacency(batch.x, batch.part, batch.batch, batch.frame), a)
    # gradients: the same loss through each path
    weights = torch.randn(B, N, N, dtype=torch.float64)
    (a * weights).sum().backward()
    grads_d = {k: p.grad.clone() for k, p in dense.named_parameters()}
    gx_d = x.grad.clone()
    x.grad = None
    (sparse.adjacency(batch.x, batch.part, batch.batch, batch.frame) * weights).sum().backward()
    for k, p in sparse.named_parameters():
        torch.testing.assert_close(p.grad, grads_d[k], atol=1e-5, rtol=1e-5)
        assert p.grad.abs().sum() > 0, f"no gradient reaches {k}"
    torch.testing.assert_close(x.grad, gx_d, atol=1e-5, rtol=1e-5)


def test_sparse_accepts_any_node_order_and_physical_edges():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 4)
    block = ContextBlock(4, 5)
    batch = KeypointGraphBuilder().to_batch(x, "s3")
    w = block(batch.x, batch.edge_index, batch.part, batch.batch, batch.frame)
    perm = torch.randperm(batch.num_nodes)
    inv = torch.argsort(perm)
    w_perm = block(batch.x[perm], inv[batch.edge_index], batch.part[perm], batch.batch[perm],
                   batch.frame[perm])
    torch.testing.assert_close(w_perm, w)
    dense = DenseContextBlock(4, 5)
    dense.load_state_dict(block.state_dict())
    src, dst = batch.edge_index
    torch.testing.assert_close(w, dense(x)[batch.batch[dst], batch.part[dst], batch.part[src]])


def test_batch_permutation_equivariance():
    torch.manual_seed(3)
    block = DenseContextBlock(4, 5, num_frames=3)
    x = torch.randn(4, 3, 5, 4)
    perm = torch.randperm(4)
    torch.testing.assert_close(block(x[perm]), block(x)[perm])


def test_repr_and_errors():
    assert repr(ContextBlock(256, 17)) == "ContextBlock(256, num_nodes=17)"
    assert repr(DenseContextBlock(256, 51, num_frames=6)) == \
        "DenseContextBlock(256, num_nodes=51, num_frames=6)"
    with pytest.raises(ValueError, match=r"\(B, T, 17, 8\), got \(2, 3, 10, 8\)"):
        DenseContextBlock(8, 17)(torch.zeros(2, 3, 10, 8))
    block = ContextBlock(2, 3, num_frames=2)
    x = torch.zeros(6, 2)
    part = torch.tensor([0, 1, 2, 0, 1, 2])
    ei = complete_edge_index(6)
    with pytest.raises(ValueError, match="frame is required"):
        block(x, ei, part)
    with pytest.raises(ValueError, match="different graphs"):
        ContextBlock(2, 3)(x, ei, part, batch=torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"values in 0\.\.2"):
        ContextBlock(2, 3)(x, ei, part + 1)
