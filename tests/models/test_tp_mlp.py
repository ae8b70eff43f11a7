"""TemporalPoolingMLP: the capacity control of the graph heads (size, start as TP, invariances)."""

import pytest
import torch

from stgraph.models import (
    STGCN,
    TemporalPooling,
    TemporalPoolingMLP,
    create_model,
    head_parameters,
    list_models,
)

SMALL = {"backbone": "resnet18"}  # C = 512
C, T = 512, 4


def _maps(b=3, t=T, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, C, 4, 2, generator=g, dtype=dtype)


def test_registered():
    assert "tp_mlp" in list_models()
    model = create_model("tp_mlp", num_classes=3, **SMALL)
    assert type(model) is TemporalPoolingMLP
    assert (model.hidden, model.num_layers) == (769, 2)


def test_head_is_the_size_of_stgcns_head():
    # STGCN at its defaults: seq_len=8, num_patches=4, num_layers=2
    stgcn = STGCN(num_classes=7, **SMALL)
    model = TemporalPoolingMLP(num_classes=7, **SMALL)
    n_stgcn, n_mlp = head_parameters(stgcn), head_parameters(model)
    assert n_stgcn == 1_580_544
    assert abs(n_mlp - n_stgcn) <= 0.1 * n_stgcn
    assert abs(n_mlp - n_stgcn) <= 2 * C + 3  # within half a width step (L = 2)
    # by hand: two blocks of Linear(512, 769) + BN(769) + Linear(769, 512), the BNNeck weight
    assert n_mlp == 2 * (512 * 769 + 769 + 2 * 769 + 769 * 512 + 512) + 512
    # the backbone and the classifiers are not counted, the BNNeck's frozen shift neither
    assert head_parameters(TemporalPooling(num_classes=7, **SMALL)) == C


def test_documented_counts_for_resnet50():
    with torch.device("meta"):  # shapes only
        stgcn = STGCN(num_classes=625)
        model = TemporalPoolingMLP(num_classes=625)
    assert model.hidden == 2640
    assert (head_parameters(model), head_parameters(stgcn)) == (21_648_864, 21_646_848)


def test_head_size_follows_num_layers():
    model = TemporalPoolingMLP(num_classes=3, num_layers=3, **SMALL)
    stgcn = STGCN(num_classes=3, num_layers=3, **SMALL)
    assert abs(head_parameters(model) - head_parameters(stgcn)) <= 3 * (2 * C + 3) / 2


def test_match_parameters():
    for target in (10_000, 123_457, 5_000_000):
        for layers in (1, 2, 4):
            h = TemporalPoolingMLP.match_parameters(target, C, layers)
            model = TemporalPoolingMLP(num_classes=3, hidden=h, num_layers=layers, **SMALL)
            assert abs(head_parameters(model) - target) <= layers * (2 * C + 3) / 2
    with pytest.raises(ValueError, match="num_layers must be >= 1 to match"):
        TemporalPoolingMLP.match_parameters(10_000, C, 0)
    with pytest.raises(ValueError, match="below the smallest head"):
        TemporalPoolingMLP.match_parameters(100, C, 2)


def test_zero_init_is_tp():
    torch.manual_seed(0)
    tp = TemporalPooling(num_classes=5, **SMALL).double()
    model = TemporalPoolingMLP(num_classes=5, zero_init=True, **SMALL).double()
    model.backbone.load_state_dict(tp.backbone.state_dict())
    clips = torch.randn(2, T, 3, 64, 32, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    # train mode: same pre-BNNeck features (and the same BNNeck running statistics after)
    out_tp, out = tp(clips), model(clips)
    torch.testing.assert_close(out["features"][0], out_tp["features"][0], atol=1e-12, rtol=0)
    tp.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(clips)["embedding"], tp(clips)["embedding"],
                                   atol=1e-12, rtol=0)


def test_default_init_is_not_tp():
    torch.manual_seed(0)
    model = TemporalPoolingMLP(num_classes=5, **SMALL)
    maps = _maps()
    assert not torch.allclose(model.forward_head(maps)["features"][0], maps.mean(dim=(1, 3, 4)))


def _head_grads(model, maps, pids):
    model.zero_grad()
    out = model.forward_head(maps)
    loss = sum(torch.nn.functional.cross_entropy(lg, pids) for lg in out["logits"])
    (loss + out["features"][0].pow(2).mean()).backward()
    return {n: p.grad for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("backbone.")}


def test_zero_init_gradient_reaches_every_head_parameter_after_one_step():
    torch.manual_seed(0)
    model = TemporalPoolingMLP(num_classes=5, hidden=16, zero_init=True, **SMALL)
    maps, pids = _maps(b=4), torch.tensor([0, 1, 2, 3])
    grads = _head_grads(model, maps, pids)
    # first step: W_2 = 0 blocks the gradient to W_1, b_1 and the blocks' BN
    assert grads["blocks.0.0.weight"].abs().sum() == 0
    assert grads["blocks.0.4.weight"].abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    grads = _head_grads(model, maps, pids)
    missing = [n for n, g in grads.items()
               if g is None or not torch.isfinite(g).all() or g.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("train", [True, False])
def test_invariant_to_frame_order(train):
    torch.manual_seed(0)
    model = TemporalPoolingMLP(num_classes=5, hidden=32, **SMALL).train(train)
    maps = _maps(seed=2)
    perm = torch.tensor([2, 0, 3, 1])
    out, out_perm = model.forward_head(maps), model.forward_head(maps[:, perm])
    for key in ("embedding", "features"):
        a = out[key] if key == "embedding" else out[key][0]
        b = out_perm[key] if key == "embedding" else out_perm[key][0]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_any_clip_length():
    model = TemporalPoolingMLP(num_classes=5, hidden=8, **SMALL).eval()
    assert model.forward_head(_maps(t=3))["embedding"].shape == (3, C)


def test_no_layers_is_tp():
    model = TemporalPoolingMLP(num_classes=5, num_layers=0, **SMALL)
    assert len(model.blocks) == 0 and model.hidden is None
    maps = _maps()
    torch.testing.assert_close(model.forward_head(maps)["features"][0], maps.mean(dim=(1, 3, 4)))


def test_errors():
    with pytest.raises(ValueError, match="num_layers must be >= 0, got -1"):
        TemporalPoolingMLP(num_classes=3, num_layers=-1, **SMALL)
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        TemporalPoolingMLP(num_classes=3, hidden=0, **SMALL)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        TemporalPoolingMLP(num_classes=3, dropout=1.0, **SMALL)
    model = TemporalPoolingMLP(num_classes=3, hidden=8, **SMALL)
    with pytest.raises(ValueError, match=r"expected feature maps of shape \(B, T, 512, h, w\), "
                                         r"got \(2, 256, 4, 2\)"):
        model.forward_head(torch.randn(2, 256, 4, 2))


def test_docstring_examples():
    import doctest

    from stgraph.models import tp_mlp

    assert doctest.testmod(tp_mlp).failed == 0
