import pytest
import torch

from stgraph.graph import complete_edge_index
from stgraph.nn import AffinityGCNConv, DenseAffinityGCN


def _identity_layers(c):
    sparse = AffinityGCNConv(c, c)
    with torch.no_grad():
        sparse.phi.weight.copy_(torch.eye(c))
        sparse.lin.weight.copy_(torch.eye(c))
    dense = DenseAffinityGCN(c, c)
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def test_values_by_hand_on_three_nodes():
    # phi = W = I, x = [1,0], [0,1], [1,1]; affinities e = x_i . x_j:
    #   e = [[1,0,1],[0,1,1],[1,1,2]]  -> e^2 = [[1,0,1],[0,1,1],[1,1,4]]
    #   A = rows / [2, 2, 6]; A + I has row sums 2; A^ = (A + I) / 2.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    a = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [1 / 6, 1 / 6, 4 / 6]])
    a_hat = (a + torch.eye(3)) / 2
    expected = a_hat @ x
    sparse, dense = _identity_layers(2)
    out_sparse = sparse(x, complete_edge_index(3))
    out_dense, adj = dense(x.unsqueeze(0), return_adjacency=True)
    torch.testing.assert_close(adj[0], a_hat)
    torch.testing.assert_close(out_sparse, expected)
    torch.testing.assert_close(out_dense[0], expected)


def test_degree_normalisation_on_a_path_graph():
    # Edges 0-1, 1-2 (both directions), no given self-loops, phi = W = I, x = ones:
    # e = 1 on every edge -> A rows: node 0 [0,1,0], node 1 [.5,0,.5], node 2 [0,1,0];
    # A + I has row sums 2 -> A^ = (A + I) / 2.
    x = torch.ones(3, 2)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    sparse, _ = _identity_layers(2)
    a = torch.tensor([[0.0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]])
    ei_out, w = sparse.adjacency(x, ei)
    dense_adj = torch.zeros(3, 3).index_put_((ei_out[1], ei_out[0]), w, accumulate=True)
    torch.testing.assert_close(dense_adj, (a + torch.eye(3)) / 2)


def test_dense_equals_sparse_with_gradients_on_a_padded_batch():
    torch.manual_seed(0)
    c_in, c_out, n = 6, 5, 7
    sparse = AffinityGCNConv(c_in, c_out, embed_channels=3)
    with torch.no_grad():
        sparse.bias.normal_()
    dense = DenseAffinityGCN(c_in, c_out, embed_channels=3)
    assert list(dense.state_dict()) == list(sparse.state_dict())
    dense.load_state_dict(sparse.state_dict())
    sizes = [7, 4]  # second graph padded from 4 to 7 nodes in the dense form
    x = torch.randn(2, n, c_in)
    mask = torch.zeros(2, n, dtype=torch.bool)
    for b, s in enumerate(sizes):
        mask[b, :s] = True
    out_dense = dense(x, mask=mask)
    loss_d = (out_dense ** 2).sum()
    loss_d.backward()
    grads_d = {k: p.grad.clone() for k, p in dense.named_parameters()}

    xs = torch.cat([x[b, :s] for b, s in enumerate(sizes)])
    ei = torch.cat([complete_edge_index(7), complete_edge_index(4) + 7], dim=1)
    out_sparse = sparse(xs, ei)
    (out_sparse ** 2).sum().backward()
    torch.testing.assert_close(out_dense[mask], out_sparse, atol=1e-5, rtol=1e-5)
    assert bool((out_dense[~mask] == 0).all())
    for k, p in sparse.named_parameters():
        torch.testing.assert_close(p.grad, grads_d[k], atol=1e-5, rtol=1e-4)


def test_permutation_equivariance():
    torch.manual_seed(1)
    layer = DenseAffinityGCN(4, 3)
    x = torch.randn(2, 6, 4)
    perm = torch.randperm(6)
    torch.testing.assert_close(layer(x)[:, perm], layer(x[:, perm]), atol=1e-6, rtol=1e-5)
    conv = AffinityGCNConv(4, 3)
    ei = complete_edge_index(6)
    inv = torch.argsort(perm)
    torch.testing.assert_close(conv(x[0], ei)[perm], conv(x[0][perm], inv[ei]),
                               atol=1e-6, rtol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(2)
    layer = DenseAffinityGCN(3, 2).double()
    x = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    conv = AffinityGCNConv(3, 2).double()
    ei = complete_edge_index(4)
    assert torch.autograd.gradcheck(lambda t: conv(t[0], ei), (x,))


def test_zero_affinity_gives_no_nan():
    layer = DenseAffinityGCN(2, 2)
    out = layer(torch.zeros(1, 3, 2))
    assert torch.isfinite(out).all()


def test_repr_and_errors():
    assert repr(AffinityGCNConv(2048, 2048)) == "AffinityGCNConv(2048, 2048)"
    assert repr(DenseAffinityGCN(2048, 256)) == "DenseAffinityGCN(2048, 256)"
    with pytest.raises(ValueError, match=r"\(B, N, 4\), got \(3, 4\)"):
        DenseAffinityGCN(4, 2)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(num_nodes, 4\), got \(3, 5\)"):
        AffinityGCNConv(4, 2)(torch.zeros(3, 5), complete_edge_index(3))
    with pytest.raises(ValueError, match="mask of shape"):
        DenseAffinityGCN(4, 2)(torch.zeros(1, 3, 4), mask=torch.ones(1, 2, dtype=torch.bool))
