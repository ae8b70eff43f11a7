"""MARS, in its official release layout (``bbox_train``, ``bbox_test``, ``info``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stgraph.data.base import Tracklet, VideoReIDDataset
from stgraph.data.registry import register_dataset

__all__ = ["MARS"]

_INFO_FILES = {
    # file name -> the variable it holds
    "tracks_train_info.mat": "track_train_info",
    "tracks_test_info.mat": "track_test_info",
    "query_IDX.mat": "query_IDX",
    "train_name.txt": None,
    "test_name.txt": None,
}
PROTOCOLS = ("torchreid", "mars-official")


@register_dataset("mars")
class MARS(VideoReIDDataset):
    r"""MARS video re-ID dataset (Motion Analysis and Re-identification Set).

    Reference: Zheng et al., "MARS: A Video Benchmark for Large-Scale Person
    Re-identification", ECCV 2016.
    URL: http://www.liangzheng.com.cn/Project/project_mars.html

    Statistics (the official index files): 6 cameras; 509,914 train and
    681,089 test frames (crops ``256 x 128``); 8298 train tracklets of 625
    identities, 12180 test tracklets (2 to 920 frames) of 634 identities plus
    two special labels: person id ``-1`` marks 870 junk tracklets and ``0``
    3248 distractor tracklets. ``query_IDX`` picks 1980 query tracklets (626
    identities, no junk, no distractors) from the test tracklets.

    Layout under ``root``::

        bbox_train/0001/0001C1T0001F001.jpg ...
        bbox_test/0000/0000C1T0001F001.jpg ...   (00-1/ for the junk person -1)
        info/tracks_train_info.mat  info/tracks_test_info.mat  info/query_IDX.mat
        info/train_name.txt  info/test_name.txt

    A row ``(start, end, pid, camera)`` of ``tracks_*_info.mat`` is one
    tracklet: the names ``start .. end`` (1-based, inclusive) of
    ``*_name.txt``. A name ``0001C1T0001F001.jpg`` reads person 0001, camera 1,
    tracklet 0001, frame 001; its frame path is
    ``root/bbox_{train,test}/<name[:4]>/<name>`` (torchreid's convention).
    Only the folders and the index files are checked when the dataset is
    built; a frame file is checked when :meth:`read_frame` reads it.

    Subsets: ``train`` holds the 8298 train tracklets, pids relabelled
    ``0 .. 624`` in sorted order of the original id; ``query`` the 1980 test
    tracklets at the rows ``query_IDX`` (1-based), in that order, with their
    original pids; ``gallery`` depends on ``protocol``:

    * ``"torchreid"`` (default): the test tracklets *not* at ``query_IDX``,
      minus the junk ones (pid ``-1``): 12180 - 1980 = 10200 rows, less 870
      junk = **9330** gallery tracklets (3248 of them distractors, pid ``0``),
      in test-info order. This is torchreid's ``Mars`` dataset, whose summary
      prints 622 gallery ids because it counts the distinct pids *before*
      dropping the junk rows; the 9330 tracklets here hold 621 distinct pids
      (620 persons and the distractor label ``0``). 14 query identities have
      no tracklet left in this gallery; their queries are skipped.
    * ``"mars-official"``: all **12180** test tracklets in test-info order,
      queries, junk (pid ``-1``) and distractors (pid ``0``) included, as the
      official MATLAB evaluation uses them: its evaluator ignores pid ``-1``
      and the same-pid same-camera items (the query itself among them).

    ``camid`` is the info camera minus 1 (``0 .. 5``).

    Args:
        root (str or Path): the directory that holds ``bbox_train``,
            ``bbox_test`` and ``info``.
        protocol (str, optional): ``"torchreid"`` or ``"mars-official"``, what
            ``gallery`` holds (see above). (default: ``"torchreid"``)

    Raises:
        ValueError: ``protocol`` is not one of the two; an index file is
            malformed (not a MATLAB file, missing its variable, wrong shape,
            frame rows outside the name list, a tracklet whose names mix
            persons or cameras, a camera outside 1..6, ``query_IDX`` rows out
            of range or repeated); the message names the file.
        FileNotFoundError: ``root``, ``bbox_train``, ``bbox_test``, ``info`` or
            one of the five index files is missing (the message names it).
    """

    name = "mars"

    def __init__(self, root: str | os.PathLike, protocol: str = "torchreid") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"MARS: unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}"
            )
        self.root = Path(root)
        self.protocol = protocol
        self.info_dir = self.root / "info"
        self._check_paths()

        train_info = self._read_info("tracks_train_info.mat")
        test_info = self._read_info("tracks_test_info.mat")
        query_rows = self._read_query_rows(len(test_info))
        train_names = self._read_names("train_name.txt", train_info)
        test_names = self._read_names("test_name.txt", test_info)

        labels = {pid: i for i, pid in enumerate(np.unique(train_info[:, 2]).tolist())}
        train = _tracklets(self.root / "bbox_train", train_names, train_info, labels)
        test = _tracklets(self.root / "bbox_test", test_names, test_info)
        query = [test[i] for i in query_rows]
        if protocol == "torchreid":
            is_query = np.zeros(len(test), dtype=bool)
            is_query[query_rows] = True
            keep = ~is_query & (test_info[:, 2] != -1)
            gallery = [test[i] for i in np.flatnonzero(keep).tolist()]
        else:
            gallery = test
        #: numpy.ndarray: the 0-based rows of the test info that are queries.
        self.query_rows = query_rows
        super().__init__(train, query, gallery)

    def _check_paths(self) -> None:
        for d in (self.root, self.root / "bbox_train", self.root / "bbox_test", self.info_dir):
            if not d.is_dir():
                hint = ""
                for sub in ("mars", "MARS"):
                    if (self.root / sub / "info").is_dir():
                        hint = f" ({self.root / sub} holds the dataset: pass it as root)"
                        break
                raise FileNotFoundError(
                    f"MARS: missing directory {d}{hint}; expected bbox_train/, bbox_test/ and "
                    f"info/ under root={self.root}"
                )
        for file in _INFO_FILES:
            path = self.info_dir / file
            if not path.is_file():
                raise FileNotFoundError(
                    f"MARS: missing index file {path}; the official info/ folder holds "
                    f"{', '.join(_INFO_FILES)}"
                )

    def _load_mat(self, file: str) -> np.ndarray:
        from scipy.io import loadmat

        path = self.info_dir / file
        key = _INFO_FILES[file]
        try:
            mat = loadmat(path)
        except Exception as err:  # scipy raises ValueError, TypeError, OSError, ...
            raise ValueError(f"MARS: cannot read {path} as a MATLAB file: {err}") from err
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"MARS: {path} holds no variable {key!r} (found {found})")
        return np.asarray(mat[key]).astype(np.int64)

    def _read_info(self, file: str) -> np.ndarray:
        info = self._load_mat(file)
        path = self.info_dir / file
        if info.ndim != 2 or info.shape[1] != 4 or len(info) == 0:
            raise ValueError(
                f"MARS: {path} must hold an (n, 4) array of rows (start, end, pid, camera), "
                f"got shape {info.shape}"
            )
        bad = np.flatnonzero((info[:, 0] < 1) | (info[:, 1] < info[:, 0]))
        if len(bad):
            raise ValueError(
                f"MARS: {path} row {bad[0] + 1} has frames {info[bad[0], 0]}..{info[bad[0], 1]}; "
                "start must be >= 1 and end >= start"
            )
        bad = np.flatnonzero((info[:, 3] < 1) | (info[:, 3] > 6))
        if len(bad):
            raise ValueError(
                f"MARS: {path} row {bad[0] + 1} has camera {info[bad[0], 3]}; MARS cameras are 1..6"
            )
        return info

    def _read_query_rows(self, num_test: int) -> np.ndarray:
        rows = self._load_mat("query_IDX.mat").ravel() - 1
        path = self.info_dir / "query_IDX.mat"
        bad = np.flatnonzero((rows < 0) | (rows >= num_test))
        if len(bad):
            raise ValueError(
                f"MARS: {path} entry {bad[0] + 1} is {rows[bad[0]] + 1}, outside the "
                f"{num_test} rows (1-based) of tracks_test_info.mat"
            )
        if len(np.unique(rows)) != len(rows):
            raise ValueError(f"MARS: {path} lists some test rows more than once")
        return rows

    def _read_names(self, file: str, info: np.ndarray) -> list[str]:
        path = self.info_dir / file
        names = path.read_text().split()
        if int(info[:, 1].max()) > len(names):
            row = int(np.argmax(info[:, 1]))
            raise ValueError(
                f"MARS: row {row + 1} of {file.replace('_name.txt', '')} info ends at frame "
                f"{info[row, 1]}, but {path} lists {len(names)} names"
            )
        # every tracklet's names must share person and camera (the first 6 characters)
        key = np.array([n[:6] for n in names])
        run = np.concatenate(([0], np.cumsum(key[1:] != key[:-1])))
        mixed = np.flatnonzero(run[info[:, 0] - 1] != run[info[:, 1] - 1])
        if len(mixed):
            s, e = info[mixed[0], :2]
            raise ValueError(
                f"MARS: names {s}..{e} of {path} (row {mixed[0] + 1} of its info file) mix "
                f"persons or cameras ({names[s - 1]} .. {names[e - 1]}); the info and name "
                "files do not belong together"
            )
        return names


def _tracklets(
    folder: Path, names: list[str], info: np.ndarray, labels: dict[int, int] | None = None
) -> list[Tracklet]:
    # one path string per name, then a tuple slice per info row
    prefix = f"{folder}{os.sep}"
    paths = [f"{prefix}{n[:4]}{os.sep}{n}" for n in names]
    out = []
    for start, end, pid, cam in info.tolist():
        out.append(
            Tracklet(tuple(paths[start - 1 : end]), pid if labels is None else labels[pid], cam - 1)
        )
    return out
