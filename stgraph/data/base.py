"""The tracklet record and the base class of every video re-ID dataset."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

__all__ = ["Tracklet", "VideoReIDDataset"]


class Tracklet(NamedTuple):
    """One person seen by one camera over consecutive frames.

    Attributes:
        frames (tuple): frame keys in temporal order: file paths (``str``) for
            image datasets, small hashable keys for generated data. Pass a key
            to :meth:`VideoReIDDataset.read_frame` to get the image.
        pid (int): person id. In ``train`` relabelled to
            ``0 .. num_train_pids - 1`` (contiguous, usable as a class label);
            in ``query`` / ``gallery`` the dataset's original id.
        camid (int): 0-based camera id.
    """

    frames: tuple
    pid: int
    camid: int


class VideoReIDDataset:
    """Base class of the video re-ID datasets: three lists of :class:`Tracklet`.

    A subclass builds its ``train``, ``query`` and ``gallery`` lists and calls
    ``super().__init__(train, query, gallery)``, which checks them: every
    tracklet has at least one frame and the train pids are exactly
    ``0 .. num_train_pids - 1``. Image datasets use frame keys that are file
    paths and inherit :meth:`read_frame`; generated datasets override it.

    Evaluation (see ``DESIGN.md``): each query is matched against the gallery
    minus the items of the same pid *and* the same camera.

    Args:
        train (list[Tracklet]): training tracklets, pids relabelled contiguously.
        query (list[Tracklet]): query tracklets, original pids.
        gallery (list[Tracklet]): gallery tracklets, original pids.

    Raises:
        ValueError: if a tracklet has no frames, or the train pids are not
            ``0 .. n - 1``.
    """

    name: str = "video_reid"

    def __init__(
        self,
        train: Iterable[Tracklet],
        query: Iterable[Tracklet],
        gallery: Iterable[Tracklet],
    ) -> None:
        self.train: list[Tracklet] = [_as_tracklet(t) for t in train]
        self.query: list[Tracklet] = [_as_tracklet(t) for t in query]
        self.gallery: list[Tracklet] = [_as_tracklet(t) for t in gallery]
        for subset in ("train", "query", "gallery"):
            for i, t in enumerate(getattr(self, subset)):
                if len(t.frames) == 0:
                    raise ValueError(
                        f"{self.name}: {subset}[{i}] (pid {t.pid}, camid {t.camid}) has no "
                        "frames; drop empty tracklets before building the dataset"
                    )
        pids = sorted({t.pid for t in self.train})
        if pids != list(range(len(pids))):
            raise ValueError(
                f"{self.name}: train pids must be relabelled to 0..{len(pids) - 1}, got "
                f"{_short(pids)}; relabel them (e.g. {{pid: i for i, pid in "
                "enumerate(sorted(pids))}})"
            )

    @property
    def num_train_pids(self) -> int:
        """int: number of training identities (= the classifier's output size)."""
        return len({t.pid for t in self.train})

    @property
    def num_train_cams(self) -> int:
        """int: number of distinct cameras among the training tracklets."""
        return len({t.camid for t in self.train})

    def read_frame(self, key: Hashable) -> Image.Image:
        """Load one frame as an RGB image.

        Args:
            key: a frame key from ``Tracklet.frames`` (here: an image file path).

        Returns:
            PIL.Image.Image: the frame, mode ``"RGB"``, at its stored size.

        Raises:
            FileNotFoundError: the file does not exist (the message names it).
            OSError: the file cannot be decoded (the message names it).
        """
        path = Path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: frame file not found: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as err:
            # PIL raises OSError (UnidentifiedImageError, truncated data) and
            # occasionally ValueError/SyntaxError for corrupt headers.
            raise OSError(
                f"{self.name}: cannot read frame {path}: {err}; the file is corrupt or not "
                "an image, replace or delete it"
            ) from err

    def frame_keypoints(self, key: Hashable) -> np.ndarray | None:
        """Pose keypoints of one frame, where the dataset has them.

        Args:
            key: a frame key from ``Tracklet.frames``.

        Returns:
            numpy.ndarray or None: ``(17, 3)`` float32 rows ``(x, y, score)`` in
            COCO keypoint order, in the frame's own pixel coordinates; ``None``
            when the dataset has no keypoints (the base class).
        """
        return None

    def summary(self) -> str:
        """A table of identities, tracklets and frames per subset (as torchreid prints).

        Returns:
            str: a multi-line table; print it.
        """
        rows = [("train", self.train), ("query", self.query), ("gallery", self.gallery)]
        header = (
            f"  {'subset':<8}| {'# ids':>6} | {'# tracklets':>11} | {'# frames':>9} "
            f"| {'frames/tracklet min/avg/max':>27}"
        )
        line = "  " + "-" * (len(header) - 2)
        out = [f"=> {self.__class__.__name__} ({self.name})", line, header, line]
        for subset, tracklets in rows:
            lengths = [len(t.frames) for t in tracklets]
            if lengths:
                stats = f"{min(lengths)} / {sum(lengths) / len(lengths):.1f} / {max(lengths)}"
            else:
                stats = "-"
            out.append(
                f"  {subset:<8}| {len({t.pid for t in tracklets}):>6} | {len(tracklets):>11} | "
                f"{sum(lengths):>9} | {stats:>27}"
            )
        out.append(line)
        return "\n".join(out)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(train={len(self.train)}, query={len(self.query)}, "
            f"gallery={len(self.gallery)}, num_train_pids={self.num_train_pids})"
        )


def _as_tracklet(t: Sequence) -> Tracklet:
    frames, pid, camid = t
    return Tracklet(tuple(frames), int(pid), int(camid))


def _short(values: list[int], n: int = 8) -> str:
    return str(values) if len(values) <= n else f"[{', '.join(map(str, values[:n]))}, ...]"
