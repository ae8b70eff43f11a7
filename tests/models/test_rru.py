import pytest
import torch

from stgraph.losses import ReIDLoss
from stgraph.models import RRUSTIM, create_model

SMALL = {"backbone": "resnet18"}  # C = 512
T = 4


def _maps(B=4, h=4, w=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 512, h, w, generator=g)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("rru", num_classes=3, **SMALL)


def test_registry_and_defaults(model):
    assert isinstance(model, RRUSTIM)
    assert model.num_rows == 8
    assert model.rru.hidden_channels == 256 and model.rru.spatial_grid == (8, 8)
    assert model.stim.out_channels == 256


@pytest.mark.parametrize("size", [(4, 2), (8, 4), (16, 8)])
def test_one_model_on_different_map_sizes(model, size):
    for train in (True, False):
        model.train(train)
        with torch.set_grad_enabled(train):
            out = model.forward_head(_maps(h=size[0], w=size[1]))
        assert out["branches"] == ("stim",)
        assert out["embedding"].shape == (4, 256) and out["features"][0].shape == (4, 256)
        assert out["logits"][0].shape == (4, 3)
        assert out["part_triplet_features"].shape == (4, 8, 512)
        assert all(torch.isfinite(v).all() for v in (out["embedding"],
                                                     out["part_triplet_features"]))


def test_output_is_not_invariant_to_frame_order(model):
    model.eval()
    maps = _maps(seed=1)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a = model.forward_head(maps)
        b = model.forward_head(maps[:, perm])
    assert not torch.allclose(a["embedding"], b["embedding"], atol=1e-5)
    assert not torch.allclose(a["part_triplet_features"], b["part_triplet_features"],
                              atol=1e-5)


def test_part_features_rows_by_hand(model):
    s = torch.arange(2 * 3 * 512 * 16 * 2, dtype=torch.float32).view(2, 3, 512, 16, 2)
    rows = s.mean(dim=(1, 4))  # (B, C, 16)
    # 16-high maps: each of the 8 rows averages two map rows
    expected = rows.view(2, 512, 8, 2).mean(-1).transpose(1, 2)
    torch.testing.assert_close(model.part_features(s), expected)
    # 8-high maps: one map row each (the official layout)
    torch.testing.assert_close(model.part_features(s[..., :8, :]),
                               s[..., :8, :].mean(dim=(1, 4)).transpose(1, 2))
    # 4-high maps: each map row repeated twice
    p = model.part_features(s[..., :4, :])
    torch.testing.assert_close(p, s[..., :4, :].mean(dim=(1, 4)).transpose(1, 2)
                               .repeat_interleave(2, dim=1))


def test_part_triplet_reaches_the_rru_through_the_loss():
    torch.manual_seed(0)
    model = RRUSTIM(num_classes=2, num_rows=4, spatial_grid=[4, 2], **SMALL)
    out = model.forward_head(_maps(seed=2))
    assert out["part_triplet_features"].shape == (4, 4, 512)
    loss, parts = ReIDLoss(2, margin=0.4)(out, torch.tensor([0, 0, 1, 1]))
    assert {"ce", "triplet", "part_triplet"} <= set(parts)
    model.zero_grad()
    # the part triplet alone back-propagates into the RRU's gate, not into STIM
    torch.autograd.backward(ReIDLoss(2, margin=10.0, ce_weight=0, triplet_weight=0)(
        out, torch.tensor([0, 0, 1, 1]))[0])
    assert model.rru.transition.weight.grad.abs().sum() > 0
    g = model.stim.conv1.weight.grad
    assert g is None or not g.any()


def test_attention_head_contract(model):
    model.eval()
    maps = _maps(B=2, h=8, w=4, seed=3)
    with torch.no_grad():
        att = model.attention_head(maps)
    spatial, temporal = att["spatial"], att["temporal"]
    assert spatial.shape == (2, T, 1, 8, 4) and temporal.shape == (2, T, 1)
    assert (spatial >= 0).all()
    torch.testing.assert_close(spatial.sum(dim=(3, 4)), torch.ones(2, T, 1))
    # frame 0 has no gate: uniform map, temporal score 1
    torch.testing.assert_close(spatial[:, 0], torch.full((2, 1, 8, 4), 1 / 32))
    torch.testing.assert_close(temporal[:, 0], torch.ones(2, 1))
    assert ((temporal[:, 1:] > 0) & (temporal[:, 1:] < 1)).all()
    torch.testing.assert_close(temporal, att["gates"].mean(dim=(2, 3, 4))[..., None])


def test_full_model_on_clips_of_two_sizes():
    torch.manual_seed(0)
    model = RRUSTIM(num_classes=3, **SMALL).eval()
    with torch.no_grad():
        for H, W, h, w in ((64, 32, 4, 2), (128, 64, 8, 4)):
            out = model(torch.randn(2, T, 3, H, W))
            assert out["embedding"].shape == (2, 256)
            assert out["part_triplet_features"].shape == (2, 8, 512)
            att = model.attention_head(model.forward_features(torch.randn(1, T, 3, H, W)))
            assert att["spatial"].shape == (1, T, 1, h, w)


def test_errors(model):
    with pytest.raises(ValueError, match="num_rows must be an integer >= 1, got 0"):
        RRUSTIM(num_classes=3, num_rows=0, **SMALL)
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\), got \(2, 512, 4, 2\)"):
        model.forward_head(torch.zeros(2, 512, 4, 2))
    with pytest.raises(ValueError, match="in_channels=512"):
        model.forward_head(torch.zeros(2, T, 256, 4, 2))


def test_attention_head_errors(model):
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\), got \(2, 512, 4, 2\)"):
        model.attention_head(torch.zeros(2, 512, 4, 2))
    with pytest.raises(ValueError, match="in_channels=512"):
        model.attention_head(torch.zeros(2, T, 256, 4, 2))
