import pytest
import torch

from stgraph.losses import ReIDLoss
from stgraph.models import DRSTA, create_model, list_models
from stgraph.nn import hellinger_diversity

SMALL = {"backbone": "resnet18"}  # C = 512
C = 512


def _maps(b=2, t=4, h=4, w=2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, C, h, w, generator=g, dtype=dtype)


def test_registered_with_the_documented_defaults():
    assert "drsta" in list_models()
    model = create_model("drsta", num_classes=3, **SMALL)
    assert isinstance(model, DRSTA)
    assert (model.num_parts, model.hidden_channels, model.shared_attention,
            model.part_channels, model.diversity_weight) == (6, 64, False, None, 0.1)


def test_head_is_the_composition_of_its_layers():
    # f = concat_k sum_n t_{n,k} x_{n,k}, from attention_head's maps, temporal weights, parts
    torch.manual_seed(0)
    model = DRSTA(num_classes=3, num_parts=3, **SMALL).double()
    maps = _maps(dtype=torch.float64)
    att = model.attention_head(maps)
    out = model.forward_head(maps)
    assert out["branches"] == ("parts",)
    f = (att["temporal"][..., None] * att["parts"]).sum(dim=1).flatten(1)  # (B, K C)
    torch.testing.assert_close(out["features"][0], f)
    # the parts are the spatial maps' weighted sums of the cells
    parts = torch.einsum("btkhw,btchw->btkc", att["spatial"], maps)
    torch.testing.assert_close(att["parts"], parts)
    # the regulariser: weight x the diversity of the maps, averaged over the B T frames
    div = hellinger_diversity(att["spatial"].flatten(-2), reduction="none")  # (B, T)
    torch.testing.assert_close(out["regularizers"]["drsta_div"], 0.1 * div.mean())


def test_attention_head_follows_the_plotting_contract():
    torch.manual_seed(0)
    model = DRSTA(num_classes=3, num_parts=4, **SMALL).eval()
    att = model.attention_head(_maps(b=3, t=5, h=4, w=2))
    assert att["spatial"].shape == (3, 5, 4, 4, 2)
    assert att["temporal"].shape == (3, 5, 4)
    assert bool((att["spatial"] >= 0).all())
    torch.testing.assert_close(att["spatial"].sum(dim=(-2, -1)), torch.ones(3, 5, 4))
    torch.testing.assert_close(att["temporal"].sum(dim=1), torch.ones(3, 4))


@pytest.mark.parametrize("part_channels", [None, 16])
def test_embedding_width_and_regularizers_in_train_and_eval(part_channels):
    torch.manual_seed(0)
    model = DRSTA(num_classes=3, num_parts=3, part_channels=part_channels, **SMALL)
    width = 3 * (part_channels or C)
    out = model.forward_head(_maps())
    model.eval()
    with torch.no_grad():
        out_eval = model.forward_head(_maps())
    for o in (out, out_eval):
        assert o["embedding"].shape == (2, width)
        assert set(o["regularizers"]) == {"drsta_div"} and o["regularizers"]["drsta_div"].dim() == 0
    assert set(out) == set(out_eval)


def test_part_reduction_is_one_linear_layer_per_part():
    torch.manual_seed(1)
    model = DRSTA(num_classes=3, num_parts=3, part_channels=5, **SMALL).double()
    maps = _maps(dtype=torch.float64)
    att = model.attention_head(maps)
    clip = (att["temporal"][..., None] * att["parts"]).sum(dim=1)  # (B, K, C)
    w = model.reduce.weight[:, :, 0]  # (K D, C): rows of part k at k D .. (k + 1) D
    b = model.reduce.bias
    expected = torch.cat([clip[:, k] @ w[5 * k:5 * (k + 1)].t() + b[5 * k:5 * (k + 1)]
                          for k in range(3)], dim=1)
    torch.testing.assert_close(model.forward_head(maps)["features"][0], expected)


def test_diversity_term_enters_the_loss_and_trains_only_the_spatial_attention():
    torch.manual_seed(0)
    model = DRSTA(num_classes=3, num_parts=3, diversity_weight=0.5, **SMALL)
    maps = _maps(b=4, seed=2)
    pids = torch.tensor([0, 0, 1, 1])
    out = model.forward_head(maps)
    total, parts = ReIDLoss(3)(out, pids)
    reg = out["regularizers"]["drsta_div"]
    assert parts["drsta_div"] == pytest.approx(reg.item())
    without = ReIDLoss(3)({**out, "regularizers": {}}, pids)[0]
    torch.testing.assert_close(total, without + reg)
    # R is in [0, K (K - 1)]: 0.5 * [0, 6]
    assert 0 <= reg.item() <= 3
    reg.backward()
    for name, p in model.named_parameters():
        got = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert got == name.startswith("spatial."), name


def test_zero_diversity_weight_keeps_the_key():
    model = DRSTA(num_classes=3, num_parts=2, diversity_weight=0.0, **SMALL)
    assert model.forward_head(_maps())["regularizers"]["drsta_div"].item() == 0.0


def test_shared_attention_variant_trains_every_head_parameter():
    torch.manual_seed(0)
    model = DRSTA(num_classes=3, num_parts=3, shared_attention=True, part_channels=8, **SMALL)
    assert model.spatial.shared and model.spatial.bn is not None
    out = model.forward_head(_maps(b=4))
    loss = torch.nn.functional.cross_entropy(out["logits"][0], torch.tensor([0, 0, 1, 2]))
    (loss + out["features"][0].pow(2).mean() + out["regularizers"]["drsta_div"]).backward()
    for name, p in model.named_parameters():
        if not name.startswith("backbone.") and p.requires_grad:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_full_model_on_clips():
    torch.manual_seed(0)
    model = DRSTA(num_classes=3, num_parts=3, **SMALL).eval()
    clips = torch.randn(2, 4, 3, 64, 32)
    with torch.no_grad():
        out = model(clips)
        att = model.attention_head(model.forward_features(clips))
    assert out["embedding"].shape == (2, 3 * C)
    assert att["spatial"].shape == (2, 4, 3, 4, 2)


def test_errors():
    model = DRSTA(num_classes=3, num_parts=2, **SMALL)
    with pytest.raises(ValueError, match=r"\(B, T, 512, h, w\).*got \(2, 4, 256, 4, 2\)"):
        model.forward_head(torch.randn(2, 4, 256, 4, 2))
    with pytest.raises(ValueError, match=r"got \(2, 512, 4, 2\)"):
        model.attention_head(torch.randn(2, 512, 4, 2))
    with pytest.raises(ValueError, match="num_parts must be an integer >= 1, got 0"):
        DRSTA(num_classes=3, num_parts=0, **SMALL)
    with pytest.raises(ValueError, match="part_channels must be an integer >= 1, got 0"):
        DRSTA(num_classes=3, part_channels=0, **SMALL)
    with pytest.raises(ValueError, match="diversity_weight must be finite and >= 0"):
        DRSTA(num_classes=3, diversity_weight=-1.0, **SMALL)


def test_code_diversity_form_is_the_authors_sqrt_of_the_batch_sum():
    # trainers.py of the authors' code: sqrt(sum over every frame of ||Q Q^T - I||_F^2 + 1e-5)
    torch.manual_seed(3)
    model = DRSTA(num_classes=3, num_parts=3, diversity_weight=0.7, diversity_form="code",
                  **SMALL).double()
    assert model.diversity_form == "code"
    maps = _maps(b=3, dtype=torch.float64)
    att = model.attention_head(maps)
    R = torch.sqrt(att["spatial"].flatten(-2)).matmul(
        torch.sqrt(att["spatial"].flatten(-2)).transpose(-1, -2))  # (B, T, K, K)
    R = (R - torch.eye(3, dtype=torch.float64)).pow(2).sum(dim=(-2, -1))  # (B, T)
    out = model.forward_head(maps)
    torch.testing.assert_close(out["regularizers"]["drsta_div"],
                               0.7 * torch.sqrt(R.sum() + 1e-5))
    # unlike the default mean, it grows with the batch: a batch of the clips twice -> x sqrt 2
    twice = model.forward_head(torch.cat((maps, maps)))["regularizers"]["drsta_div"]
    torch.testing.assert_close(twice, 0.7 * torch.sqrt(2 * R.sum() + 1e-5))
    paper = DRSTA(num_classes=3, num_parts=3, diversity_weight=0.7, **SMALL).double()
    paper.load_state_dict(model.state_dict())
    torch.testing.assert_close(paper.forward_head(maps)["regularizers"]["drsta_div"],
                               0.7 * R.mean())
    with pytest.raises(ValueError, match="unknown diversity_form 'authors'; choose one of: "
                                         "paper, code"):
        DRSTA(num_classes=3, diversity_form="authors", **SMALL)
