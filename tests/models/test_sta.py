import pytest
import torch

from stgraph.losses import ReIDLoss
from stgraph.models import STA, create_model
from stgraph.nn import SpatialTemporalAttention, inter_frame_regularization

SMALL = {"backbone": "resnet18"}
T, H, W = 4, 64, 32  # resnet18 with last stride 1: 4 x 2 maps of 512 channels


def _clips(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, T, 3, H, W, generator=g)


def test_registered_output_and_regularizer_in_both_modes():
    torch.manual_seed(0)
    model = create_model("sta", num_classes=5, **SMALL)
    assert isinstance(model, STA) and model.num_blocks == 4 and model.reg_weight == 1.0
    out = model(_clips())
    assert out["branches"] == ("sta",)
    assert out["embedding"].shape == (4, 512)  # embed_dim defaults to the backbone width
    assert set(out["regularizers"]) == {"sta_reg"}
    assert out["regularizers"]["sta_reg"].dim() == 0 and out["regularizers"]["sta_reg"] > 0
    model.eval()
    with torch.no_grad():
        out_eval = model(_clips())
    assert set(out_eval) == set(out) and set(out_eval["regularizers"]) == {"sta_reg"}


def test_head_by_hand_on_frames_with_uniform_attention():
    # every cell of a frame holds the same vector c_t: g is uniform in every frame, all
    # block scores tie (S = 1/T), the discriminative map is frame 0, the global map the mean
    torch.manual_seed(1)
    C = 512  # resnet18's width
    model = STA(num_classes=3, num_blocks=2, embed_dim=2 * C, **SMALL).double()
    with torch.no_grad():  # the FC made the identity: the features are GAP([X_1; X_2])
        model.fc.weight.copy_(torch.eye(2 * C))
        model.fc.bias.zero_()
    c = torch.randn(2, T, C, 1, 1, dtype=torch.float64)
    maps = c.expand(2, T, C, 4, 2)
    out = model.forward_head(maps)
    expected = torch.cat((c[:, 0, :, 0, 0], c.mean(dim=1)[:, :, 0, 0]), dim=1)
    torch.testing.assert_close(out["features"][0], expected)
    assert out["regularizers"]["sta_reg"].item() == 0.0  # identical attention maps


def test_regularizer_is_weighted_and_enters_the_loss():
    torch.manual_seed(2)
    model = STA(num_classes=3, reg_weight=0.25, **SMALL)
    maps = torch.randn(4, T, 512, 4, 2).relu()
    out = model.forward_head(maps)
    g = SpatialTemporalAttention(num_blocks=4)(maps).spatial
    torch.testing.assert_close(out["regularizers"]["sta_reg"],
                               0.25 * inter_frame_regularization(g))
    pids = torch.tensor([0, 0, 1, 1])
    crit = ReIDLoss(3)
    total, parts = crit(out, pids)
    without = {k: v for k, v in out.items() if k != "regularizers"}
    total0, _ = crit(without, pids)
    assert parts["sta_reg"] == pytest.approx(out["regularizers"]["sta_reg"].item())
    assert (total - total0).item() == pytest.approx(parts["sta_reg"], rel=1e-5)
    first_last = STA(num_classes=3, reg_pairs="first_last", **SMALL).forward_head(maps)
    torch.testing.assert_close(first_last["regularizers"]["sta_reg"],
                               inter_frame_regularization(g, pairs="first_last"))


def test_regularizer_gradient_reaches_the_backbone():
    torch.manual_seed(3)
    model = STA(num_classes=3, **SMALL)
    model(_clips(2))["regularizers"]["sta_reg"].backward()
    grad = model.backbone.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    off = STA(num_classes=3, reg_weight=0.0, **SMALL)(_clips(2))["regularizers"]["sta_reg"]
    assert off.item() == 0.0


def test_embedding_is_invariant_to_frame_order():
    torch.manual_seed(4)
    model = STA(num_classes=3, **SMALL).eval()
    clips = _clips(3, seed=5)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a, b = model(clips), model(clips[:, perm])
    torch.testing.assert_close(b["embedding"], a["embedding"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["regularizers"]["sta_reg"], a["regularizers"]["sta_reg"])


def test_attention_head_contract():
    torch.manual_seed(5)
    model = STA(num_classes=3, num_blocks=3, **SMALL).eval()
    att = model.attention_head(model.forward_features(_clips(2)))
    spatial, temporal = att["spatial"], att["temporal"]
    assert spatial.shape == (2, T, 1, 4, 2) and (spatial >= 0).all()
    torch.testing.assert_close(spatial.sum(dim=(-2, -1)), torch.ones(2, T, 1))
    assert temporal.shape == (2, T, 3)
    torch.testing.assert_close(temporal.sum(dim=1), torch.ones(2, 3))
    assert att["frames"].shape == (2, 3)
    assert att["row_blocks"].tolist() == [0, 0, 1, 2]  # 4 rows in 3 near-equal blocks
    assert att["frames"].equal(temporal.argmax(dim=1))


def test_custom_embedding_width():
    model = STA(num_classes=3, embed_dim=64, **SMALL)
    assert model(_clips(2))["embedding"].shape == (2, 64)


def test_errors():
    model = STA(num_classes=3, num_blocks=5, **SMALL)
    with pytest.raises(ValueError, match="num_blocks=5 horizontal blocks .* got h=4"):
        model(_clips(2))
    with pytest.raises(ValueError, match="num_blocks must be an integer >= 1, got 0"):
        STA(num_classes=3, num_blocks=0, **SMALL)
    with pytest.raises(ValueError, match="embed_dim must be an integer >= 1, got 0"):
        STA(num_classes=3, embed_dim=0, **SMALL)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reg_weight must be finite and >= 0"):
            STA(num_classes=3, reg_weight=bad, **SMALL)
    with pytest.raises(ValueError, match="unknown reg_pairs 'random'"):
        STA(num_classes=3, reg_pairs="random", **SMALL)


def test_regularizer_stays_float32_for_half_precision_maps():
    # g is computed in float32 from bfloat16 maps; the regulariser must not be rounded to
    # bfloat16 (8 bits of mantissa) on its way into the loss
    torch.manual_seed(4)
    model = STA(num_classes=3, reg_weight=0.37, **SMALL).to(torch.bfloat16)
    maps = torch.randn(3, T, 512, 4, 2).relu().to(torch.bfloat16)
    out = model.forward_head(maps)
    assert out["features"][0].dtype == torch.bfloat16
    reg = out["regularizers"]["sta_reg"]
    assert reg.dtype == torch.float32
    g = SpatialTemporalAttention(num_blocks=4)(maps).spatial
    assert g.dtype == torch.float32
    torch.testing.assert_close(reg, 0.37 * inter_frame_regularization(g), rtol=1e-6, atol=0)
