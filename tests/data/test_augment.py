"""Bag-of-Tricks clip augmentations: one draw per clip, keypoints that stay on their pixels,
erasing by the recipe's numbers, everything off = load_clip, reproducible per (seed, epoch, index).
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from stgraph.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SyntheticReID,
    Tracklet,
    TrainClipDataset,
    VideoReIDDataset,
    load_clip,
    load_clip_with_keypoints,
    make_generator,
    sample_restricted_random,
)
from stgraph.data.transforms import (
    ClipAugment,
    erase_clip,
    pad_crop_clip,
    random_crop_params,
    random_erasing_params,
)

H, W = 32, 16
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def raw(clip):
    """Undo the normalisation: RGB in [0, 1]."""
    return clip * STD + MEAN


class MarkedDataset(VideoReIDDataset):
    """Black H x W frames with three marked pixels that carry keypoints at their centres:
    white = nose (0, its own mirror), red = left shoulder (5), green = right shoulder (6)."""

    name = "marked"

    def __init__(self, num_tracklets=2, length=4):
        train = [Tracklet(tuple(range(n * length, (n + 1) * length)), n, n % 2)
                 for n in range(num_tracklets)]
        super().__init__(train, [], [])

    @staticmethod
    def marks(key):
        r, c = 3 + (7 * key) % 26, 1 + (5 * key) % 14
        return {"white": (r, c), "red": ((r + 9) % H, (c + 4) % W),
                "green": ((r + 17) % H, (c + 9) % W)}

    def read_frame(self, key):
        arr = np.zeros((H, W, 3), dtype=np.uint8)
        colours = {"white": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0)}
        for name, (r, c) in self.marks(key).items():
            arr[r, c] = colours[name]
        return Image.fromarray(arr)

    def frame_keypoints(self, key):
        kp = np.zeros((17, 3), dtype=np.float32)
        kp[:, :2] = (W / 2, H / 2)
        kp[:, 2] = 1.0
        m = self.marks(key)
        for k, name in ((0, "white"), (5, "red"), (6, "green")):
            kp[k, :2] = (m[name][1] + 0.5, m[name][0] + 0.5)  # (x, y) of the pixel centre
        return kp


def colour_masks(frame):
    """Boolean (H, W) masks of the white, red and green pixels of one normalised frame."""
    r, g, b = raw(frame[None])[0] > 0.5
    return {"white": r & g & b, "red": r & ~g, "green": g & ~r}


def assert_on_mark(mask, xy):
    """The keypoint is within 0.5 px of the centre of the marked pixel, or both left the frame."""
    x, y = xy.tolist()
    inside = 0 <= x < W and 0 <= y < H
    hits = mask.nonzero().tolist()
    if not inside:
        assert hits == [], f"keypoint {(x, y)} left the frame but its pixel is at {hits}"
        return False
    assert len(hits) == 1, f"keypoint {(x, y)} in the frame, marked pixels at {hits}"
    (row, col), = hits
    assert abs(x - (col + 0.5)) <= 0.5 and abs(y - (row + 0.5)) <= 0.5, (x, y, row, col)
    return True


def test_keypoints_stay_on_their_pixels_through_flip_and_crop():
    data = MarkedDataset()
    inside = outside = 0
    flips = set()
    for seed in range(40):
        train = TrainClipDataset(data, 3, H, W, seed=seed, keypoints=True, erasing=0.0)
        for i in range(len(train)):
            item = train[i]
            gen = make_generator(seed, 0, i)  # the documented order: frames, then the flip coin
            sample_restricted_random(len(data.train[i].frames), 3, gen)
            flipped = bool(torch.rand((), generator=gen) < 0.5)
            flips.add(flipped)
            # a mirrored frame's left shoulder is the original right shoulder
            owner = {0: "white", 5: "green" if flipped else "red", 6: "red" if flipped else "green"}
            for t in range(3):
                masks = colour_masks(item["clip"][t])
                for k, colour in owner.items():
                    if assert_on_mark(masks[colour], item["keypoints"][t, k, :2]):
                        inside += 1
                    else:
                        outside += 1
    assert flips == {True, False}
    assert inside > 0 and outside > 0  # the crop moved some marks out of the frame


def test_every_frame_of_a_clip_gets_the_same_crop_flip_and_erasing():
    class SameFrame(SyntheticReID):
        def read_frame(self, key):  # every frame is the first one
            return super().read_frame(self.train[0].frames[0])

        def frame_keypoints(self, key):
            return super().frame_keypoints(self.train[0].frames[0])

    data = SameFrame(num_train_ids=4, num_test_ids=1, image_size=(H, W), seed=0)
    plain = load_clip(data, [data.train[0].frames[0]], H, W)[0]
    train = TrainClipDataset(data, 4, H, W, seed=0, keypoints=True, erasing=1.0)
    changed = 0
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            item = train[i]
            clip, kp = item["clip"], item["keypoints"]
            assert torch.equal(clip, clip[:1].expand_as(clip))
            assert torch.equal(kp, kp[:1].expand_as(kp))
            changed += not torch.equal(clip[0], plain)
    assert changed == 3 * len(train)


def _erased_rectangle(out, before):
    """The (top, left, h, w) of the one zero-filled rectangle of ``out``, or None."""
    zero = (out == 0).all(dim=1)  # (T, H, W)
    assert torch.equal(zero, zero[:1].expand_as(zero))  # the same on every frame
    zero = zero[0]
    if not zero.any():
        assert torch.equal(out, before)
        return None
    rows, cols = zero.any(dim=1).nonzero()[:, 0], zero.any(dim=0).nonzero()[:, 0]
    top, left = int(rows[0]), int(cols[0])
    h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert int(zero.sum()) == h * w  # a filled rectangle
    keep = ~zero
    assert torch.equal(out[:, :, keep], before[:, :, keep])  # nothing else touched
    return top, left, h, w


def test_erasing_area_aspect_and_fill_follow_the_recipe():
    height, width = 64, 32
    frame_area = height * width
    white = ((1 - MEAN) / STD).expand(3, 3, height, width).contiguous()  # 3 white frames
    aug = ClipAugment(flip=False, pad=0, erasing=1.0)
    fractions = []
    for s in range(300):
        out, _ = aug(white, None, make_generator(s))
        rect = _erased_rectangle(out, white)
        if rect is None:
            continue
        top, left, h, w = rect
        # h and w are rounded from the drawn sqrt(area * r), sqrt(area / r)
        assert (h - 0.5) * (w - 0.5) <= 0.4 * frame_area
        assert (h + 0.5) * (w + 0.5) >= 0.02 * frame_area
        assert (h - 0.5) / (w + 0.5) <= 3.3 and (h + 0.5) / (w - 0.5) >= 0.3
        erased = raw(out)[0, :, top, left]
        torch.testing.assert_close(erased, torch.tensor(IMAGENET_MEAN))  # the mean colour
        fractions.append(h * w / frame_area)
    assert len(fractions) > 0.8 * 300  # p = 1; a few draws find no fitting rectangle
    assert min(fractions) < 0.06 and max(fractions) > 0.3  # the whole range is used
    coin = ClipAugment(flip=False, pad=0, erasing=0.5)
    erased = sum(_erased_rectangle(coin(white, None, make_generator(s))[0], white) is not None
                 for s in range(300))
    assert 110 < erased < 190


def test_random_erasing_params_inside_the_frame_and_p():
    gen = make_generator(7)
    for _ in range(100):
        rect = random_erasing_params(20, 10, gen, p=1.0)
        if rect is not None:
            top, left, h, w = rect
            assert 0 <= top and top + h <= 20 and 0 <= left and left + w <= 10
            assert h < 20 and w < 10
    assert all(random_erasing_params(20, 10, gen, p=0.0) is None for _ in range(20))


def test_pad_crop_by_hand_moves_pixels_and_keypoints_together():
    clip = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4).expand(2, 3, 3, 4)
    kp = torch.tensor([[[1.5, 0.5, 0.9], [3.5, 2.5, 1.0]]]).expand(2, 2, 3)
    out, kp2 = pad_crop_clip(clip, kp, pad=2, top=3, left=0)  # rows up 1, columns right 2
    black = -MEAN / STD  # zero padding = black before normalisation
    assert torch.equal(out[0, :, 0:2, 2:4], clip[0, :, 1:3, 0:2])
    torch.testing.assert_close(out[:, :, 2:, :], black.expand(2, 3, 1, 4))  # padding rows
    torch.testing.assert_close(out[:, :, :, :2], black.expand(2, 3, 3, 2))  # padding columns
    torch.testing.assert_close(kp2[0], torch.tensor([[3.5, -0.5, 0.9], [5.5, 1.5, 1.0]]))
    # keypoint (1.5, 0.5) sat on input pixel (0, 1), now at output pixel (-1, 3): cropped away;
    # (3.5, 2.5) sat on input pixel (2, 3), now outside on the right (x = 5.5 >= W = 4)
    same, kp_same = pad_crop_clip(clip, kp, pad=2, top=2, left=2)  # the centred crop
    assert torch.equal(same, clip) and torch.equal(kp_same, kp)
    none_out, none_kp = pad_crop_clip(clip, None, pad=2, top=4, left=4)
    assert none_kp is None and torch.equal(none_out[:, :, :1, :2], clip[:, :, 2:, 2:])


def test_crop_offsets_are_uniform_on_0_to_2pad():
    gen = make_generator(3)
    draws = torch.tensor([random_crop_params(2, gen) for _ in range(500)])
    assert draws.min() == 0 and draws.max() == 4
    counts = torch.bincount(draws.flatten(), minlength=5)
    assert (counts > 140).all()  # 1000 draws over 5 values, 200 expected each


def test_everything_off_is_exactly_load_clip():
    data = SyntheticReID(num_train_ids=3, num_test_ids=1, image_size=(H, W), seed=1)
    for keypoints in (False, True):
        train = TrainClipDataset(data, 4, H, W, seed=5, flip=False, pad=0, erasing=0.0,
                                 keypoints=keypoints)
        train.set_epoch(2)
        for i in range(len(train)):
            idx = sample_restricted_random(len(data.train[i].frames), 4, make_generator(5, 2, i))
            keys = [data.train[i].frames[j] for j in idx.tolist()]
            item = train[i]
            if keypoints:
                clip, kp = load_clip_with_keypoints(data, keys, H, W)
                assert torch.equal(item["keypoints"], kp)
            else:
                clip = load_clip(data, keys, H, W)
                assert "keypoints" not in item
            assert torch.equal(item["clip"], clip)


def test_same_seed_epoch_index_gives_the_same_item_and_a_new_epoch_another():
    data = SyntheticReID(num_train_ids=4, num_test_ids=1, image_size=(H, W), seed=0)
    a = TrainClipDataset(data, 4, H, W, seed=1, keypoints=True)
    b = TrainClipDataset(data, 4, H, W, seed=1, keypoints=True)
    first = [a[i] for i in range(len(a))]
    for i, item in enumerate(first):
        again = b[i]
        assert torch.equal(item["clip"], again["clip"])
        assert torch.equal(item["keypoints"], again["keypoints"])
    a.set_epoch(1)
    assert all(not torch.equal(first[i]["clip"], a[i]["clip"]) for i in range(len(a)))
    # the draws do not depend on whether keypoints are returned
    plain = TrainClipDataset(data, 4, H, W, seed=1)
    assert all(torch.equal(first[i]["clip"], plain[i]["clip"]) for i in range(len(a)))


def test_bad_arguments_name_the_argument():
    data = SyntheticReID(num_train_ids=2, num_test_ids=1, image_size=(H, W), seed=0)
    with pytest.raises(ValueError, match="pad must be an int >= 0"):
        TrainClipDataset(data, 4, H, W, pad=-1)
    with pytest.raises(ValueError, match=r"erasing is a probability .* got 1.5"):
        TrainClipDataset(data, 4, H, W, erasing=1.5)
    with pytest.raises(ValueError, match="area must satisfy"):
        ClipAugment(area=(0.4, 0.02))
    with pytest.raises(ValueError, match="area must satisfy"):
        random_erasing_params(10, 10, area=(0.0, 0.4))
    with pytest.raises(ValueError, match="area must satisfy"):
        random_erasing_params(10, 10, area=(0.5, 1.5))
    with pytest.raises(ValueError, match="aspect must satisfy"):
        random_erasing_params(10, 10, aspect=(3.3, 0.3))
    with pytest.raises(ValueError, match="p is a probability"):
        random_erasing_params(10, 10, p=-0.1)
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        random_erasing_params(10, 10, attempts=0)
    with pytest.raises(ValueError, match="pad must be an int >= 0"):
        random_crop_params(-2)
    clip = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"top must be an int in \[0, 2 \* pad\]"):
        pad_crop_clip(clip, None, pad=1, top=3, left=0)
    with pytest.raises(ValueError, match=r"expected a clip of shape \(T, 3, H, W\)"):
        pad_crop_clip(clip[0], None, pad=1, top=0, left=0)
    with pytest.raises(ValueError, match=r"expected keypoints of shape \(T, K, 3\) with T = 2"):
        ClipAugment()(clip, torch.zeros(3, 17, 3))
    with pytest.raises(ValueError, match="not inside the 4 x 4 frame"):
        erase_clip(clip, top=2, left=0, h=3, w=1)
    assert math.isclose(float(erase_clip(clip + 1, 0, 0, 4, 4).abs().sum()), 0.0)
