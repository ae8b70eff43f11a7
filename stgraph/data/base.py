"""The tracklet record and the base class of every video re-ID dataset."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

__all__ = ["FrameNotFoundError", "FrameReadError", "Tracklet", "VideoReIDDataset",
           "check_keypoints_in_frame", "to_rgb"]


class FrameReadError(OSError):
    """A frame file that is missing, corrupt or not an image; the message names the file.

    Raised by :meth:`VideoReIDDataset.read_frame` and :meth:`VideoReIDDataset.check_frames`,
    also from inside ``DataLoader`` worker processes (``stgraph`` prints its one line).
    A missing file raises :class:`FrameNotFoundError`, also a ``FileNotFoundError``.

    Args:
        message (str): what went wrong, naming the file.
    """


class FrameNotFoundError(FrameReadError, FileNotFoundError):
    """A frame file that does not exist (a :class:`FrameReadError` and a
    ``FileNotFoundError``).

    Args:
        message (str): naming the file.
    """


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit RGB image, high bit depths scaled rather than clipped.

    PIL's ``convert("RGB")`` clips a 16-bit grayscale image (modes ``I;16*`` and ``I``, as
    PIL opens 16-bit PNGs) at 255, which turns almost every pixel white; here 16-bit
    values are divided by 257 (65535 -> 255) and float images (mode ``F``) are read as
    [0, 1] when their maximum is at most 1, else as [0, 255].
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64) / 257.0
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
    else:
        return img if img.mode == "RGB" else img.convert("RGB")
    gray = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def check_keypoints_in_frame(kp: np.ndarray, size: tuple[int, int], where: str) -> None:
    """Refuse keypoints (rows ``(x, y, score)``) outside a ``(W, H)`` frame or with a score
    outside [0, 1]; keypoints with score 0 (missing) may lie anywhere.

    Raises:
        ValueError: the message names ``where`` (the frame and the keypoints file), the
            keypoint and its value.
    """
    kp = np.asarray(kp, dtype=np.float64)
    w, h = size
    scores = kp[:, 2]
    bad = np.flatnonzero((scores < 0) | (scores > 1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: keypoint {i} has score {scores[i]:g}, outside [0, 1]; "
                         "keypoint scores must be probabilities")
    present = scores > 0
    outside = present & ((kp[:, 0] < 0) | (kp[:, 0] > w) | (kp[:, 1] < 0) | (kp[:, 1] > h))
    bad = np.flatnonzero(outside)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: keypoint {i} at ({kp[i, 0]:g}, {kp[i, 1]:g}) lies outside "
                         f"the {w} x {h} frame; keypoints are in the frame's pixels (give "
                         "missing ones score 0)")


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

        A 16-bit grayscale frame is scaled to 8 bits, not clipped (:func:`to_rgb`).

        Raises:
            FrameReadError: (an ``OSError``) the file does not exist or cannot be decoded
                (the message names it).
        """
        path = Path(key)
        if not path.is_file():
            raise FrameNotFoundError(f"{self.name}: frame file not found: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
        except (OSError, ValueError, SyntaxError) as err:
            # PIL raises OSError (UnidentifiedImageError, truncated data) and
            # occasionally ValueError/SyntaxError for corrupt headers.
            raise FrameReadError(
                f"{self.name}: cannot read frame {path}: {err}; the file is corrupt or not "
                "an image, replace or delete it"
            ) from None

    def _frame_size(self, key: Hashable, decode: bool) -> tuple[int, int] | None:
        """The ``(W, H)`` of a frame: decoded fully (``decode``) or from the file's header
        (checked by PIL's ``verify``); :obj:`None` for a generated frame not decoded."""
        if decode:
            return self.read_frame(key).size
        if type(self).read_frame is not VideoReIDDataset.read_frame:
            return None  # generated frames: no file to open
        path = Path(key)
        if not path.is_file():
            raise FrameNotFoundError(f"{self.name}: frame file not found: {path}")
        try:
            with Image.open(path) as img:
                size = img.size
                img.verify()
        except (OSError, ValueError, SyntaxError) as err:
            raise FrameReadError(
                f"{self.name}: cannot read frame {path}: {err}; the file is corrupt or not "
                "an image, replace or delete it"
            ) from None
        return size

    def check_frames(self, tracklets: Iterable[Tracklet], decode: bool = False,
                     progress: bool = False) -> int:
        """Check that every frame of ``tracklets`` can be read, and its keypoints (where
        the dataset has them) lie in the frame with scores in [0, 1].

        Args:
            tracklets: e.g. ``dataset.query + dataset.gallery``.
            decode (bool): decode every frame (:meth:`read_frame`); else open and verify
                the files' headers only (fast; generated frames are then skipped).
            progress (bool): a progress bar.

        Returns:
            int: the number of distinct frames checked.

        Raises:
            FrameReadError: a frame cannot be read (the message names the file).
            ValueError: a frame's keypoints are outside it or have a score outside [0, 1].
        """
        from tqdm.auto import tqdm

        keys = list(dict.fromkeys(k for t in tracklets for k in t.frames))
        checked = 0
        for key in tqdm(keys, desc="checking frames", disable=not progress, leave=False):
            size = self._frame_size(key, decode)
            if size is None:
                continue
            checked += 1
            kp = self.frame_keypoints(key)
            if kp is not None:
                source = getattr(self, "keypoints_file", None)
                where = f"{self.name}: keypoints of frame {key}" + (
                    f" (keypoints file {source})" if source else "")
                check_keypoints_in_frame(kp, size, where)
        return checked

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
