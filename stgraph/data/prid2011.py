"""PRID-2011 (and any dataset in its ``multi_shot`` layout)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stgraph.data.base import Tracklet, VideoReIDDataset
from stgraph.data.folders import check_split, list_persons, person_number, read_split
from stgraph.data.registry import register_dataset
from stgraph.graph.keypoints import load_coco_keypoints, prior_pose

__all__ = ["PRID2011"]



@register_dataset("prid2011")
class PRID2011(VideoReIDDataset):
    r"""PRID-2011 video re-ID dataset, ``multi_shot`` version.

    Reference: Hirzer et al., "Person Re-Identification by Descriptive and
    Discriminative Classification", SCIA 2011.
    URL: https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/prid11

    Statistics (the original release): 2 cameras; 385 persons in camera A and
    749 in camera B, the first 200 in both; tracklets of 5 to 675 frames. The
    usual protocol (torchreid, iLIDS-VID style) keeps the 178 persons with
    more than 21 frames in both cameras, splits them 89 train / 89 test, and
    reports the mean over 10 random splits (``splits_prid2011.json``).

    Layout under ``root``::

        multi_shot/cam_a/person_0001/0001.png ...
        multi_shot/cam_b/person_0001/0001.png ...

    Frames are the ``.png`` / ``.jpg`` / ``.jpeg`` files of a person directory,
    sorted by file name. Any dataset laid out like this loads (e.g. the
    CUHK03 camera-pair-1 tracklets in ``../shared/data/cuhk03-pair1``).

    Protocol: ``train`` holds the cam_a and cam_b tracklets of the split's
    train persons (pids relabelled ``0 .. n - 1`` in sorted order of person
    name); ``query`` the cam_a tracklets of the test persons and ``gallery``
    their cam_b tracklets, with the person number (``person_0744`` -> 744) as
    pid. ``camid`` is 0 for cam_a, 1 for cam_b.

    Without ``split_file``, the persons present in *both* cameras (those with
    at least one frame each) are split at random in half: a permutation from a
    ``torch.Generator`` seeded with ``split_id`` (so ``split_id`` 0..9 give
    ten reproducible splits), the first ``ceil(n / 2)`` persons for training.
    No minimum tracklet length is applied; pass torchreid's split file for
    the standard protocol.

    Args:
        root (str or Path): the directory that contains ``multi_shot``.
        split_file (str or Path, optional): torchreid's split JSON: a list of
            ``{"train": [...], "test": [...]}`` dicts whose entries are person
            directory names (``"person_0001"``) or ints (``1`` means
            ``person_0001``). (default: ``None``, a random half/half split)
        split_id (int, optional): which split of ``split_file`` to use, or the
            seed of the random split. (default: ``0``)
        keypoints (str or Path, optional): a COCO keypoint results file (the
            AlphaPose format, see :func:`stgraph.graph.load_coco_keypoints`)
            whose ``image_id`` is each frame's path relative to ``root``
            (``multi_shot/cam_a/person_0001/0001.jpg``). Frames missing from the
            file fall back to :func:`stgraph.graph.prior_pose` of their image
            size; their number is given in a ``UserWarning`` and in
            :attr:`num_keypoint_fallbacks`. Entries that match no frame are
            counted in :attr:`num_unmatched_keypoints` and warned about.
            (default: ``None``, :meth:`frame_keypoints` returns ``None``)

    Raises:
        FileNotFoundError: ``root``, ``multi_shot``, ``cam_a``, ``cam_b``,
            ``split_file``, or a person listed in the split is missing (the
            message names the path).
        ValueError: the split file is empty, not JSON, not a list of
            ``{"train", "test"}`` dicts, has invalid or overlapping entries, or
            ``split_id`` is out of range; a person of the split has no frames;
            the keypoints file is malformed or none of its entries matches a
            frame under ``root``.
    """

    name = "prid2011"

    def __init__(
        self,
        root: str | os.PathLike,
        split_file: str | os.PathLike | None = None,
        split_id: int = 0,
        keypoints: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root)
        self.split_file = None if split_file is None else Path(split_file)
        self.split_id = int(split_id)
        self.cam_dirs = (self.root / "multi_shot" / "cam_a", self.root / "multi_shot" / "cam_b")
        self._check_paths()

        listed = [list_persons(d) for d in self.cam_dirs]
        persons = [p for p, _ in listed]  # per camera: person name -> frame paths
        self._empty = [e for _, e in listed]  # per camera: person dirs without frames
        if self.split_file is None:
            train_names, test_names = self._random_split(persons)
        else:
            train_names, test_names = self._read_split(persons)

        train_label = {name: label for label, name in enumerate(sorted(train_names))}
        train = [
            Tracklet(persons[cam][name], train_label[name], cam)
            for name in sorted(train_names)
            for cam in (0, 1)
        ]
        pid = {n: person_number(n, "PRID2011", "person_NNNN") for n in test_names}
        query = [Tracklet(persons[0][n], pid[n], 0) for n in sorted(test_names)]
        gallery = [Tracklet(persons[1][n], pid[n], 1) for n in sorted(test_names)]
        super().__init__(train, query, gallery)
        self.keypoints_file = None if keypoints is None else Path(keypoints)
        self._keypoints: dict[Hashable, np.ndarray] | None = None
        self.num_keypoint_fallbacks = 0
        self.num_unmatched_keypoints = 0
        if self.keypoints_file is not None:
            self._attach_keypoints()

    def _attach_keypoints(self) -> None:
        path = self.keypoints_file
        table = load_coco_keypoints(path)  # raises naming the file and entry on bad input
        frames = {
            Path(f).relative_to(self.root).as_posix(): f
            for t in (*self.train, *self.query, *self.gallery)
            for f in t.frames
        }
        self._keypoints = {frames[k]: v for k, v in table.items() if k in frames}
        if not self._keypoints:
            example = next(iter(table), None)
            raise ValueError(
                f"PRID2011: none of the {len(table)} entries of keypoints file {path} matches "
                f"a frame under {self.root} (e.g. image_id {example!r}); image_id must be "
                "the frame path relative to root, like 'multi_shot/cam_a/person_0001/0001.jpg'"
            )
        self.num_unmatched_keypoints = len(table) - len(self._keypoints)
        self.num_keypoint_fallbacks = len(frames) - len(self._keypoints)
        if self.num_keypoint_fallbacks:
            warnings.warn(
                f"PRID2011: {self.num_keypoint_fallbacks} of {len(frames)} frames have no "
                f"keypoints in {path}; they use the prior pose", stacklevel=3)
        if self.num_unmatched_keypoints:
            warnings.warn(
                f"PRID2011: {self.num_unmatched_keypoints} entries of {path} match no frame "
                f"of this split under {self.root}; they are ignored", stacklevel=3)

    def frame_keypoints(self, key: Hashable) -> np.ndarray | None:
        """COCO-17 keypoints ``(17, 3)`` (x, y, score in the frame's pixels) of one frame.

        ``None`` without a keypoints file; the prior pose of the frame's image size
        for a frame the file does not cover.
        """
        if self._keypoints is None:
            return None
        found = self._keypoints.get(key)
        if found is not None:
            return found
        with Image.open(key) as img:  # reads the header only
            width, height = img.size
        return prior_pose(height, width)

    def _check_paths(self) -> None:
        required = [self.root, self.root / "multi_shot", *self.cam_dirs]
        missing = [p for p in required if not p.is_dir()]
        if missing:
            hint = ""
            if (self.root / "cam_a").is_dir():
                hint = f" ({self.root} holds cam_a itself: pass its parent as root)"
            raise FileNotFoundError(
                f"PRID2011: missing directory {missing[0]}{hint}; expected "
                f"root/multi_shot/cam_a and cam_b with person_NNNN/ frame folders under root="
                f"{self.root}"
            )
        if self.split_file is not None and not self.split_file.is_file():
            raise FileNotFoundError(
                f"PRID2011: split file {self.split_file} not found; pass an existing "
                "torchreid split JSON or split_file=None for a random split"
            )

    def _random_split(self, persons: list[dict[str, tuple]]) -> tuple[list[str], list[str]]:
        both = sorted(set(persons[0]) & set(persons[1]))
        if len(both) < 2:
            raise ValueError(
                f"PRID2011: a random split needs at least 2 persons in both cameras under "
                f"{self.root / 'multi_shot'}, found {len(both)}"
            )
        gen = torch.Generator().manual_seed(self.split_id)
        order = torch.randperm(len(both), generator=gen).tolist()
        num_train = (len(both) + 1) // 2
        return [both[i] for i in order[:num_train]], [both[i] for i in order[num_train:]]

    def _read_split(self, persons: list[dict[str, tuple]]) -> tuple[list[str], list[str]]:
        path = self.split_file
        _, split = read_split("PRID2011", path, self.split_id)
        names = {}
        for subset in ("train", "test"):
            entries = split[subset]
            if not isinstance(entries, list):
                raise ValueError(
                    f"PRID2011: split {self.split_id} of {path}: '{subset}' must be a list, "
                    f"got {type(entries).__name__}"
                )
            names[subset] = [_person_name(e, path, self.split_id, subset) for e in entries]
        check_split("PRID2011", names["train"], names["test"], self.split_id, path,
                    self.cam_dirs, persons, self._empty, self.root)
        return sorted(set(names["train"])), sorted(set(names["test"]))



def _person_name(entry: object, path: Path, split_id: int, subset: str) -> str:
    if isinstance(entry, bool) or not isinstance(entry, (int, str)):
        raise ValueError(
            f"PRID2011: split {split_id} of {path}: '{subset}' entries must be person directory "
            f'names ("person_0001") or ints, got {entry!r}'
        )
    return f"person_{entry:04d}" if isinstance(entry, int) else entry


