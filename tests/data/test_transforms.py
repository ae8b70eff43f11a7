import numpy as np
import pytest
import torch
from PIL import Image

from stgraph.data import IMAGENET_MEAN, IMAGENET_STD, Tracklet, VideoReIDDataset, load_clip


def files_dataset(paths):
    return VideoReIDDataset([Tracklet(tuple(map(str, paths)), 0, 0)], [], [])


def test_normalisation_values_by_hand(tmp_path):
    arr = np.array([[[0, 128, 255], [255, 0, 51]]], dtype=np.uint8)  # 1 x 2 RGB
    Image.fromarray(arr).save(tmp_path / "a.png")
    ds = files_dataset([tmp_path / "a.png"])
    clip = load_clip(ds, [str(tmp_path / "a.png")], height=1, width=2)
    assert clip.shape == (1, 3, 1, 2) and clip.dtype == torch.float32
    for c in range(3):
        for x in range(2):
            expected = (arr[0, x, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
            assert clip[0, c, 0, x].item() == pytest.approx(expected, abs=1e-6)
    # red channel of a black pixel: (0 - 0.485) / 0.229
    assert clip[0, 0, 0, 0].item() == pytest.approx(-2.1179039, abs=1e-6)


def test_resize_is_bilinear_to_height_width(tmp_path):
    arr = np.zeros((10, 4, 3), dtype=np.uint8)
    arr[:, 2:] = 200  # left half black, right half grey
    Image.fromarray(arr).save(tmp_path / "b.png")
    ds = files_dataset([tmp_path / "b.png"])
    clip = load_clip(ds, [str(tmp_path / "b.png")] * 3, height=20, width=8)
    assert clip.shape == (3, 3, 20, 8)
    raw = clip[0, 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1]  # green channel back in [0, 1]
    assert raw[:, 0].max() < 0.01 and raw[:, -1].min() > 200 / 255 - 0.01
    # bilinear: intermediate values at the edge, monotone across it
    assert ((raw[0, 1:] - raw[0, :-1]) >= -1e-6).all() and 0.05 < raw[0, 3] < 0.75


def test_flip_mirrors_every_frame(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "c.png")
    ds = files_dataset([tmp_path / "c.png"])
    keys = [str(tmp_path / "c.png")] * 2
    plain = load_clip(ds, keys, 6, 5)
    flipped = load_clip(ds, keys, 6, 5, flip=True)
    assert torch.equal(flipped, plain.flip(-1))
    assert not torch.equal(flipped, plain)


def test_frames_keep_their_order_and_repeats_are_read_once(frame_code):
    FrameCodeDataset, decode_frames = frame_code
    ds = FrameCodeDataset([10])
    clip = load_clip(ds, [3, 3, 7, 1, 7], 6, 4)
    assert decode_frames(clip) == [3, 3, 7, 1, 7]
    assert ds.reads == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"keys": []}, "keys is empty"),
    ({"height": 0}, "height and width must be >= 1"),
])  # fmt: skip
def test_bad_arguments_raise(kwargs, match, frame_code):
    FrameCodeDataset, _ = frame_code
    args = {"keys": [0], "height": 4, "width": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        load_clip(FrameCodeDataset([2]), **args)
