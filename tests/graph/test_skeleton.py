import pytest
import torch

from stgraph.graph import COCO17, Skeleton

S2 = {name: i for i, name in enumerate(COCO17.part_names("s2"))}
S3 = {name: i for i, name in enumerate(COCO17.part_names("s3"))}


def test_coco17_sizes_and_names():
    assert COCO17.num_keypoints == 17 and len(COCO17.edges) == 19
    assert COCO17.scales == ("s1", "s2", "s3")
    assert [COCO17.num_nodes(s) for s in COCO17.scales] == [17, 10, 5]
    assert COCO17.keypoints[0] == "nose" and COCO17.keypoints[16] == "right_ankle"
    assert COCO17.members("s2")[S2["torso"]] == (5, 6, 11, 12)
    assert COCO17.members("s3")[S3["left_leg"]] == (11, 13, 15)
    assert repr(COCO17) == "Skeleton('coco17', s1=17, s2=10, s3=5, edges=19)"


def test_keypoint_adjacency_is_the_symmetric_skeleton_without_self_loops():
    a = COCO17.physical_adjacency("s1")
    assert a.shape == (17, 17) and a.dtype == torch.float32
    assert torch.equal(a, a.t())
    assert a.diagonal().abs().sum() == 0  # eq. (4) adds the self-loops
    assert a.sum() == 2 * 19
    for i, j in [(15, 13), (5, 6), (3, 5), (0, 1), (4, 6)]:
        assert a[i, j] == 1 and a[j, i] == 1
    for i, j in [(0, 5), (9, 10), (11, 14), (3, 4)]:
        assert a[i, j] == 0


@pytest.mark.parametrize("p, q, linked", [
    ("head", "left_shoulder", True),     # edge (3, 5)
    ("head", "right_shoulder", True),    # edge (4, 6)
    ("head", "torso", True),             # edges (3, 5), (4, 6)
    ("head", "left_arm", False),
    ("left_shoulder", "torso", True),    # keypoint 5 shared
    ("left_shoulder", "left_arm", True),  # edge (5, 7)
    ("left_shoulder", "right_shoulder", True),  # edge (5, 6)
    ("left_shoulder", "left_hip", True),  # edge (5, 11)
    ("right_arm", "left_shoulder", False),
    ("left_arm", "right_arm", False),
    ("left_arm", "torso", True),         # edge (5, 7)
    ("left_hip", "left_leg", True),      # edge (13, 11)
    ("left_leg", "right_leg", False),
    ("left_leg", "torso", True),         # edge (13, 11)
    ("right_hip", "left_leg", False),
])
def test_s2_adjacency_by_hand(p, q, linked):
    a = COCO17.physical_adjacency("s2")
    assert a[S2[p], S2[q]] == a[S2[q], S2[p]] == float(linked)


def test_s3_adjacency_by_hand():
    # head-l_arm (3,5), head-r_arm (4,6), l_arm-r_arm (5,6), l_arm-l_leg (5,11),
    # r_arm-r_leg (6,12), l_leg-r_leg (11,12); nothing else.
    expected = torch.tensor([
        [0, 1, 1, 0, 0],
        [1, 0, 1, 1, 0],
        [1, 1, 0, 0, 1],
        [0, 1, 0, 0, 1],
        [0, 0, 1, 1, 0],
    ], dtype=torch.float32)
    assert list(S3) == ["head", "left_arm", "right_arm", "left_leg", "right_leg"]
    assert torch.equal(COCO17.physical_adjacency("s3"), expected)
    assert COCO17.physical_adjacency("s2").diagonal().abs().sum() == 0


def test_group_matrix_averages_members():
    assert torch.equal(COCO17.group_matrix("s1"), torch.eye(17))
    g = COCO17.group_matrix("s2")
    assert g.shape == (10, 17)
    torch.testing.assert_close(g.sum(dim=1), torch.ones(10))
    expected_torso = torch.zeros(17)
    expected_torso[[5, 6, 11, 12]] = 0.25
    assert torch.equal(g[S2["torso"]], expected_torso)
    v = torch.arange(17.0).unsqueeze(-1)  # keypoint k has feature k
    torch.testing.assert_close((COCO17.group_matrix("s3") @ v).squeeze(-1),
                               torch.tensor([2.0, 7.0, 8.0, 13.0, 14.0]))


def test_a_user_defined_skeleton():
    # A 4-keypoint chain a-b-c-d with two coarser scales, one with a shared keypoint.
    sk = Skeleton(
        keypoints=("a", "b", "c", "d"),
        edges=[(0, 1), (1, 2), (2, 3)],
        groupings={"halves": {"top": [0, 1], "bottom": [2, 3]},
                   "overlap": {"x": (0,), "y": (1, 2), "z": (3,), "w": (2,)}},
        name="chain4",
    )
    assert sk.scales == ("s1", "halves", "overlap")
    assert torch.equal(sk.physical_adjacency("halves"), torch.tensor([[0.0, 1], [1, 0]]))
    # x{a}-y{b,c} (a-b), y-z (c-d), y-w share c, z-w (c-d); x-z, x-w not linked
    expected = torch.tensor([[0.0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]])
    assert torch.equal(sk.physical_adjacency("overlap"), expected)
    assert torch.equal(sk.group_matrix("halves"),
                       torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]))
    assert sk.part_names("overlap") == ("x", "y", "z", "w")
    assert Skeleton(keypoints=("a", "b"), edges=()).physical_adjacency("s1").sum() == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(keypoints=("a", "a"), edges=()), "duplicate keypoint names"),
    (dict(keypoints=("a", "b"), edges=[(0, 2)]), r"edge \(0, 2\) is out of range"),
    (dict(keypoints=("a", "b"), edges=[(1, 1)]), "self-edge"),
    (dict(keypoints=("a", "b"), edges=[(0, 1), (1, 0)]), "duplicate edge"),
    (dict(keypoints=("a", "b"), edges=(), groupings={"s1": {"p": (0,)}}), "reserved"),
    (dict(keypoints=("a", "b"), edges=(), groupings={"s2": {"p": ()}}), "has no keypoints"),
    (dict(keypoints=("a", "b"), edges=(), groupings={"s2": {"p": (5,)}}), "out of range"),
])
def test_invalid_skeletons_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Skeleton(**kwargs)


def test_unknown_scale():
    with pytest.raises(ValueError, match="unknown scale 's4'.*choose one of: s1, s2, s3"):
        COCO17.physical_adjacency("s4")
