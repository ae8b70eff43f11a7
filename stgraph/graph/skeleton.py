r"""Body skeletons: keypoint names, skeleton edges and part groupings per scale (CTL).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.1-3.2 and fig. 3: the body is
seen at three granularities, keypoints (``s1``, 17 nodes), low-level parts
(``s2``, 10 nodes) and high-level parts (``s3``, 5 nodes); each coarse part
averages the features of its keypoints, and the physical adjacency
:math:`A^p_s \in \{0, 1\}^{N_s \times N_s}` of eq. (2) links body parts that are
physically connected.

The paper lists neither the groupings nor the edges; :data:`COCO17` carries
ours (stgraph DESIGN.md, CTL section). Another skeleton (OpenPose-18, a
hand model, ...) is a :class:`Skeleton` built with its own names, edges and
groupings; nothing else in stgraph needs to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["COCO17", "Skeleton"]

#: Name of the keypoint scale: one node per keypoint, always present.
KEYPOINT_SCALE = "s1"


@dataclass(frozen=True, eq=True)
class Skeleton:
    r"""Keypoints, their skeleton edges, and groupings of keypoints into parts.

    Scale ``"s1"`` is the keypoints themselves; every entry of ``groupings``
    adds a coarser scale whose nodes are parts, each the set of keypoints it
    averages. Node ``n`` of a scale is its ``n``-th keypoint or part, in the
    order given.

    The physical adjacency :math:`A^p` (:meth:`physical_adjacency`) has **no
    self-loops**: eq. (4) of the paper adds the identity to the adjacency
    (:math:`\hat{A} = A + I`) before normalising, so a self-loop in
    :math:`A^p` would count each node twice. At ``s1`` it is the symmetric
    skeleton; at a part scale, parts :math:`P \neq Q` are linked when a
    keypoint of :math:`P` and a keypoint of :math:`Q` are linked or are the
    same keypoint.

    Args:
        keypoints (sequence of str): keypoint names, in the order of the
            keypoint rows of a pose (``K`` names, unique).
        edges (sequence of (int, int)): undirected skeleton edges between
            0-based keypoint indices (no self-edges, no duplicates).
        groupings (mapping, optional): ``{scale: {part name: keypoint ids}}``
            for the coarser scales, e.g. ``{"s2": {"head": (0, 1, 2), ...}}``.
            Scale names must differ from ``"s1"``; parts may share keypoints.
            (default: no coarser scale)
        name (str, optional): a label for messages and ``repr``.
            (default: ``"custom"``)

    Raises:
        ValueError: duplicate names, an edge or member out of range, a
            self-edge, a duplicate edge, an empty part, or a scale named
            ``"s1"``.

    Examples:
        >>> tri = Skeleton(keypoints=("a", "b", "c"), edges=((0, 1), (1, 2)),
        ...                groupings={"top": {"ab": (0, 1), "c": (2,)}})
        >>> tri.scales
        ('s1', 'top')
        >>> tri.physical_adjacency("s1")
        tensor([[0., 1., 0.],
                [1., 0., 1.],
                [0., 1., 0.]])
        >>> tri.group_matrix("top")
        tensor([[0.5000, 0.5000, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """

    keypoints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    groupings: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    name: str = "custom"

    def __post_init__(self) -> None:
        keypoints = tuple(str(k) for k in self.keypoints)
        if not keypoints:
            raise ValueError(f"skeleton {self.name!r}: needs at least one keypoint")
        dup = sorted({k for k in keypoints if keypoints.count(k) > 1})
        if dup:
            raise ValueError(f"skeleton {self.name!r}: duplicate keypoint names {dup}")
        K = len(keypoints)
        edges = []
        seen = set()
        for e in self.edges:
            if len(e) != 2:
                raise ValueError(f"skeleton {self.name!r}: edge {e!r} is not a pair of indices")
            i, j = int(e[0]), int(e[1])
            if not (0 <= i < K and 0 <= j < K):
                raise ValueError(
                    f"skeleton {self.name!r}: edge ({i}, {j}) is out of range for {K} keypoints "
                    f"(indices are 0-based, 0..{K - 1})"
                )
            if i == j:
                raise ValueError(
                    f"skeleton {self.name!r}: self-edge ({i}, {i}); self-loops are added by the "
                    "graph convolution (eq. 4), leave them out"
                )
            key = (min(i, j), max(i, j))
            if key in seen:
                raise ValueError(f"skeleton {self.name!r}: duplicate edge ({i}, {j})")
            seen.add(key)
            edges.append((i, j))
        groupings: dict[str, dict[str, tuple[int, ...]]] = {}
        for scale, parts in dict(self.groupings).items():
            scale = str(scale)
            if scale == KEYPOINT_SCALE:
                raise ValueError(
                    f"skeleton {self.name!r}: scale name {KEYPOINT_SCALE!r} is reserved for the "
                    "keypoints; name the grouping differently (e.g. 's2')"
                )
            if not parts:
                raise ValueError(f"skeleton {self.name!r}: scale {scale!r} has no parts")
            grouped: dict[str, tuple[int, ...]] = {}
            for part, members in dict(parts).items():
                members = tuple(int(m) for m in members)
                if not members:
                    raise ValueError(
                        f"skeleton {self.name!r}: part {part!r} of scale {scale!r} has no keypoints"
                    )
                bad = [m for m in members if not 0 <= m < K]
                if bad:
                    raise ValueError(
                        f"skeleton {self.name!r}: part {part!r} of scale {scale!r} has keypoint "
                        f"ids {bad} out of range 0..{K - 1}"
                    )
                if len(set(members)) != len(members):
                    raise ValueError(
                        f"skeleton {self.name!r}: part {part!r} of scale {scale!r} lists a "
                        f"keypoint twice: {members}"
                    )
                grouped[str(part)] = members
            groupings[scale] = grouped
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "edges", tuple(edges))
        object.__setattr__(self, "groupings", groupings)

    __hash__ = None  # groupings is a dict

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.num_nodes(s)}" for s in self.scales)
        return f"Skeleton({self.name!r}, {sizes}, edges={len(self.edges)})"

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints ``K``."""
        return len(self.keypoints)

    @property
    def scales(self) -> tuple[str, ...]:
        """Scale names, finest first (``("s1", *groupings)``)."""
        return (KEYPOINT_SCALE, *self.groupings)

    def _check_scale(self, scale: str) -> None:
        if scale not in self.scales:
            raise ValueError(
                f"unknown scale {scale!r} for skeleton {self.name!r}; "
                f"choose one of: {', '.join(self.scales)}"
            )

    def members(self, scale: str) -> tuple[tuple[int, ...], ...]:
        """Keypoint ids of each node of ``scale`` (``((0,), (1,), ...)`` at ``"s1"``)."""
        self._check_scale(scale)
        if scale == KEYPOINT_SCALE:
            return tuple((k,) for k in range(self.num_keypoints))
        return tuple(self.groupings[scale].values())

    def part_names(self, scale: str) -> tuple[str, ...]:
        """Node names of ``scale`` (the keypoint names at ``"s1"``)."""
        self._check_scale(scale)
        if scale == KEYPOINT_SCALE:
            return self.keypoints
        return tuple(self.groupings[scale])

    def num_nodes(self, scale: str) -> int:
        """Number of nodes ``N_s`` of ``scale``."""
        return len(self.members(scale))

    def flip_index(self) -> tuple[int, ...]:
        """Keypoint permutation of a left-right mirrored image.

        Entry ``k`` is the keypoint that ``k`` becomes in the mirror: the names
        ``left_X`` and ``right_X`` swap (also ``l_X`` / ``r_X``), every other
        keypoint maps to itself. Used with ``x -> W - x`` by
        :func:`~stgraph.graph.flip_keypoints`.

        Examples:
            >>> COCO17.flip_index()[:7]
            (0, 2, 1, 4, 3, 6, 5)
        """
        index = {name: k for k, name in enumerate(self.keypoints)}
        swaps = (("left_", "right_"), ("right_", "left_"), ("l_", "r_"), ("r_", "l_"))
        out = []
        for k, name in enumerate(self.keypoints):
            mirror = k
            for a, b in swaps:
                if name.startswith(a) and b + name[len(a):] in index:
                    mirror = index[b + name[len(a):]]
                    break
            out.append(mirror)
        return tuple(out)

    def group_matrix(self, scale: str, dtype: torch.dtype = torch.float32,
                     device=None) -> Tensor:
        r"""Pooling matrix from keypoints to the nodes of ``scale``.

        Row ``n`` holds ``1 / |P_n|`` on the keypoints of part ``P_n`` and 0
        elsewhere, so ``G @ V_s1`` averages each part's keypoint features
        (sec. 3.1). At ``"s1"`` it is the identity.

        Returns:
            Tensor of shape ``(N_s, K)``.
        """
        members = self.members(scale)
        g = torch.zeros(len(members), self.num_keypoints, dtype=dtype, device=device)
        for n, ks in enumerate(members):
            g[n, list(ks)] = 1.0 / len(ks)
        return g

    def physical_adjacency(self, scale: str, dtype: torch.dtype = torch.float32,
                           device=None) -> Tensor:
        r"""Physical adjacency :math:`A^p_s` of eq. (2), symmetric 0/1, zero diagonal.

        At ``"s1"``: :math:`A_{ij} = 1` for each skeleton edge, both ways. At a
        part scale: :math:`A_{PQ} = 1` for :math:`P \neq Q` when some keypoint
        of :math:`P` and some keypoint of :math:`Q` are linked or equal, i.e.
        :math:`M (A_{s1} + I) M^\top > 0` off the diagonal, with :math:`M` the
        0/1 membership matrix.

        Returns:
            Tensor of shape ``(N_s, N_s)``.
        """
        self._check_scale(scale)
        K = self.num_keypoints
        a = torch.zeros(K, K, dtype=torch.float64)
        if self.edges:
            i, j = torch.tensor(self.edges, dtype=torch.long).t()
            a[i, j] = 1.0
            a[j, i] = 1.0
        if scale != KEYPOINT_SCALE:
            m = (self.group_matrix(scale, dtype=torch.float64) > 0).to(torch.float64)
            a = ((m @ (a + torch.eye(K, dtype=torch.float64)) @ m.t()) > 0).to(torch.float64)
            a.fill_diagonal_(0.0)
        return a.to(dtype=dtype, device=device)


#: The 17 COCO keypoints with the 19 COCO skeleton edges (0-based) and stgraph's
#: CTL groupings (DESIGN.md): ``s2`` 10 low-level parts, ``s3`` 5 high-level parts.
COCO17 = Skeleton(
    name="coco17",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    groupings={
        "s2": {
            "head": (0, 1, 2, 3, 4),
            "left_shoulder": (5,),
            "right_shoulder": (6,),
            "left_arm": (7, 9),
            "right_arm": (8, 10),
            "left_hip": (11,),
            "right_hip": (12,),
            "left_leg": (13, 15),
            "right_leg": (14, 16),
            "torso": (5, 6, 11, 12),
        },
        "s3": {
            "head": (0, 1, 2, 3, 4),
            "left_arm": (5, 7, 9),
            "right_arm": (6, 8, 10),
            "left_leg": (11, 13, 15),
            "right_leg": (12, 14, 16),
        },
    },
)  # fmt: skip
