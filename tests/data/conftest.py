"""Fixtures of the stgraph.data tests: a tiny PRID-2011 tree builder and a frame-coding dataset.

The project runs pytest with ``--import-mode=importlib``, so test modules cannot import
helpers from this directory; they get them through the fixtures at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stgraph.data import IMAGENET_MEAN, IMAGENET_STD, Tracklet, VideoReIDDataset

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_frame(path: Path, value: int, size: tuple[int, int] = (4, 8)) -> None:
    """Write a constant RGB image ``(value, value // 2, 255 - value)`` of PIL size (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty((size[1], size[0], 3), dtype=np.uint8)
    arr[...] = (value, value // 2, 255 - value)
    Image.fromarray(arr).save(path)


def make_prid_tree(
    root: Path,
    lengths_a: dict[int, int],
    lengths_b: dict[int, int],
    ext: str = ".png",
) -> Path:
    """Build ``root/multi_shot/cam_{a,b}/person_NNNN/KKKK<ext>``; frame k of person p has value
    ``10 * p + k`` (cam_a) or ``10 * p + k + 100`` (cam_b)."""
    for cam, lengths, offset in (("cam_a", lengths_a, 0), ("cam_b", lengths_b, 100)):
        (root / "multi_shot" / cam).mkdir(parents=True, exist_ok=True)
        for person, n in lengths.items():
            # written in reverse so that directory order is not name order
            for k in reversed(range(1, n + 1)):
                path = root / "multi_shot" / cam / f"person_{person:04d}" / f"{k:04d}{ext}"
                write_frame(path, 10 * person + k + offset)
    return root


class FrameCodeDataset(VideoReIDDataset):
    """Frames are ints; frame ``k`` is a constant 6 x 4 image of grey level ``k``.

    Counts reads in ``self.reads``, so tests can see which frames a clip used.
    """

    name = "frame_code"

    def __init__(self, lengths: list[int], pids: list[int] | None = None, camids=None) -> None:
        pids = list(range(len(lengths))) if pids is None else pids
        camids = [i % 2 for i in range(len(lengths))] if camids is None else camids
        train, start = [], 0
        for n, pid, camid in zip(lengths, pids, camids, strict=True):
            train.append(Tracklet(tuple(range(start, start + n)), pid, camid))
            start += n
        super().__init__(train, [], [])
        self.reads = 0

    def read_frame(self, key: int) -> Image.Image:
        self.reads += 1
        return Image.new("RGB", (4, 6), (key % 256, key % 256, key % 256))


def decode_frames(clip) -> list[int]:
    """Invert ``load_clip`` on FrameCodeDataset frames: the grey level of every frame."""
    x = clip[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # (T, H, W) in [0, 1]
    return [int(v) for v in (x.mean(dim=(1, 2)) * 255).round().tolist()]


@pytest.fixture
def real_data() -> Path:
    """``../shared/data`` beside the checkout; skips the test when it is absent."""
    if not (REAL_DATA / "cuhk03-pair1" / "multi_shot").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def frame_code():
    """``(FrameCodeDataset, decode_frames)``."""
    return FrameCodeDataset, decode_frames


@pytest.fixture
def prid_tree():
    """``(make_prid_tree, write_frame)``."""
    return make_prid_tree, write_frame
