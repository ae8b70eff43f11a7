"""CTL model: fusion block by hand, keypoint inputs, ablation switches, dense == PyG."""

import pytest
import torch
import torch.nn.functional as F

from stgraph.graph import COCO17, KeypointGraphBuilder, keypoint_heatmaps, prior_pose
from stgraph.models import CTL, create_model, cross_scale_pooling
from stgraph.models.ctl import scale_gradient
from stgraph.nn import CrossScaleGCN, DenseCrossScaleGCN, DenseSlidingWindowGCN

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


def test_registered_with_three_branches_and_their_concatenation_as_embedding():
    torch.manual_seed(0)
    model = create_model("ctl", **SMALL).eval()
    assert isinstance(model, CTL) and model.input_keys == ("keypoints",)
    with torch.no_grad():
        out = model(_clips(), keypoints=_keypoints())
    assert out["branches"] == ("global", "aggregate", "concat")
    assert out["embedding"].shape == (2, 3 * 512) and out["part_features"].shape == (2, 5, 512)
    # the default ranks the three post-BNNeck features concatenated (ours) ...
    post = [neck(f)[0] for neck, f in zip(model.necks, out["features"], strict=True)]
    torch.testing.assert_close(out["embedding"], torch.cat(post, dim=1))
    # ... the paper ranks V_f^a after its BNNeck
    paper = create_model("ctl", **SMALL, embedding="aggregate").eval()
    paper.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(paper(_clips(), keypoints=_keypoints())["embedding"],
                                   post[1])



def test_embedding_choice_ranks_the_named_branches_and_trains_the_same():
    """embedding="concat" / "all" change only what is ranked: V_f^c, or the three
    post-BNNeck features concatenated; features and logits are those of the default."""
    torch.manual_seed(0)
    ref = create_model("ctl", **SMALL, embedding="aggregate").eval()
    clips, kp = _clips(), _keypoints()
    with torch.no_grad():
        want = ref(clips, keypoints=kp)
        post = [neck(f)[0] for neck, f in zip(ref.necks, want["features"], strict=True)]
        for choice, expected in (("concat", post[2]), ("all", torch.cat(post, dim=1))):
            model = create_model("ctl", **SMALL, embedding=choice).eval()
            model.load_state_dict(ref.state_dict())
            out = model(clips, keypoints=kp)
            torch.testing.assert_close(out["embedding"], expected)
            for a, b in zip(out["features"] + out["logits"], want["features"] + want["logits"],
                            strict=True):
                assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown embedding 'mean'; choose one of: "
                                         "aggregate, concat, all"):
        create_model("ctl", **SMALL, embedding="mean")


PAPER = {"heatmap_temperature": 1.0, "part_reduce": "sum", "part_grad_scale": 1.0,
         "normalize_parts": False, "scale_cross_attention": False,
         "embedding": "aggregate"}  # the paper-literal CTL


@pytest.mark.parametrize("kwargs", [
    PAPER,
    {},  # our defaults: temperature 0.1, sum over the parts, scaled cross attention
    {"part_reduce": "sum", "normalize_parts": True},
    {"part_reduce": "mean", "normalize_parts": True, "part_grad_scale": 0.5},
], ids=["paper", "defaults", "sum-normalized", "mean-normalized"])
def test_fusion_block_by_hand_without_graph_layers(kwargs):
    """With no 3D-GCL and no cross-scale term, V_p is the pooled s3 parts: check eq. 7 and
    the three fusion features of sec. 3.5 against a direct computation."""
    torch.manual_seed(0)
    model = CTL(**SMALL, num_layers=0, cross_scales=(), **kwargs).eval()
    temperature = kwargs.get("heatmap_temperature", 0.1)
    reduce = kwargs.get("part_reduce", "sum")
    assert (model.heatmap_temperature, model.part_reduce) == (temperature, reduce)
    clips, kp = _clips(), _keypoints()
    with torch.no_grad():
        out = model(clips, keypoints=kp)
        fmap = model.forward_features(clips)
        heat = keypoint_heatmaps(kp, (H, W), fmap.shape[-2:], temperature=temperature)
        feats = KeypointGraphBuilder()(fmap, heat)
        v_p, v_g = feats["s3"], fmap.mean(dim=(-2, -1))  # (B, T, 5, C), (B, T, C)
        parts = v_p
        if kwargs.get("normalize_parts", False):
            parts = v_p / v_p.norm(dim=-1, keepdim=True) * v_g.norm(dim=-1)[..., None, None]
        f_g = v_g.mean(1)
        f_a = ((parts.sum(2) if reduce == "sum" else parts.sum(2) / 5) + v_g).mean(1)
        g = model.g_c(parts)  # (B, T, 5, ceil(512 / 5) = 103)
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
    assert model.cs_gcls["s2"].scale_attention  # ours by default: r_m^T r_i / sqrt(d)
    for backend, cls in (("auto", DenseCrossScaleGCN), ("pyg", CrossScaleGCN)):
        paper = CTL(**SMALL, backend=backend, scale_cross_attention=False)
        assert all(isinstance(m, cls) and not m.scale_attention and m.attention_factor == 1.0
                   for m in paper.cs_gcls.values())
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
        heat = keypoint_heatmaps(pose, (H, W), (4, 2), temperature=model.heatmap_temperature)
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
    with pytest.raises(ValueError, match="num_layers must be an integer >= 0, got -1"):
        CTL(**SMALL, num_layers=-1)
    with pytest.raises(ValueError, match="unknown part_reduce 'max'; choose one of: sum, mean"):
        CTL(**SMALL, part_reduce="max")
    with pytest.raises(ValueError, match="heatmap_temperature must be > 0, got 0"):
        CTL(**SMALL, heatmap_temperature=0)
    with pytest.raises(ValueError, match="part_grad_scale must be finite and >= 0, got -1"):
        CTL(**SMALL, part_grad_scale=-1)


@pytest.mark.parametrize("kwargs", [{}, PAPER], ids=["defaults", "paper"])
@pytest.mark.parametrize("cross_scale", ["gcn", "add"])
def test_dense_and_pyg_backends_agree(cross_scale, kwargs):
    torch.manual_seed(0)
    dense = CTL(**SMALL, backend="dense", cross_scale=cross_scale, **kwargs)
    pyg = CTL(**SMALL, backend="pyg", cross_scale=cross_scale, **kwargs)
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


def test_forward_is_the_head_on_cached_maps_and_heatmaps():
    """A head can be trained from cached backbone maps: forward = forward_head(maps, heatmaps)."""
    torch.manual_seed(0)
    model = CTL(**SMALL).eval()
    clips, kp = _clips(), _keypoints()
    with torch.no_grad():
        out = model(clips, keypoints=kp)
        cached = model.forward_features(clips)  # (B, T, C, h, w)
        heat = model.heatmaps(kp, 2, T, (H, W), tuple(cached.shape[-2:]), cached.device,
                              cached.dtype)
        again = model.forward_head(cached, heat)
    for a, b in zip(out["features"], again["features"], strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out["part_features"], again["part_features"])


def _part_cosines(temperature):
    """Cosines between s1 part features of prior-pose keypoints in different cells of a
    16 x 8 map (256 x 128 frames) on non-negative random maps, as backbone maps are."""
    pose = torch.from_numpy(prior_pose(256, 128))  # (17, 3), scores 1
    cell = (pose[:, 1] // 16).long() * 8 + (pose[:, 0] // 16).long()
    different = cell[:, None] != cell[None, :]  # (17, 17)
    assert int(different.sum()) > 17 * 16 / 2
    model = CTL(**SMALL, heatmap_temperature=temperature)
    heat = model.heatmaps(pose.expand(2, 2, 17, 3), 2, 2, (256, 128), (16, 8),
                          torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 2, 256, 16, 8, generator=g).relu()
    s1 = F.normalize(model.builder(maps, heat)["s1"], dim=-1)  # (B, T, 17, C)
    return (s1 @ s1.transpose(-1, -2))[..., different]  # (B, T, pairs)


def test_default_heatmaps_give_distinct_part_features():
    """Review finding: at the paper's temperature 1, scores x Gaussians in [0, 1] give a
    nearly uniform softmax, and all part features are ~ the global one."""
    assert CTL(**SMALL).heatmap_temperature == 0.1
    sharp = _part_cosines(0.1)  # the default
    assert bool((sharp < 0.9).all()) and sharp.mean() < 0.6
    paper = _part_cosines(1.0)  # the defect, documented
    assert bool((paper > 0.99).all())


def test_scale_gradient():
    x = torch.arange(3.0, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.25, 0.5, 1.0]))
    assert scale_gradient(x, 1.0) is x and not scale_gradient(x, 0).requires_grad


def test_part_grad_scale_scales_only_the_part_branch_gradient():
    """The gradient into the backbone maps from the part branch scales exactly by
    part_grad_scale; the global branch's does not; the forward pass is unchanged."""
    torch.manual_seed(0)
    models = {s: CTL(**SMALL, part_grad_scale=s).double() for s in (1.0, 0.25, 0.0)}
    for m in models.values():
        m.load_state_dict(models[1.0].state_dict())
    g = torch.Generator().manual_seed(2)
    maps = torch.randn(2, T, 512, 4, 2, generator=g, dtype=torch.float64).relu()
    heat = models[1.0].heatmaps(_keypoints().double(), 2, T, (H, W), (4, 2),
                                maps.device, maps.dtype)

    def grads(s, loss):
        x = maps.clone().requires_grad_()
        out = models[s].forward_head(x, heat)  # train mode: same batch statistics for all
        loss(out).backward()
        return out, x.grad

    def parts(out):
        return out["part_features"].square().sum()

    def aggregate(out):
        return out["features"][1].square().sum()

    def global_(out):
        return out["features"][0].square().sum()

    out1, g1 = grads(1.0, parts)
    out_q, g_q = grads(0.25, parts)
    for a, b in zip(out1["features"], out_q["features"], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(out1["part_features"], out_q["part_features"])
    assert g1.abs().sum() > 0 and torch.equal(g_q, 0.25 * g1)
    assert grads(0.0, parts)[1] is None  # 0 detaches the part path from the backbone
    assert torch.equal(grads(0.25, global_)[1], grads(1.0, global_)[1])
    # V_f^a mixes both: its gradient is global + s * part, linear in s
    a1, a_q, a0 = (grads(s, aggregate)[1] for s in (1.0, 0.25, 0.0))
    torch.testing.assert_close(a1 - a_q, 0.75 * (a1 - a0), atol=1e-12, rtol=1e-10)
    assert (a1 - a0).abs().max() > 1e-6


def test_part_reduce_mean_is_the_sum_over_the_parts():
    torch.manual_seed(0)
    summed = CTL(**SMALL, part_reduce="sum").eval()
    mean = CTL(**SMALL, part_reduce="mean").eval()
    mean.load_state_dict(summed.state_dict())
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(2, T, 512, 4, 2, generator=g).relu()
    heat = summed.heatmaps(None, 2, T, (H, W), (4, 2), maps.device, maps.dtype)
    with torch.no_grad():
        a, b = summed.forward_head(maps, heat), mean.forward_head(maps, heat)
    v_g = maps.mean(dim=(-2, -1)).mean(dim=1)  # TAP(V_g)
    torch.testing.assert_close(b["features"][1] - v_g, (a["features"][1] - v_g) / 5,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["features"][2], b["features"][2])  # concat branch unchanged


def test_normalize_parts_sends_no_gradient_through_the_global_norm():
    """With the part path detached (part_grad_scale=0) and parts rescaled to ||V_g||, the only
    gradient of V_f^a into the maps is that of TAP(GAP(maps)): c / (T h w) in every cell."""
    torch.manual_seed(0)
    model = CTL(**SMALL, normalize_parts=True, part_grad_scale=0.0).double()
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(2, T, 512, 4, 2, generator=g, dtype=torch.float64).relu()
    maps.requires_grad_()
    c = torch.randn(2, 512, generator=g, dtype=torch.float64)
    heat = model.heatmaps(None, 2, T, (H, W), (4, 2), maps.device, maps.dtype)
    (model.forward_head(maps, heat)["features"][1] * c).sum().backward()
    want = (c / (T * 4 * 2))[:, None, :, None, None].expand_as(maps)
    torch.testing.assert_close(maps.grad, want, atol=1e-12, rtol=1e-10)
