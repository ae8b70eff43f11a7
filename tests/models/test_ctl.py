"""CTL model: fusion block by hand, keypoint inputs, ablation switches, dense == PyG."""

import pytest
import torch

from stgraph.graph import COCO17, KeypointGraphBuilder, keypoint_heatmaps, prior_pose
from stgraph.models import CTL, create_model, cross_scale_pooling
from stgraph.nn import DenseCrossScaleGCN, DenseSlidingWindowGCN

T, H, W = 4, 64, 32  # resnet18, last stride 1: 4 x 2 feature maps
SMALL = {"backbone": "resnet18", "num_classes": 5}


def _clips(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, T, 3, H, W, generator=g)


def _keypoints(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, T, 17, 3, generator=g)
    kp[..., 0] *= W
    kp[..., 1] *= H
    return kp


def test_registered_with_three_branches_and_aggregate_embedding():
    torch.manual_seed(0)
    model = create_model("ctl", **SMALL).eval()
    assert isinstance(model, CTL) and model.input_keys == ("keypoints",)
    with torch.no_grad():
        out = model(_clips(), keypoints=_keypoints())
    assert out["branches"] == ("global", "aggregate", "concat")
    assert out["embedding"].shape == (2, 512) and out["part_features"].shape == (2, 5, 512)
    # inference feature is V_f^a after its BNNeck (the paper's choice), not a concatenation
    emb, _ = model.necks[1](out["features"][1])
    torch.testing.assert_close(out["embedding"], emb)


def test_fusion_block_by_hand_without_graph_layers():
    """With no 3D-GCL and no cross-scale term, V_p is the pooled s3 parts: check eq. 7 and
    the three fusion features of sec. 3.5 against a direct computation."""
    torch.manual_seed(0)
    model = CTL(**SMALL, num_layers=0, cross_scales=()).eval()
    clips, kp = _clips(), _keypoints()
    with torch.no_grad():
        out = model(clips, keypoints=kp)
        fmap = model.forward_features(clips)
        heat = keypoint_heatmaps(kp, (H, W), fmap.shape[-2:])
        feats = KeypointGraphBuilder()(fmap, heat)
        v_p, v_g = feats["s3"], fmap.mean(dim=(-2, -1))  # (B, T, 5, C), (B, T, C)
        f_g = v_g.mean(1)
        f_a = (v_p.sum(2) + v_g).mean(1)
        g = model.g_c(v_p)  # (B, T, 5, ceil(512 / 5) = 103)
        assert g.shape[-1] == 103
        f_c = (torch.cat([g[:, :, n] for n in range(5)], dim=-1)[..., :512] + v_g).mean(1)
    for got, want in zip(out["features"], (f_g, f_a, f_c), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["part_features"], v_p.mean(1))


def test_alpha_zero_equals_no_cross_scale_branch():
    torch.manual_seed(0)
    full = CTL(**SMALL, alpha=0.0).eval()
    coarse_only = CTL(**SMALL, cross_scales=()).eval()
    missing, unexpected = coarse_only.load_state_dict(full.state_dict(), strict=False)
    assert missing == [] and unexpected and all(
        k.startswith(("gcls.s1", "gcls.s2", "cs_gcls.")) for k in unexpected)
    clips, kp = _clips(), _keypoints()
    with torch.no_grad():
        torch.testing.assert_close(full(clips, keypoints=kp)["embedding"],
                                   coarse_only(clips, keypoints=kp)["embedding"])


def test_cross_scale_term_changes_the_embedding():
    torch.manual_seed(0)
    model = CTL(**SMALL).eval()
    clips, kp = _clips(), _keypoints()
    with torch.no_grad():
        a = model(clips, keypoints=kp)["embedding"]
        model.alpha = 0.0
        b = model(clips, keypoints=kp)["embedding"]
    assert (a - b).abs().max() > 1e-3


def test_layers_follow_the_ablation_arguments():
    model = CTL(**SMALL, num_layers=3, tau=1, use_context=False, cross_scales=("s2",))
    assert list(model.gcls) == ["s2", "s3"] and list(model.cs_gcls) == ["s2"]
    for layers in model.gcls.values():
        assert len(layers) == 3
        assert [layer.residual for layer in layers] == [False, True, True]
        assert all(isinstance(layer, DenseSlidingWindowGCN) and layer.tau == 1 and
                   layer.topology.context is None for layer in layers)
    assert isinstance(model.cs_gcls["s2"], DenseCrossScaleGCN)
    added = CTL(**SMALL, cross_scale="add")
    assert len(added.cs_gcls) == 0
    torch.testing.assert_close(added.pool_s1, COCO17.group_matrix("s3"))


def test_cross_scale_pooling_by_hand():
    m = cross_scale_pooling(COCO17, "s2", "s3")
    s2 = COCO17.part_names("s2")
    left_arm = dict(zip(s2, m[COCO17.part_names("s3").index("left_arm")].tolist(), strict=True))
    # left_arm{5,7,9} shares keypoint 5 with left_shoulder and torso, 7 and 9 with left_arm(s2)
    assert left_arm == pytest.approx({"head": 0, "left_shoulder": 0.25, "right_shoulder": 0,
                                      "left_arm": 0.5, "right_arm": 0, "left_hip": 0,
                                      "right_hip": 0, "left_leg": 0, "right_leg": 0,
                                      "torso": 0.25})
    torch.testing.assert_close(m.sum(1), torch.ones(5))


def test_missing_keypoints_use_the_prior_pose_and_heatmaps_can_be_given():
    torch.manual_seed(0)
    model = CTL(**SMALL).eval()
    clips = _clips()
    pose = torch.from_numpy(prior_pose(H, W)).expand(2, T, 17, 3)
    with torch.no_grad():
        none = model(clips)["embedding"]
        prior = model(clips, keypoints=pose)["embedding"]
        heat = keypoint_heatmaps(pose, (H, W), (4, 2))
        given = model(clips, heatmaps=heat)["embedding"]
    torch.testing.assert_close(none, prior)
    torch.testing.assert_close(none, given)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, T, 16, 3), r"expected keypoints of shape \(2, 4, 17, 3\)"),
    (torch.zeros(2, T + 1, 17, 3), r"expected keypoints of shape \(2, 4, 17, 3\)"),
    (torch.full((2, T, 17, 3), float("nan")), "NaN"),
])
def test_bad_keypoints_are_clear_errors(bad, match):
    model = CTL(**SMALL)
    with pytest.raises(ValueError, match=match):
        model(_clips(), keypoints=bad)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="keypoints or heatmaps, not both"):
        CTL(**SMALL)(_clips(), keypoints=_keypoints(), heatmaps=torch.zeros(2, T, 17, 4, 2))
    with pytest.raises(ValueError, match="expected heatmaps of shape"):
        CTL(**SMALL)(_clips(), heatmaps=torch.zeros(2, T, 17, 3, 3))
    with pytest.raises(ValueError, match="cross_scales must be distinct fine scales"):
        CTL(**SMALL, cross_scales=("s3",))
    with pytest.raises(ValueError, match="unknown cross_scale 'sum'"):
        CTL(**SMALL, cross_scale="sum")
    with pytest.raises(ValueError, match="unknown backend"):
        CTL(**SMALL, backend="sparse")
    with pytest.raises(ValueError, match="num_layers must be >= 0"):
        CTL(**SMALL, num_layers=-1)


@pytest.mark.parametrize("cross_scale", ["gcn", "add"])
def test_dense_and_pyg_backends_agree(cross_scale):
    torch.manual_seed(0)
    dense = CTL(**SMALL, backend="dense", cross_scale=cross_scale)
    pyg = CTL(**SMALL, backend="pyg", cross_scale=cross_scale)
    assert list(dense.state_dict()) == list(pyg.state_dict())
    with torch.no_grad():  # non-zero A^m so that the mask term is exercised
        for layers in dense.gcls.values():
            for layer in layers:
                layer.topology.mask.normal_(0, 0.1)
    pyg.load_state_dict(dense.state_dict())
    dense, pyg = dense.double(), pyg.double()
    clips, kp = _clips(seed=3).double(), _keypoints().double()
    out_d, out_p = dense(clips, keypoints=kp), pyg(clips, keypoints=kp)  # train-mode BN
    for a, b in zip(out_d["features"], out_p["features"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(out_d["part_features"], out_p["part_features"],
                               atol=1e-8, rtol=1e-8)


def test_clip_order_equivariance():
    torch.manual_seed(0)
    model = CTL(**SMALL).eval()
    clips, kp = _clips(3, seed=5), _keypoints(3)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        torch.testing.assert_close(model(clips, keypoints=kp)["embedding"][perm],
                                   model(clips[perm], keypoints=kp[perm])["embedding"],
                                   atol=1e-5, rtol=1e-5)
