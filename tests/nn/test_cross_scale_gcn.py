import pytest
import torch
from torch_geometric.utils import scatter

from stgraph.nn import CrossScaleGCN, DenseCrossScaleGCN


def _randomise_bn(layer):
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(std=0.2)
                m.running_mean.normal_(std=0.2)
                m.running_var.uniform_(0.5, 2.0)
        layer.bias.normal_(std=0.1)
    return layer


def _reference(layer, x_fine, x_coarse, divisor=1.0):
    """Eq. (5)-(6) node by node (eval mode: BN is a fixed affine map); the logits
    r_m^T r_i divided by ``divisor`` (sqrt(d) for the scaled attention)."""
    def relation(x, h, f):
        N = x.size(0)
        r = []
        for i in range(N):
            p = sum(h(torch.cat([layer.phi(x[i:i + 1]), layer.varphi(x[j:j + 1] - x[i:i + 1])],
                                dim=-1)) for j in range(N))
            r.append(f(torch.cat([x[i:i + 1], p], dim=-1))[0])
        return torch.stack(r)

    B, T = x_fine.shape[:2]
    out = torch.empty(B, T, x_coarse.size(2), layer.out_channels)
    att = torch.empty(B, T, x_coarse.size(2), x_fine.size(2))
    for b in range(B):
        for t in range(T):
            r_f = relation(x_fine[b, t], layer.h_fine, layer.f_fine)
            r_c = relation(x_coarse[b, t], layer.h_coarse, layer.f_coarse)
            for m in range(r_c.size(0)):
                logits = torch.stack([r_c[m] @ r_f[i] for i in range(r_f.size(0))]) / divisor
                a = torch.exp(logits - logits.max())
                att[b, t, m] = a / a.sum()
            out[b, t] = torch.relu(att[b, t] @ layer.lin(x_fine[b, t]) + layer.bias)
    return out, att


@pytest.mark.parametrize("cls", [DenseCrossScaleGCN, CrossScaleGCN])
@pytest.mark.parametrize("scale_attention, divisor", [(False, 1.0), (True, 2.0)],
                         ids=["paper-unscaled", "scaled"])
def test_matches_eq5_eq6_node_by_node(cls, scale_attention, divisor):
    """d = 4: the scaled attention divides r_m^T r_i by sqrt(4) = 2."""
    torch.manual_seed(0)
    layer = _randomise_bn(cls(6, 5, embed_channels=4, scale_attention=scale_attention)).eval()
    assert layer.scale_attention is scale_attention
    x_fine, x_coarse = torch.randn(2, 2, 4, 6), torch.randn(2, 2, 3, 6)
    out_ref, att_ref = _reference(layer, x_fine, x_coarse, divisor)
    with torch.no_grad():
        out, att = layer(x_fine, x_coarse, return_attention=True)
    if cls is CrossScaleGCN:  # (edge_index, alpha) -> dense (B, T, N_c, N_f)
        (src, dst), alpha = att
        att = torch.zeros(2 * 2 * 3, 2 * 2 * 4).index_put_((dst, src), alpha)
        att = att.view(4, 3, 4, 4).diagonal(dim1=0, dim2=2).permute(2, 0, 1).reshape(2, 2, 3, 4)
    torch.testing.assert_close(att, att_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("num_fine", [17, 10])  # s1 -> s3 and s2 -> s3
def test_scaled_attention_is_not_one_hot_at_initialisation(num_fine):
    """Eq. (5)'s unscaled product of ReLU relation features of width d = C / 8 = 32 gives
    near one-hot rows at initialisation; divided by sqrt(d) the rows stay soft."""
    g = torch.Generator().manual_seed(1)
    x_fine = torch.randn(4, 3, num_fine, 256, generator=g).relu()  # backbone maps are post-ReLU
    x_coarse = torch.randn(4, 3, 5, 256, generator=g).relu()
    row_max = {}
    for scale_attention in (True, False):
        torch.manual_seed(0)  # same weights for both
        layer = DenseCrossScaleGCN(256, 256, scale_attention=scale_attention)  # train-mode BN
        with torch.no_grad():
            _, att = layer(x_fine, x_coarse, return_attention=True)
        row_max[scale_attention] = att.max(dim=-1).values  # (B, T, 5)
    scaled, unscaled = row_max[True], row_max[False]
    assert scaled.mean() < 0.3 and bool((scaled < 0.9).all())
    assert unscaled.mean() > 0.6 and (unscaled > 0.9).float().mean() > 0.2
    assert unscaled.mean() > 3 * scaled.mean()


def test_attention_rows_sum_to_one():
    torch.manual_seed(1)
    x_fine, x_coarse = torch.randn(3, 4, 17, 8), torch.randn(3, 4, 5, 8)
    dense = DenseCrossScaleGCN(8, 8)
    _, att = dense(x_fine, x_coarse, return_attention=True)
    assert att.shape == (3, 4, 5, 17) and bool((att >= 0).all())
    torch.testing.assert_close(att.sum(dim=-1), torch.ones(3, 4, 5))
    sparse = CrossScaleGCN(8, 8)
    _, (edge_index, alpha) = sparse(x_fine, x_coarse, return_attention=True)
    assert edge_index.size(1) == 3 * 4 * 5 * 17
    sums = scatter(alpha, edge_index[1], dim=0, dim_size=3 * 4 * 5, reduce="sum")
    torch.testing.assert_close(sums, torch.ones(3 * 4 * 5))


@pytest.mark.parametrize("scale_attention", [True, False], ids=["scaled", "paper-unscaled"])
@pytest.mark.parametrize("train", [True, False])
def test_dense_equals_sparse_values_and_gradients(train, scale_attention):
    torch.manual_seed(2)
    sparse = _randomise_bn(CrossScaleGCN(6, 5, embed_channels=4,
                                         scale_attention=scale_attention)).double().train(train)
    dense = DenseCrossScaleGCN(6, 5, embed_channels=4,
                               scale_attention=scale_attention).double().train(train)
    assert list(dense.state_dict()) == list(sparse.state_dict())
    dense.load_state_dict(sparse.state_dict())
    xf = torch.randn(3, 2, 10, 6, dtype=torch.float64)
    xc = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    xf_d, xc_d = xf.clone().requires_grad_(), xc.clone().requires_grad_()
    xf_s, xc_s = xf.clone().requires_grad_(), xc.clone().requires_grad_()
    target = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    out_d, out_s = dense(xf_d, xc_d), sparse(xf_s, xc_s)
    torch.testing.assert_close(out_s, out_d, atol=1e-10, rtol=1e-8)
    ((out_d - target) ** 2).sum().backward()
    ((out_s - target) ** 2).sum().backward()
    grads_d = dict(dense.named_parameters())
    for k, p in sparse.named_parameters():
        torch.testing.assert_close(p.grad, grads_d[k].grad, atol=1e-5, rtol=1e-5)
        if train:
            assert p.grad.abs().sum() > 0, f"no gradient reaches {k}"
    torch.testing.assert_close(xf_s.grad, xf_d.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xc_s.grad, xc_d.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse.phi[1].running_var, dense.phi[1].running_var)


def test_sparse_accepts_pyg_node_sets_in_any_order():
    torch.manual_seed(3)
    layer = _randomise_bn(CrossScaleGCN(4, 3)).eval()
    xf, xc = torch.randn(2, 3, 6, 4), torch.randn(2, 3, 2, 4)
    expected = layer(xf, xc).reshape(-1, 3)
    frames = torch.arange(6)
    bf, bc = frames.repeat_interleave(6), frames.repeat_interleave(2)
    pf, pc = torch.randperm(36), torch.randperm(12)
    out = layer(xf.reshape(-1, 4)[pf], xc.reshape(-1, 4)[pc], bf[pf], bc[pc])
    torch.testing.assert_close(out, expected[pc], atol=1e-6, rtol=1e-5)


def test_fine_permutation_invariance_coarse_and_batch_equivariance():
    torch.manual_seed(4)
    layer = DenseCrossScaleGCN(8, 6)  # train mode: BN statistics are permutation-invariant
    xf, xc = torch.randn(4, 2, 7, 8), torch.randn(4, 2, 3, 8)
    out = layer(xf, xc)
    pf, pc, pb = torch.randperm(7), torch.randperm(3), torch.randperm(4)
    torch.testing.assert_close(layer(xf[:, :, pf], xc), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(xf, xc[:, :, pc]), out[:, :, pc], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(xf[pb], xc[pb]), out[pb], atol=1e-5, rtol=1e-5)


def test_repr_defaults_and_errors():
    assert repr(CrossScaleGCN(2048, 2048)) == "CrossScaleGCN(2048, 2048)"
    assert repr(DenseCrossScaleGCN(256, 128)) == "DenseCrossScaleGCN(256, 128)"
    assert CrossScaleGCN(2048, 2048).embed_channels == 256
    assert DenseCrossScaleGCN(4, 4, bias=False).bias is None
    assert CrossScaleGCN(64, 64).scale_attention and DenseCrossScaleGCN(64, 64).scale_attention
    assert DenseCrossScaleGCN(64, 64).attention_factor == pytest.approx(8 ** -0.5)  # d = 8
    assert CrossScaleGCN(64, 64, scale_attention=False).attention_factor == 1.0
    with pytest.raises(ValueError, match=r"fine node features of shape \(B, T, N_f, 4\)"):
        DenseCrossScaleGCN(4, 4)(torch.zeros(2, 3, 5, 3), torch.zeros(2, 3, 2, 4))
    with pytest.raises(ValueError, match=r"\(2, 3, N_c, 4\).*got \(2, 4, 2, 4\)"):
        DenseCrossScaleGCN(4, 4)(torch.zeros(2, 3, 5, 4), torch.zeros(2, 4, 2, 4))
    with pytest.raises(ValueError, match="need batch_fine and batch_coarse"):
        CrossScaleGCN(4, 4)(torch.zeros(5, 4), torch.zeros(2, 4))
