import pytest
import torch
from torch_geometric.data import Batch

from stgraph.graph import (
    COCO17,
    KeypointGraphBuilder,
    Skeleton,
    keypoint_heatmaps,
    prior_pose,
)


def _one_hot_heatmaps(B, T, K, H, W, cells):
    m = torch.zeros(B, T, K, H, W)
    for k, (h, w) in enumerate(cells):
        m[:, :, k, h, w] = 1.0
    return m


def test_part_features_by_hand():
    torch.manual_seed(0)
    B, T, C, H, W = 2, 3, 4, 4, 2
    fmap = torch.randn(B, T, C, H, W)
    sk = Skeleton(keypoints=("a", "b", "c"), edges=[(0, 1), (1, 2)],
                  groupings={"s2": {"ab": (0, 1), "bc": (1, 2)}})
    cells = [(0, 0), (2, 1), (3, 0)]
    heat = _one_hot_heatmaps(B, T, 3, H, W, cells)
    heat[:, :, 2] = 0.5 * heat[:, :, 2]
    heat[:, :, 2, 1, 1] = 0.5  # keypoint c: half (3, 0), half (1, 1)
    feats = KeypointGraphBuilder(sk)(fmap, heat)
    assert feats.scales == ("s1", "s2")
    s1 = feats["s1"]
    assert s1.shape == (B, T, 3, C)
    torch.testing.assert_close(s1[:, :, 0], fmap[..., 0, 0])
    torch.testing.assert_close(s1[:, :, 1], fmap[..., 2, 1])
    torch.testing.assert_close(s1[:, :, 2], 0.5 * fmap[..., 3, 0] + 0.5 * fmap[..., 1, 1])
    torch.testing.assert_close(feats["s2"][:, :, 0], (s1[:, :, 0] + s1[:, :, 1]) / 2)
    torch.testing.assert_close(feats["s2"][:, :, 1], (s1[:, :, 1] + s1[:, :, 2]) / 2)
    torch.testing.assert_close(feats.global_feature, fmap.mean(dim=(-2, -1)))


def test_uniform_heatmaps_give_the_global_feature_at_every_scale():
    torch.manual_seed(1)
    fmap = torch.randn(2, 2, 5, 16, 8)
    heat = keypoint_heatmaps(torch.zeros(2, 2, 17, 3), (256, 128), (16, 8))  # score 0
    feats = KeypointGraphBuilder()(fmap, heat)
    for scale, n in zip(COCO17.scales, (17, 10, 5), strict=True):
        assert feats[scale].shape == (2, 2, n, 5)
        torch.testing.assert_close(
            feats[scale], feats.global_feature.unsqueeze(2).expand(-1, -1, n, -1))


def test_eq1_matches_an_explicit_sum_with_real_heatmaps():
    torch.manual_seed(2)
    fmap = torch.randn(1, 2, 3, 16, 8)
    pose = torch.from_numpy(prior_pose(256, 128)).expand(1, 2, 17, 3)
    heat = keypoint_heatmaps(pose, (256, 128), (16, 8), temperature=0.2)
    s1 = KeypointGraphBuilder()(fmap, heat)["s1"]
    expected = torch.zeros(1, 2, 17, 3)
    for t in range(2):
        for k in range(17):
            expected[0, t, k] = (heat[0, t, k].unsqueeze(0) * fmap[0, t]).sum(dim=(-2, -1))
    torch.testing.assert_close(s1, expected)


def test_to_batch_attributes_edges_and_round_trip():
    torch.manual_seed(3)
    builder = KeypointGraphBuilder()
    x = torch.randn(3, 4, 10, 6)  # s2 features
    batch = builder.to_batch(x, "s2")
    assert isinstance(batch, Batch) and batch.num_graphs == 3
    assert batch.num_nodes == 3 * 4 * 10
    assert batch.frame[:20].tolist() == [0] * 10 + [1] * 10
    assert batch.part[:12].tolist() == list(range(10)) + [0, 1]
    assert bool((batch.scale == 1).all())
    assert torch.equal(batch.clip, batch.batch)
    src, dst = batch.edge_index
    assert torch.equal(batch.frame[src], batch.frame[dst])  # no edge across frames
    assert torch.equal(batch.clip[src], batch.clip[dst])
    a_p = COCO17.physical_adjacency("s2")
    assert batch.edge_index.size(1) == 3 * 4 * int(a_p.sum())
    # the edges of every frame are A^p
    g = batch.clip[dst] * 4 + batch.frame[dst]
    dense = torch.zeros(12, 10, 10)
    dense[g, batch.part[dst], batch.part[src]] = 1.0
    assert torch.equal(dense, a_p.expand(12, 10, 10))
    assert torch.equal(builder.to_dense(batch), x)


def test_to_dense_accepts_any_node_order():
    x = torch.randn(2, 3, 5, 4)
    batch = KeypointGraphBuilder().to_batch(x, "s3")
    perm = torch.randperm(batch.num_nodes)
    shuffled = Batch(x=batch.x[perm], clip=batch.clip[perm], frame=batch.frame[perm],
                     part=batch.part[perm])
    assert torch.equal(KeypointGraphBuilder.to_dense(shuffled), x)
    with pytest.raises(ValueError, match="do not fill"):
        KeypointGraphBuilder.to_dense(Batch(x=batch.x[1:], clip=batch.clip[1:],
                                            frame=batch.frame[1:], part=batch.part[1:]))


def test_to_batches_for_every_scale():
    fmap = torch.randn(2, 2, 3, 16, 8)
    heat = torch.full((2, 2, 17, 16, 8), 1 / 128)
    builder = KeypointGraphBuilder()
    batches = builder.to_batches(builder(fmap, heat))
    assert [b.num_nodes for b in batches.values()] == [2 * 2 * n for n in (17, 10, 5)]


def test_errors_name_the_shapes():
    builder = KeypointGraphBuilder()
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\), got \(8, 2048, 16, 8\)"):
        builder(torch.zeros(8, 2048, 16, 8), torch.zeros(8, 17, 16, 8))
    with pytest.raises(ValueError, match=r"\(2, 3, 17, 16, 8\).*got \(2, 3, 17, 8, 4\)"):
        builder(torch.zeros(2, 3, 4, 16, 8), torch.zeros(2, 3, 17, 8, 4))
    with pytest.raises(ValueError, match=r"got \(2, 3, 18, 16, 8\)"):
        builder(torch.zeros(2, 3, 4, 16, 8), torch.zeros(2, 3, 18, 16, 8))
    with pytest.raises(ValueError, match=r"\(B, T, 10, C\) for scale 's2', got \(2, 3, 17, 4\)"):
        builder.to_batch(torch.zeros(2, 3, 17, 4), "s2")
    with pytest.raises(ValueError, match="unknown scale"):
        builder.to_batch(torch.zeros(2, 3, 17, 4), "s9")
    assert repr(builder) == "KeypointGraphBuilder(skeleton='coco17')"
