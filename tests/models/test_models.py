"""Every registered model: output contract, finite values, gradients to every parameter."""

import pytest
import torch
from small_models import H, T, W, small_model

from stgraph.models import STGCN, create_model, list_models

SMALL = {"backbone": "resnet18"}


def _clips(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, T, 3, H, W, generator=g)


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name):
    model = small_model(name, num_classes=5)
    clips = _clips()
    pids = torch.tensor([0, 0, 1, 1])
    out = model(clips)
    assert set(out) >= {"embedding", "features", "logits", "branches"}
    assert out["embedding"].shape[0] == 4 and out["embedding"].dim() == 2
    assert len(out["features"]) == len(out["logits"]) == len(out["branches"])
    for lg in out["logits"]:
        assert lg.shape == (4, 5)
    assert all(torch.isfinite(t).all() for t in (out["embedding"], *out["features"]))
    loss = sum(torch.nn.functional.cross_entropy(lg, pids) for lg in out["logits"])
    loss = loss + sum(f.pow(2).mean() for f in out["features"])
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and
               (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert missing == []
    # eval mode returns the same type and the same embedding width
    model.eval()
    with torch.no_grad():
        out_eval = model(clips)
    assert type(out_eval) is type(out) and set(out_eval) == set(out)
    assert out_eval["embedding"].shape == out["embedding"].shape


def test_stgcn_embedding_width_and_branches():
    model = STGCN(num_classes=3, seq_len=T, num_patches=2, **SMALL).eval()
    out = model(_clips(2))
    assert out["branches"] == ("temporal", "spatial", "global")
    assert out["embedding"].shape == (2, 512 + T * 256 + 512)


def test_stgcn_global_feature_is_the_frame_gap_averaged_over_time():
    # f_g is computed from the stripe means (equal-sized stripes); it must equal the plain
    # GAP of every frame's map averaged over the T frames, and spread its gradient evenly
    torch.manual_seed(0)
    model = STGCN(num_classes=3, seq_len=T, num_patches=2, **SMALL).double()
    maps = torch.randn(2, T, 512, 4, 2, dtype=torch.float64, requires_grad=True)
    f_g = model.forward_head(maps)["features"][2]
    torch.testing.assert_close(f_g, maps.mean(dim=(1, 3, 4)), atol=1e-12, rtol=1e-12)
    (grad,) = torch.autograd.grad(f_g[1, 7], maps)
    expected = torch.zeros_like(maps)
    expected[1, :, 7] = 1 / (T * 4 * 2)
    torch.testing.assert_close(grad, expected, atol=1e-15, rtol=0)


def test_stgcn_dense_and_pyg_backends_agree():
    torch.manual_seed(0)
    dense = STGCN(num_classes=3, seq_len=T, num_patches=2, backend="dense", **SMALL)
    pyg = STGCN(num_classes=3, seq_len=T, num_patches=2, backend="pyg", **SMALL)
    assert list(dense.state_dict()) == list(pyg.state_dict())
    pyg.load_state_dict(dense.state_dict())
    dense, pyg = dense.double(), pyg.double()  # float64: the two paths are the same algebra
    clips = _clips(2, seed=3).double()
    out_d, out_p = dense(clips), pyg(clips)  # train mode: batch-statistics BN on both
    for a, b in zip(out_d["features"], out_p["features"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    dense.eval(), pyg.eval()
    torch.testing.assert_close(dense(clips)["embedding"], pyg(clips)["embedding"],
                               atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("backend", ["torch", "pyg"])
def test_stgcn_graph_grad_scale_scales_only_the_graph_branches_gradient(backend):
    """The gradient the temporal and spatial branches send into the maps is multiplied by
    graph_grad_scale exactly, the global branch's is not, and the forward pass is unchanged;
    0 detaches the graph branches from the backbone."""
    torch.manual_seed(0)
    models = {s: STGCN(num_classes=3, seq_len=T, num_patches=2, backend=backend,
                       graph_grad_scale=s, **SMALL).double() for s in (1.0, 0.25, 0.0)}
    for m in models.values():
        m.load_state_dict(models[1.0].state_dict())
    maps = torch.randn(2, T, 512, 4, 2, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1)).relu()

    def grads(s, branches):
        x = maps.clone().requires_grad_()
        out = models[s].forward_head(x)  # train mode: batch-statistics BN, same for all
        sum(out["features"][i].square().sum() for i in branches).backward()
        return out, x.grad

    out1, g1 = grads(1.0, (0, 1))
    out_q, g_q = grads(0.25, (0, 1))
    for a, b in zip(out1["features"], out_q["features"], strict=True):
        assert torch.equal(a, b)
    assert g1.abs().sum() > 0
    torch.testing.assert_close(g_q, 0.25 * g1, atol=1e-12, rtol=1e-12)
    assert grads(0.0, (0, 1))[1] is None  # no backward from the graph branches at all
    # the global branch (index 2) is untouched; the whole loss is global + s * graph
    g_glob = grads(1.0, (2,))[1]
    assert torch.equal(grads(0.0, (2,))[1], g_glob)
    torch.testing.assert_close(grads(0.25, (0, 1, 2))[1], g_glob + 0.25 * g1,
                               atol=1e-12, rtol=1e-12)


def test_stgcn_is_invariant_to_clip_order_in_the_batch():
    torch.manual_seed(0)
    model = STGCN(num_classes=3, seq_len=T, num_patches=2, **SMALL).eval()
    clips = _clips(3, seed=5)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model(clips)["embedding"][perm], model(clips[perm])["embedding"],
                               atol=1e-5, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="unknown model 'stgnn'; choose one of: .*stgcn"):
        create_model("stgnn", num_classes=3)
    model = STGCN(num_classes=3, seq_len=T, num_patches=2, **SMALL)
    with pytest.raises(ValueError, match="seq_len=4 frames, got 3"):
        model(torch.randn(1, 3, 3, H, W))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model(torch.randn(2, 3, H, W))
    with pytest.raises(ValueError, match="unknown backend"):
        STGCN(num_classes=3, backend="sparse", **SMALL)
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="graph_grad_scale must be finite and >= 0"):
            STGCN(num_classes=3, graph_grad_scale=bad, **SMALL)
