"""iLIDS-VID, in its official release layout (``i-LIDS-VID/sequences/cam1|cam2``)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from stgraph.data.base import Tracklet, VideoReIDDataset
from stgraph.data.folders import check_split, list_persons, person_number, read_split
from stgraph.data.registry import register_dataset

__all__ = ["ILIDSVID"]

NUM_SPLITS = 10
SPLIT_MAT = Path("train-test people splits") / "train_test_splits_ilidsvid.mat"


@register_dataset("ilidsvid")
class ILIDSVID(VideoReIDDataset):
    r"""iLIDS-VID video re-ID dataset.

    Reference: Wang et al., "Person Re-Identification by Video Ranking",
    ECCV 2014.
    URL: https://xiatian-zhu.github.io/downloads_qmul_iLIDS-VID_ReID_dataset.html

    Statistics: 2 cameras (an airport arrival hall); 300 persons, each with
    one tracklet per camera, so 600 tracklets of 23 to 192 frames (73 on
    average). The protocol (Wang et al., torchreid): 10 random splits of the
    persons, 150 train / 150 test; queries are the cam1 tracklets of the test
    persons, the gallery their cam2 tracklets; the mean over the splits is
    reported.

    Layout under ``root`` (the folder the official ``iLIDS-VID.tar`` unpacks)::

        i-LIDS-VID/sequences/cam1/person001/cam1_person001_00317.png ...
        i-LIDS-VID/sequences/cam2/person001/cam2_person001_00317.png ...
        train-test people splits/train_test_splits_ilidsvid.mat   (optional)

    Frames are the ``.png`` / ``.jpg`` / ``.jpeg`` files of a person folder,
    sorted by file name (the zero-padded frame number keeps them in temporal
    order).

    Splits are a JSON file in torchreid's format, a list of
    ``{"train": [person dirs], "test": [person dirs]}`` (an int entry ``14``
    means ``person014``). ``split_file`` is
    read when it exists; otherwise the ten splits are made once and written
    there (reused, identical, by every later construction):

    * from the official split file ``train-test people splits/
      train_test_splits_ilidsvid.mat`` when present, as torchreid does: its
      ``ls_set`` (10 x 300) holds 1-based indices into the sorted person
      folders of cam1, the first 150 of a row test, the rest train;
    * otherwise at random: split ``i`` is a permutation from a
      ``torch.Generator`` seeded with ``i`` of the sorted persons that have
      frames in both cameras, the first ``ceil(n / 2)`` for training.

    If ``split_file`` cannot be written (a read-only ``root``), a
    ``UserWarning`` says so and the splits are used without saving them.

    Subsets: ``train`` holds the cam1 and cam2 tracklets of the split's train
    persons (pids relabelled ``0 .. n - 1`` in sorted order of the folder
    name); ``query`` the cam1 tracklets of the test persons and ``gallery``
    their cam2 tracklets, with the person number (``person014`` -> 14) as pid.
    ``camid`` is 0 for cam1, 1 for cam2.

    Args:
        root (str or Path): the directory that contains ``i-LIDS-VID``.
        split_file (str or Path, optional): the split JSON to read, or to
            create when it does not exist.
            (default: ``None``, ``root/splits_ilidsvid.json``)
        split_id (int, optional): which split to use, ``0 .. 9`` for created
            splits. (default: ``0``)

    Raises:
        FileNotFoundError: ``root``, ``i-LIDS-VID``, ``sequences``, ``cam1`` or
            ``cam2`` is missing, or a person listed in the split has no folder
            (the message names the path).
        ValueError: the split file is empty, not JSON, not a list of
            ``{"train", "test"}`` dicts, or has invalid or overlapping entries;
            ``split_id`` is out of range; a person of the split has no frames;
            the official ``.mat`` split does not match the person folders; fewer
            than 2 persons for a random split.
    """

    name = "ilidsvid"

    def __init__(
        self,
        root: str | os.PathLike,
        split_file: str | os.PathLike | None = None,
        split_id: int = 0,
    ) -> None:
        self.root = Path(root)
        self.split_file = (
            self.root / "splits_ilidsvid.json" if split_file is None else Path(split_file)
        )
        self.split_id = int(split_id)
        seq = self.root / "i-LIDS-VID" / "sequences"
        self.cam_dirs = (seq / "cam1", seq / "cam2")
        self._check_paths()

        listed = [list_persons(d) for d in self.cam_dirs]
        persons = [p for p, _ in listed]  # per camera: person dir name -> frame paths
        empty = [e for _, e in listed]  # per camera: person dirs without frames
        #: bool: whether this construction made the splits (``split_file`` did not exist).
        self.splits_created = not self.split_file.is_file()
        if self.splits_created:
            splits = self._make_splits(persons, empty)
            self._write_splits(splits)
        else:
            splits, _ = read_split("ILIDSVID", self.split_file, self.split_id)
        train_names, test_names = self._select_split(splits, persons, empty)

        label = {name: i for i, name in enumerate(train_names)}
        train = [
            Tracklet(persons[cam][name], label[name], cam) for name in train_names for cam in (0, 1)
        ]
        pid = {n: person_number(n, "ILIDSVID", "personNNN") for n in test_names}
        query = [Tracklet(persons[0][n], pid[n], 0) for n in test_names]
        gallery = [Tracklet(persons[1][n], pid[n], 1) for n in test_names]
        super().__init__(train, query, gallery)

    def _check_paths(self) -> None:
        required = [self.root, self.root / "i-LIDS-VID", self.cam_dirs[0].parent, *self.cam_dirs]
        for d in required:
            if not d.is_dir():
                hint = ""
                if (self.root / "sequences").is_dir():
                    hint = f" ({self.root} holds sequences itself: pass its parent as root)"
                elif (self.root / "cam1").is_dir():
                    hint = f" ({self.root} holds cam1 itself: pass root/../.. as root)"
                raise FileNotFoundError(
                    f"ILIDSVID: missing directory {d}{hint}; expected "
                    f"i-LIDS-VID/sequences/cam1 and cam2 with personNNN/ frame folders under "
                    f"root={self.root}"
                )

    def _make_splits(self, persons: list[dict], empty: list[set]) -> list[dict[str, list[str]]]:
        mat = self.root / SPLIT_MAT
        if mat.is_file():
            return self._splits_from_mat(mat, persons, empty)
        both = sorted(set(persons[0]) & set(persons[1]))
        if len(both) < 2:
            raise ValueError(
                f"ILIDSVID: random splits need at least 2 persons with frames in both cameras "
                f"under {self.cam_dirs[0].parent}, found {len(both)}"
            )
        num_train = (len(both) + 1) // 2
        splits = []
        for i in range(NUM_SPLITS):
            order = torch.randperm(len(both), generator=torch.Generator().manual_seed(i)).tolist()
            splits.append({
                "train": sorted(both[j] for j in order[:num_train]),
                "test": sorted(both[j] for j in order[num_train:]),
            })  # fmt: skip
        return splits

    def _splits_from_mat(
        self, mat: Path, persons: list[dict], empty: list[set]
    ) -> list[dict[str, list[str]]]:
        from scipy.io import loadmat

        try:
            ls_set = loadmat(mat)["ls_set"]
        except Exception as err:  # scipy raises ValueError, OSError, ...; KeyError: no ls_set
            raise ValueError(
                f"ILIDSVID: cannot read variable 'ls_set' from {mat}: {err!r}"
            ) from err
        cam1 = sorted(set(persons[0]) | empty[0])
        cam2 = sorted(set(persons[1]) | empty[1])
        if cam1 != cam2:
            only = sorted(set(cam1) ^ set(cam2))
            raise ValueError(
                f"ILIDSVID: the official split {mat} indexes persons present in both cameras, "
                f"but {len(only)} person folder(s) are in one camera only (e.g. {only[0]})"
            )
        if ls_set.ndim != 2 or ls_set.min() < 1 or ls_set.max() > len(cam1):
            raise ValueError(
                f"ILIDSVID: {mat}: 'ls_set' must be a 2-d array of 1-based indices into the "
                f"{len(cam1)} person folders, got shape {ls_set.shape} with values "
                f"{ls_set.min()}..{ls_set.max()}"
            )
        half = ls_set.shape[1] // 2
        return [
            {  # first half test, second half train (Wang et al. ECCV 2014, torchreid)
                "train": sorted(cam1[int(i) - 1] for i in row[half:]),
                "test": sorted(cam1[int(i) - 1] for i in row[:half]),
            }
            for row in ls_set
        ]

    def _write_splits(self, splits: list[dict[str, list[str]]]) -> None:
        try:
            self.split_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.split_file.with_name(self.split_file.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(splits, indent=1))
            os.replace(tmp, self.split_file)
        except OSError as err:
            warnings.warn(
                f"ILIDSVID: cannot save the splits to {self.split_file} ({err}); using them "
                "unsaved (pass a writable split_file to keep them)",
                stacklevel=3,
            )

    def _select_split(
        self, splits: list, persons: list[dict], empty: list[set]
    ) -> tuple[list[str], list[str]]:
        path = self.split_file
        if not 0 <= self.split_id < len(splits):  # made here: read_split checks a read file
            raise ValueError(
                f"ILIDSVID: split_id={self.split_id} out of range: split file {path} holds "
                f"{len(splits)} split(s), choose split_id in 0..{len(splits) - 1}"
            )
        split = splits[self.split_id]
        names = {}
        for subset in ("train", "test"):
            entries = split[subset]
            if not isinstance(entries, list) or not all(
                isinstance(e, (int, str)) and not isinstance(e, bool) for e in entries
            ):
                raise ValueError(
                    f"ILIDSVID: split {self.split_id} of {path}: '{subset}' must be a list of "
                    f'person folder names ("person001") or ints, got {str(entries)[:60]}'
                )
            names[subset] = sorted({f"person{e:03d}" if isinstance(e, int) else e for e in entries})
        check_split("ILIDSVID", names["train"], names["test"], self.split_id, path,
                    self.cam_dirs, persons, empty, self.root)
        return names["train"], names["test"]



