"""PyTorch ``Dataset`` s of clips: one random clip per training tracklet, all clips at test."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from stgraph.data.base import Tracklet, VideoReIDDataset
from stgraph.data.sampling import check_last_clip, sample_restricted_random, test_clip_indices
from stgraph.data.seeding import make_generator
from stgraph.data.transforms import ClipAugment, load_clip, load_clip_with_keypoints

__all__ = ["TestClipDataset", "TrainClipDataset"]


def _check_size(cls: str, seq_len: int, height: int, width: int) -> None:
    for name, value in (("seq_len", seq_len), ("height", height), ("width", width)):
        if int(value) < 1:
            raise ValueError(f"{cls}: {name} must be >= 1, got {value}")


class TrainClipDataset(Dataset):
    r"""One randomly sampled clip per training tracklet of a :class:`VideoReIDDataset`.

    Item :math:`i` is a clip of ``dataset.train[i]``: ``seq_len`` frames chosen
    by :func:`~stgraph.data.sampling.sample_restricted_random`, resized and
    normalised by :func:`~stgraph.data.transforms.load_clip`, then augmented
    as the Bag-of-Tricks recipe does (Luo et al., CVPRW 2019; see
    :class:`~stgraph.data.transforms.ClipAugment`): mirrored with probability
    0.5 (``flip``), zero-padded by ``pad`` pixels and randomly cropped back to
    ``(height, width)``, and randomly erased with probability ``erasing``, with
    one draw for the whole clip; keypoints move with the flip and the crop.
    All of its randomness comes from a ``torch.Generator`` seeded from
    ``(seed, epoch, i)``, so a run is reproducible with any number of
    ``DataLoader`` workers and any fetch order. With ``flip=False, pad=0,
    erasing=0`` an item is exactly ``load_clip`` of its sampled frames.

    Call :meth:`set_epoch` before each epoch. ``DataLoader`` workers receive a
    copy of the dataset when an epoch's iterator starts, so this works with the
    default ``persistent_workers=False``; persistent workers would keep the
    epoch they started with.

    Args:
        dataset (VideoReIDDataset): the source of ``train`` tracklets.
        seq_len (int): clip length :math:`T`.
        height (int): frame height :math:`H` after resizing.
        width (int): frame width :math:`W` after resizing.
        seed (int, optional): base seed. (default: ``0``)
        flip (bool, optional): random horizontal flip of the clip with
            :math:`p = 0.5`. (default: ``True``)
        keypoints (bool, optional): also return each frame's keypoints on the
            resized (and flipped, cropped) frames, see
            :func:`~stgraph.data.transforms.load_clip_with_keypoints`; for
            models that take keypoints, e.g. CTL. (default: ``False``)
        pad (int, optional): zero padding on each side before the random crop,
            in pixels; ``0`` turns padding and cropping off. (default: ``10``)
        erasing (float, optional): probability of random erasing (area
            0.02-0.4 of the frame, aspect 0.3-3.3, filled with the ImageNet
            mean); ``0`` turns it off. (default: ``0.5``)

    Shapes:
        - **output:** ``dict(clip=(T, 3, H, W) float32, pid=int, camid=int,
          index=int)``, plus ``keypoints=(T, 17, 3)`` float32 with ``keypoints``;
          the default collate stacks ``clip`` to :math:`(B, T, 3, H, W)` and
          the ints to :math:`(B,)` tensors.

    Raises:
        ValueError: if ``seq_len``, ``height`` or ``width`` < 1, ``pad`` < 0 or
            ``erasing`` outside :math:`[0, 1]`.
    """

    def __init__(
        self,
        dataset: VideoReIDDataset,
        seq_len: int,
        height: int,
        width: int,
        seed: int = 0,
        flip: bool = True,
        keypoints: bool = False,
        pad: int = 10,
        erasing: float = 0.5,
    ) -> None:
        _check_size(self.__class__.__name__, seq_len, height, width)
        self.dataset = dataset
        self.seq_len = int(seq_len)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        self.flip = bool(flip)
        self.keypoints = bool(keypoints)
        self.augment = ClipAugment(flip=self.flip, pad=pad, erasing=erasing)
        self.epoch = 0

    @property
    def pids(self) -> list[int]:
        """list[int]: the pid of every item, e.g. for :class:`~stgraph.data.PKSampler`."""
        return [t.pid for t in self.dataset.train]

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of epoch ``epoch`` (call before each epoch).

        Args:
            epoch (int): the epoch number.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset.train)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.__class__.__name__}: index {i} out of range [0, {len(self)})")
        i = int(i) % len(self)
        tracklet = self.dataset.train[i]
        gen = make_generator(self.seed, self.epoch, i)
        idx = sample_restricted_random(len(tracklet.frames), self.seq_len, gen)
        keys = [tracklet.frames[j] for j in idx.tolist()]
        if self.keypoints:
            clip, kp = load_clip_with_keypoints(self.dataset, keys, self.height, self.width)
        else:
            clip, kp = load_clip(self.dataset, keys, self.height, self.width), None
        clip, kp = self.augment(clip, kp, gen)  # the same draws with or without keypoints
        item = {"clip": clip}
        if kp is not None:
            item["keypoints"] = kp  # beside the clip, as before the augmentations
        item.update(pid=tracklet.pid, camid=tracklet.camid, index=i)
        return item

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.dataset.name}, len={len(self)}, "
            f"seq_len={self.seq_len}, size=({self.height}, {self.width}), seed={self.seed})"
        )


class TestClipDataset(Dataset):
    r"""Every frame of the given tracklets, as a flat list of consecutive clips.

    Tracklet :math:`n` with :math:`N_n` frames contributes
    :math:`\lceil N_n / T \rceil` clips (rows of
    :func:`~stgraph.data.sampling.test_clip_indices`; where :math:`T` does not divide
    :math:`N_n`, the last one is the tracklet's last :math:`T` frames, or with
    ``last_clip="pad"`` its remaining frames padded by repeating the last). Iterating
    in batches keeps memory at one batch of clips however long the tracklets are;
    average the clip features per tracklet with :attr:`clip_tracklet`, e.g.
    ``feats.new_zeros(n, D).index_add_(0, clip_tracklet, clip_feats)``
    divided by ``clip_tracklet.bincount()``.

    Args:
        dataset (VideoReIDDataset): reads the frames.
        tracklets (list[Tracklet]): the tracklets to cover, e.g. ``dataset.query``.
        seq_len (int): clip length :math:`T`.
        height (int): frame height :math:`H` after resizing.
        width (int): frame width :math:`W` after resizing.
        keypoints (bool, optional): also return each frame's keypoints, as
            :class:`TrainClipDataset` does. (default: ``False``)
        last_clip (str, optional): ``"overlap"`` or ``"pad"``
            (:func:`~stgraph.data.sampling.test_clip_indices`). (default: ``"overlap"``)

    Attributes:
        num_tracklets (int): ``len(tracklets)``.
        clip_tracklet (LongTensor): ``(num_clips,)``, the tracklet of each item.
        pids (LongTensor): ``(num_tracklets,)``, the pid of each tracklet.
        camids (LongTensor): ``(num_tracklets,)``, the camera of each tracklet.

    Shapes:
        - **output:** ``dict(clip=(T, 3, H, W) float32, tracklet=int)``, where
          ``tracklet`` indexes ``tracklets``; plus ``keypoints=(T, 17, 3)``
          float32 with ``keypoints``.

    Raises:
        ValueError: if ``seq_len``, ``height`` or ``width`` < 1, a tracklet
            has no frames, or ``last_clip`` is not ``"overlap"`` or ``"pad"``.
    """

    # Not a test, despite its name: keep pytest from collecting it where it is imported.
    __test__ = False

    def __init__(
        self,
        dataset: VideoReIDDataset,
        tracklets: Sequence[Tracklet],
        seq_len: int,
        height: int,
        width: int,
        keypoints: bool = False,
        last_clip: str = "overlap",
    ) -> None:
        _check_size(self.__class__.__name__, seq_len, height, width)
        check_last_clip(last_clip, self.__class__.__name__)
        self.last_clip = last_clip
        self.dataset = dataset
        self.keypoints = bool(keypoints)
        self.tracklets = list(tracklets)
        self.seq_len = int(seq_len)
        self.height = int(height)
        self.width = int(width)
        lengths = torch.tensor([len(t.frames) for t in self.tracklets], dtype=torch.long)
        if (lengths < 1).any():
            n = int((lengths < 1).nonzero()[0])
            raise ValueError(
                f"{self.__class__.__name__}: tracklets[{n}] has no frames; drop empty tracklets"
            )
        self.num_tracklets = len(self.tracklets)
        num_clips = (lengths + self.seq_len - 1) // self.seq_len  # (num_tracklets,)
        self.clip_tracklet = torch.repeat_interleave(
            torch.arange(self.num_tracklets), num_clips
        )  # (num_clips,)
        first_clip = torch.cumsum(num_clips, 0) - num_clips  # (num_tracklets,)
        self._clip_in_tracklet = (
            torch.arange(len(self.clip_tracklet)) - first_clip[self.clip_tracklet]
        )  # (num_clips,)
        self.pids = torch.tensor([t.pid for t in self.tracklets], dtype=torch.long)
        self.camids = torch.tensor([t.camid for t in self.tracklets], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.clip_tracklet)

    def __getitem__(self, j: int) -> dict:
        if not -len(self) <= j < len(self):
            raise IndexError(f"{self.__class__.__name__}: index {j} out of range [0, {len(self)})")
        j = int(j) % len(self)
        n = int(self.clip_tracklet[j])
        frames = self.tracklets[n].frames
        rows = test_clip_indices(len(frames), self.seq_len, self.last_clip)
        keys = [frames[k] for k in rows[int(self._clip_in_tracklet[j])].tolist()]
        if self.keypoints:
            clip, kp = load_clip_with_keypoints(self.dataset, keys, self.height, self.width)
            return {"clip": clip, "keypoints": kp, "tracklet": n}
        return {"clip": load_clip(self.dataset, keys, self.height, self.width), "tracklet": n}

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.dataset.name}, tracklets={self.num_tracklets}, "
            f"clips={len(self)}, seq_len={self.seq_len}, size=({self.height}, {self.width}), "
            f"last_clip={self.last_clip!r})"
        )
