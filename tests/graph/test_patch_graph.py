import pytest
import torch

from stgraph.graph import PatchGraphBuilder, complete_edge_index


def test_complete_edge_index_counts_and_loops():
    ei = complete_edge_index(3)
    assert ei.shape == (2, 9)
    assert set(map(tuple, ei.t().tolist())) == {(i, j) for i in range(3) for j in range(3)}
    ei = complete_edge_index(3, self_loops=False)
    assert ei.shape == (2, 6) and bool((ei[0] != ei[1]).all())


def test_dense_patch_values_by_hand():
    # One clip, two frames, one channel, H=4, W=2, P=2: stripe means by hand.
    fmap = torch.arange(16.0).reshape(1, 2, 1, 4, 2)
    x = PatchGraphBuilder(num_patches=2).dense(fmap)
    # frame 0: rows 0-1 -> mean(0..3)=1.5, rows 2-3 -> mean(4..7)=5.5; frame 1: +8
    assert torch.equal(x, torch.tensor([[[1.5], [5.5], [9.5], [13.5]]]))


def test_temporal_batch_attributes_and_round_trip():
    torch.manual_seed(0)
    fmap = torch.randn(3, 4, 5, 8, 2)  # B=3, T=4, C=5
    builder = PatchGraphBuilder(num_patches=2)
    batch = builder(fmap)
    assert batch.num_graphs == 3
    assert batch.num_nodes == 3 * 8
    assert batch.edge_index.size(1) == 3 * 8 * 8  # complete with self-loops per clip
    # no edge leaves its clip
    assert torch.equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])
    assert batch.frame[:8].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert batch.part[:8].tolist() == [0, 1] * 4
    assert torch.equal(builder.to_dense(batch), builder.dense(fmap))


def test_spatial_batch_is_per_frame():
    fmap = torch.randn(2, 3, 4, 6, 2)
    builder = PatchGraphBuilder(num_patches=3)
    batch = builder(fmap, graph="spatial")
    assert batch.num_graphs == 2 * 3
    src, dst = batch.edge_index
    assert torch.equal(batch.frame[src], batch.frame[dst])
    assert torch.equal(batch.clip[src], batch.clip[dst])
    assert batch.edge_index.size(1) == 6 * 9
    assert torch.equal(builder.to_dense(batch), builder.dense(fmap))


def test_errors_name_the_problem():
    builder = PatchGraphBuilder(num_patches=3)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\), got \(8, 2048, 16, 8\)"):
        builder.dense(torch.zeros(8, 2048, 16, 8))
    with pytest.raises(ValueError, match="height 16 is not divisible by num_patches=3"):
        builder.dense(torch.zeros(1, 2, 4, 16, 8))
    with pytest.raises(ValueError, match="unknown graph 'frames'"):
        builder(torch.zeros(1, 2, 4, 6, 2), graph="frames")
    with pytest.raises(ValueError, match="num_patches"):
        PatchGraphBuilder(num_patches=0)
