import pytest
import torch

from stgraph.graph import COCO17
from stgraph.nn import (
    ContextReinforcedTopology,
    DenseContextBlock,
    sliding_windows,
    tile_window_adjacency,
)

PATH3 = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])  # 3-node skeleton 0-1-2


@pytest.mark.parametrize("window", [None, 1])
def test_physical_only_equals_the_physical_adjacency(window):
    a_p = COCO17.physical_adjacency("s2")
    topo = ContextReinforcedTopology(8, a_p, window=window, use_mask=False, use_context=False)
    assert topo.mask is None and topo.context is None
    out = topo(torch.randn(2, 3, 10, 8))
    expected = a_p.expand(2, 10, 10) if window is None else a_p.expand(2, 3, 10, 10)
    assert torch.equal(out, expected)


def test_mask_starts_at_zero_and_adds():
    a_p = COCO17.physical_adjacency("s3")
    topo = ContextReinforcedTopology(4, a_p, use_context=False)
    assert torch.equal(topo.mask, torch.zeros(5, 5))
    with torch.no_grad():
        topo.mask.copy_(torch.arange(25.0).view(5, 5))
    torch.testing.assert_close(topo(torch.randn(1, 2, 5, 4))[0], a_p + topo.mask)
    none = ContextReinforcedTopology(4, a_p, use_physical=False, use_mask=False, use_context=False)
    assert torch.equal(none(torch.randn(2, 2, 5, 4)), torch.zeros(2, 5, 5))


def test_frame_level_context_is_the_context_block():
    torch.manual_seed(0)
    topo = ContextReinforcedTopology(4, PATH3, num_frames=2, use_mask=False)
    block = DenseContextBlock(4, 3, num_frames=2)
    block.load_state_dict(topo.context.state_dict())
    x = torch.randn(2, 2, 3, 4)
    torch.testing.assert_close(topo(x), PATH3 + block(x))


def test_block_adjacency_of_a_three_frame_window_by_hand():
    # Nodes k * 3 + n (frame k of the window, node n). Diagonal blocks: A^p. Off-diagonal
    # blocks: A^p + I (each node linked to itself and its neighbours in the other frames).
    P = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    Q = [[1, 1, 0], [1, 1, 1], [0, 1, 1]]
    rows = []
    for bi in range(3):
        for r in range(3):
            rows.append(sum(((P if bi == bj else Q)[r] for bj in range(3)), []))
    expected = torch.tensor(rows, dtype=torch.float32)
    assert expected[0].tolist() == [0, 1, 0, 1, 1, 0, 1, 1, 0]
    topo = ContextReinforcedTopology(2, PATH3, window=3, use_mask=False, use_context=False)
    out = topo(torch.randn(2, 4, 3, 2))
    assert out.shape == (2, 4, 9, 9)
    assert torch.equal(out[1, 2], expected)
    assert torch.equal(tile_window_adjacency(PATH3, 3, temporal_self_loops=True), expected)


def test_mask_is_tiled_over_every_block():
    m = torch.arange(9.0).view(3, 3)
    topo = ContextReinforcedTopology(2, PATH3, window=3, use_physical=False, use_context=False)
    with torch.no_grad():
        topo.mask.copy_(m)
    out = topo(torch.zeros(1, 2, 3, 2))[0, 0]
    for i in range(3):
        for j in range(3):
            assert torch.equal(out[3 * i:3 * i + 3, 3 * j:3 * j + 3], m)


def test_window_context_is_a_context_block_per_window():
    torch.manual_seed(1)
    topo = ContextReinforcedTopology(4, PATH3, window=3, use_physical=False, use_mask=False)
    block = DenseContextBlock(4, 9)
    block.load_state_dict(topo.context.state_dict())
    x = torch.randn(2, 5, 3, 4)
    out = topo(x)
    padded = torch.cat([torch.zeros(2, 1, 3, 4), x, torch.zeros(2, 1, 3, 4)], dim=1)
    for t in range(5):
        window = padded[:, t:t + 3].reshape(2, 1, 9, 4)  # frames t-1, t, t+1
        torch.testing.assert_close(out[:, t], block(window))


def test_sliding_windows_pad_with_zeros_at_both_ends():
    x = torch.arange(1.0, 5.0).view(1, 4)  # frames 1..4
    assert sliding_windows(x, 3)[0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0]]
    assert sliding_windows(x, 1)[0].tolist() == [[1], [2], [3], [4]]
    assert sliding_windows(x, 2)[0].tolist() == [[1, 2], [2, 3], [3, 4], [4, 0]]
    assert sliding_windows(x, 5)[0].tolist()[0] == [0, 0, 1, 2, 3]
    y = torch.randn(2, 3, 4, 5)
    assert sliding_windows(y, 3).shape == (2, 3, 3, 4, 5)
    assert torch.equal(sliding_windows(y, 3)[:, :, 1], y)


def test_gradients_reach_every_parameter():
    torch.manual_seed(2)
    topo = ContextReinforcedTopology(4, PATH3, window=3)
    (topo(torch.randn(2, 4, 3, 4)) * torch.randn(2, 4, 9, 9)).sum().backward()
    for k, p in topo.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, k


def test_repr_and_errors():
    topo = ContextReinforcedTopology(256, COCO17.physical_adjacency("s1"), window=3)
    assert repr(topo) == "ContextReinforcedTopology(256, num_nodes=17, window=3, terms=p+m+c)"
    with pytest.raises(ValueError, match="square adjacency"):
        ContextReinforcedTopology(4, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="num_frames applies to the frame-level"):
        ContextReinforcedTopology(4, PATH3, window=3, num_frames=6)
    with pytest.raises(ValueError, match=r"\(B, T, 3, 4\), got \(2, 3, 4, 4\)"):
        ContextReinforcedTopology(4, PATH3)(torch.zeros(2, 3, 4, 4))
