"""DukeMTMC-VideoReID, in its release layout (``train``, ``query``, ``gallery``)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from stgraph.data.base import Tracklet, VideoReIDDataset
from stgraph.data.folders import IMAGE_SUFFIXES
from stgraph.data.registry import register_dataset

__all__ = ["DukeMTMCVidReID"]

# 0001_C6_F0001_X00001.jpg (release naming) or 0001C6F0099X30823.jpg (older naming)
_CAMERA = re.compile(r"^\d+_?C(\d+)_?F", re.IGNORECASE)
SUBSETS = ("train", "query", "gallery")


@register_dataset("dukemtmcvidreid")
class DukeMTMCVidReID(VideoReIDDataset):
    r"""DukeMTMC-VideoReID video re-ID dataset.

    References: Wu et al., "Exploit the Unknown Gradually: One-Shot
    Video-Based Person Re-Identification by Stepwise Learning", CVPR 2018;
    the videos: Ristani et al., "Performance Measures and a Data Set for
    Multi-Target, Multi-Camera Tracking", ECCV workshops 2016.
    URL: https://github.com/Yu-Wu/DukeMTMC-VideoReID

    Statistics: 8 cameras; 1812 identities (1404 that two or more cameras
    see, plus 408 distractors seen by one); 4832 tracklets, 168 frames on
    average. ``train``: 702 identities, 2196 tracklets; ``query``: 702
    identities, one tracklet each (702); ``gallery``: 1110 identities (the 702
    test ones and the 408 distractors), 2636 tracklets.

    Layout under ``root`` (the ``DukeMTMC-VideoReID`` folder of the release)::

        train/0001/0001/0001_C6_F0001_X00001.jpg ...   (person / tracklet / frames)
        query/0005/0001/0005_C1_F0001_X00001.jpg ...
        gallery/0005/0002/0005_C2_F0001_X00001.jpg ...

    Frames are the ``.jpg`` (also ``.jpeg`` / ``.png``) files of a tracklet
    folder, sorted by file name; the zero-padded ``F<frame>`` keeps them in
    temporal order (torchreid instead looks up ``F0001 .. F<count>`` and so
    drops a tracklet's last frames when its numbering starts above 1).
    ``camid`` is ``n - 1`` for the ``C<n>`` of the tracklet's first frame
    name, as torchreid reads it. A tracklet folder without frames is skipped
    with a ``UserWarning`` (counted in :attr:`num_empty_tracklets`).

    Subsets: ``train`` with pids relabelled ``0 .. n - 1`` in sorted order of
    the person folder number; ``query`` and ``gallery`` with the person
    folder number (``0005`` -> 5) as pid. Tracklets are in sorted order of
    person, then tracklet folder.

    Args:
        root (str or Path): the directory that holds ``train``, ``query`` and
            ``gallery``.

    Raises:
        FileNotFoundError: ``root``, ``train``, ``query`` or ``gallery`` is
            missing (the message names it).
        ValueError: a person folder name is not a number, or a frame name
            carries no camera ``C<n>`` (the message names the path).
    """

    name = "dukemtmcvidreid"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._check_paths()
        #: int: tracklet folders without frames, skipped.
        self.num_empty_tracklets = 0
        subsets = {s: self._scan(self.root / s) for s in SUBSETS}
        labels = {pid: i for i, pid in enumerate(sorted({t.pid for t in subsets["train"]}))}
        train = [t._replace(pid=labels[t.pid]) for t in subsets["train"]]
        super().__init__(train, subsets["query"], subsets["gallery"])

    def _check_paths(self) -> None:
        for d in (self.root, *(self.root / s for s in SUBSETS)):
            if not d.is_dir():
                hint = ""
                nested = self.root / "DukeMTMC-VideoReID"
                if (nested / "train").is_dir():
                    hint = f" ({nested} holds the dataset: pass it as root)"
                raise FileNotFoundError(
                    f"DukeMTMCVidReID: missing directory {d}{hint}; expected train/, query/ and "
                    f"gallery/ with <pid>/<tracklet>/ frame folders under root={self.root}"
                )

    def _scan(self, subset_dir: Path) -> list[Tracklet]:
        tracklets, empty = [], []
        for person_dir in _subdirs(subset_dir):
            name = os.path.basename(person_dir)
            if not name.isdigit():
                raise ValueError(
                    f"DukeMTMCVidReID: person folder {person_dir} is not named by a number "
                    "(e.g. 0001); remove it or rename it"
                )
            pid = int(name)
            for tracklet_dir in _subdirs(person_dir):
                with os.scandir(tracklet_dir) as entries:
                    frames = sorted(
                        e.path
                        for e in entries
                        if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file()
                    )
                if not frames:
                    empty.append(tracklet_dir)
                    continue
                match = _CAMERA.match(os.path.basename(frames[0]))
                if match is None or int(match.group(1)) < 1:
                    raise ValueError(
                        f"DukeMTMCVidReID: cannot read the camera from frame name {frames[0]}; "
                        "expected names like 0001_C6_F0001_X00001.jpg (camera C1..C8)"
                    )
                tracklets.append(Tracklet(tuple(frames), pid, int(match.group(1)) - 1))
        if empty:
            self.num_empty_tracklets += len(empty)
            warnings.warn(
                f"DukeMTMCVidReID: {len(empty)} tracklet folder(s) under {subset_dir} have no "
                f"frames (e.g. {empty[0]}); they are skipped",
                stacklevel=2,
            )
        return tracklets


def _subdirs(path: str | os.PathLike) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries if e.is_dir())
