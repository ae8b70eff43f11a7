r"""The frozen protocol: backbone feature maps computed once, stored on disk, heads trained on them.

A developer of graph heads changes the head, not the backbone. With the backbone
frozen (an ImageNet-pretrained one, DESIGN.md "How stgraph compares models on real
data"), its maps are the same in every epoch and every run, so
:func:`build_feature_cache` runs it once over every frame of a dataset and over
the frame's mirror image and writes the maps as float16 into one memory-mapped
``.npy`` file; :class:`FeatureCache` reads them back without loading the file,
:class:`CachedTrainClips` / :class:`CachedTestClips` cut them into clips as
:class:`~stgraph.data.TrainClipDataset` / :class:`~stgraph.data.TestClipDataset`
cut frames (restricted random sampling and a flip per clip for training; all
frames, unflipped, for test), and :class:`FeatureMapHead` runs any registered
model's ``forward_head`` on them, so the engine's training and evaluation loops
serve both.

Layout of a cache folder::

    manifest.json    settings, shapes, the tracklets of every split (written last)
    maps.npy         float16 (2, F, C, h, w): flip 0 = the frame, 1 = its mirror image
    keypoints.npy    float32 (2, F, 17, 3): keypoints on the resized (and mirrored) frame

The photometric augmentations of the recipe (random erasing, pad + crop) act on
pixels and have no place in a feature cache; only the flip survives, as a
second set of maps.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from stgraph.data.base import VideoReIDDataset
from stgraph.data.sampling import check_last_clip, sample_restricted_random, test_clip_indices
from stgraph.data.seeding import make_generator
from stgraph.data.transforms import load_clip_with_keypoints
from stgraph.models.backbones import backbone_input_norm

__all__ = [
    "CACHE_VERSION",
    "CachedTestClips",
    "CachedTracklet",
    "CachedTrainClips",
    "FeatureCache",
    "FeatureMapHead",
    "build_feature_cache",
    "cache_settings",
    "evaluate_cached",
    "make_cached_train_loader",
]

#: Format version of the cache folder; a cache of another version is refused.
CACHE_VERSION = 1
_MANIFEST, _MAPS, _KEYPOINTS = "manifest.json", "maps.npy", "keypoints.npy"
_SPLITS = ("train", "query", "gallery")


def _abs(path: str | os.PathLike | None) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


def cache_settings(dataset: dict, backbone: str, pretrained: str | None, last_stride: int,
                   height: int, width: int, cut: str = "end") -> dict:
    """The settings a cache is made with, in the form :meth:`FeatureCache.check` compares.

    Paths (the dataset's ``root``, ``split_file``, ``keypoints`` and a ``pretrained``
    file) are made absolute, so a cache made from one folder matches a run from another.

    Args:
        dataset (dict): the dataset config, ``{"name": ..., "root": ..., ...}`` as the
            CLI builds it, with ``protocol`` for a dataset whose lists depend on it (MARS);
            ``split_id`` defaults to 0 when a ``split_file`` is given.
        backbone (str): backbone name (:func:`~stgraph.models.backbones.list_backbones`).
        pretrained (str, optional): ``"imagenet"``, a weights file, or :obj:`None`.
        last_stride (int): the backbone's last stride.
        height, width (int): frame size in pixels after resizing.
        cut (str): where in the backbone the maps are taken
            (:mod:`~stgraph.models.backbones.cut`): ``"end"`` its output (the frozen
            protocol), or a named point inside it, after which the backbone's tail trains
            with the head (the partial protocol). (default: ``"end"``)

    Returns:
        dict with keys ``dataset``, ``backbone``, ``input_norm`` (the backbone's input
        normalisation, :func:`~stgraph.models.backbones.backbone_input_norm`: a cache
        made before EfficientNet-Lite mapped its input is refused), ``pretrained``,
        ``last_stride``, ``height``, ``width``, ``cut``.
    """
    data = {k: (_abs(v) if k in ("root", "split_file", "keypoints") else v)
            for k, v in dataset.items()}
    if data.get("split_file") is not None and data.get("split_id") is None:
        data["split_id"] = 0  # the split datasets' default
    if pretrained not in (None, "imagenet"):
        pretrained = _abs(pretrained)
    return {"dataset": data, "backbone": backbone,
            "input_norm": backbone_input_norm(backbone), "pretrained": pretrained,
            "last_stride": int(last_stride), "height": int(height), "width": int(width),
            "cut": cut}


@dataclass(frozen=True)
class CachedTracklet:
    """A tracklet of a cache: its frames' rows in ``maps.npy``, person id and camera.

    Attributes:
        rows (tuple[int, ...]): row of each frame, in temporal order.
        pid (int): person id (train: 0-based label; query / gallery: the dataset's id).
        camid (int): 0-based camera id.
    """

    rows: tuple[int, ...]
    pid: int
    camid: int


class _FrameImages(Dataset):
    """Single frames of a dataset, resized and normalised, with their keypoints."""

    def __init__(self, dataset: VideoReIDDataset, keys: Sequence[Hashable], height: int,
                 width: int) -> None:
        self.dataset, self.keys, self.height, self.width = dataset, list(keys), height, width

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        clip, kp = load_clip_with_keypoints(self.dataset, [self.keys[i]], self.height,
                                            self.width)
        return clip[0], kp[0]  # (3, H, W), (17, 3)


def build_feature_cache(dataset: VideoReIDDataset, backbone: nn.Module, out: str | os.PathLike,
                        settings: dict, batch_size: int = 32, workers: int = 0,
                        device: str | torch.device = "cpu", progress: bool = True,
                        overwrite: bool = False) -> FeatureCache:
    r"""Run a frozen backbone once over every frame of ``dataset`` and its mirror image.

    Every distinct frame of ``dataset.train``, ``query`` and ``gallery`` is read,
    resized to ``settings["height"] x settings["width"]`` and normalised as
    :func:`~stgraph.data.load_clip` does; the backbone (in eval mode, no
    gradient, channels-last) maps the frame and its left-right mirror image;
    the maps are written as float16 to ``out/maps.npy``, the frames' keypoints
    (mirrored with the flip, :func:`~stgraph.graph.flip_keypoints`) to
    ``out/keypoints.npy``, and the settings, shapes and tracklets to
    ``out/manifest.json``, last: a folder without a manifest is an unfinished
    build and is refused by :class:`FeatureCache`. Memory stays at one batch
    of frames: the maps go straight to the memory-mapped file.

    Args:
        dataset (VideoReIDDataset): the frames.
        backbone (nn.Module): maps ``(N, 3, H, W)`` to ``(N, C, h, w)``, e.g.
            :func:`~stgraph.models.backbones.build_backbone` with ImageNet weights.
        out (str or Path): the cache folder (created).
        settings (dict): :func:`cache_settings` of the run; stored in the manifest.
        batch_size (int): frames per backbone call (each run twice, plain and
            mirrored). (default: :obj:`32`)
        workers (int): ``DataLoader`` worker processes reading frames. (default: :obj:`0`)
        device (str or torch.device): where the backbone runs. (default: ``"cpu"``)
        progress (bool): tqdm progress bar. (default: :obj:`True`)
        overwrite (bool): replace an existing cache in ``out``. (default: :obj:`False`)

    Returns:
        FeatureCache: the new cache, opened.

    Raises:
        FileExistsError: ``out`` holds a cache already and ``overwrite`` is false.
        ValueError: ``batch_size < 1`` or a dataset without frames.
        OSError: a frame cannot be read (the message names it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    if (out / _MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{out} holds a feature cache already; pass overwrite=True "
                              "(stgraph cache --overwrite) to rebuild it")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MANIFEST).unlink(missing_ok=True)
    height, width = settings["height"], settings["width"]
    rows: dict[Hashable, int] = {}
    for split in _SPLITS:
        for t in getattr(dataset, split):
            for key in t.frames:
                rows.setdefault(key, len(rows))
    if not rows:
        raise ValueError(f"{dataset.name} has no frames to cache")
    keys = list(rows)
    cut = settings.get("cut", "end")
    stem = backbone.forward if cut == "end" else (lambda x: backbone.forward_to(x, cut))
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device, memory_format=torch.channels_last)
    t0 = time.perf_counter()
    with torch.inference_mode():
        probe = stem(torch.zeros(1, 3, height, width, device=device))
        shape = (2, len(keys), *probe.shape[1:])  # (2, F, C, h, w)
        maps = np.lib.format.open_memmap(out / _MAPS, mode="w+", dtype=np.float16, shape=shape)
        keypoints = np.zeros((2, len(keys), 17, 3), dtype=np.float32)
        loader = DataLoader(_FrameImages(dataset, keys, height, width), batch_size=batch_size,
                            num_workers=workers)
        start = 0
        from stgraph.graph.keypoints import flip_keypoints

        for x, kp in tqdm(loader, desc="caching feature maps", unit="batch", disable=not progress):
            n = x.size(0)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            f = stem(torch.cat([x, x.flip(-1)])).to(torch.float16).cpu()  # (2n, C, h, w)
            maps[0, start:start + n] = f[:n].numpy()
            maps[1, start:start + n] = f[n:].numpy()
            keypoints[0, start:start + n] = kp.numpy()
            keypoints[1, start:start + n] = flip_keypoints(kp, width).numpy()
            start += n
        maps.flush()
        del maps
    backbone.train(was_training)
    np.save(out / _KEYPOINTS, keypoints)
    manifest = {
        "version": CACHE_VERSION,
        "settings": settings,
        "shape": list(shape),
        "dtype": "float16",
        "num_train_pids": dataset.num_train_pids,
        "seconds": round(time.perf_counter() - t0, 1),
        "splits": {split: [[[rows[k] for k in t.frames], t.pid, t.camid]
                           for t in getattr(dataset, split)] for split in _SPLITS},
    }
    tmp = out / f".{_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, out / _MANIFEST)
    return FeatureCache(out)


class FeatureCache:
    """A feature-map cache written by :func:`build_feature_cache`, opened for reading.

    The maps stay on disk: :meth:`read` reads a clip's frames with positioned reads,
    so a process's resident memory does not grow with the cache (the kernel's page
    cache keeps what fits in memory). The file is opened lazily in each process, so a
    ``DataLoader`` worker opens its own.

    Args:
        root (str or Path): the cache folder.

    Attributes:
        root (Path): the folder.
        settings (dict): what the cache was made with (:func:`cache_settings`).
        shape (tuple): ``(2, F, C, h, w)`` of ``maps.npy``.
        num_train_pids (int): training identities.
        train, query, gallery (list[CachedTracklet]): the splits.
        seconds (float): how long the build took.

    Raises:
        FileNotFoundError: no manifest in ``root`` (not a cache, or a build that did
            not finish), or a missing data file.
        ValueError: a cache of another format version, or a ``maps.npy`` whose shape
            or dtype differs from the manifest's.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        path = self.root / _MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} is not a feature cache (no {_MANIFEST}; an "
                                    "unfinished build leaves none): run stgraph cache")
        manifest = json.loads(path.read_text())
        if manifest.get("version") != CACHE_VERSION:
            raise ValueError(f"{self.root} is a feature cache of format version "
                             f"{manifest.get('version')}, this stgraph reads {CACHE_VERSION}: "
                             "rebuild it with stgraph cache")
        self.settings = manifest["settings"]
        self.shape = tuple(manifest["shape"])
        self.num_train_pids = int(manifest["num_train_pids"])
        self.seconds = float(manifest["seconds"])
        for split in _SPLITS:
            setattr(self, split, [CachedTracklet(tuple(r), int(p), int(c))
                                  for r, p, c in manifest["splits"][split]])
        for name in (_MAPS, _KEYPOINTS):
            if not (self.root / name).is_file():
                raise FileNotFoundError(f"feature cache {self.root} lacks {name}")
        with open(self.root / _MAPS, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self._offset = f.tell()  # bytes before the first map
        if tuple(shape) != self.shape or dtype != np.float16 or fortran:
            raise ValueError(f"{self.root / _MAPS} holds {tuple(shape)} {dtype}, the manifest "
                             f"says {self.shape} float16: rebuild the cache")
        self._frame_bytes = int(np.prod(self.shape[2:])) * 2
        self._fd: int | None = None
        self._keypoints = np.load(self.root / _KEYPOINTS)  # (2, F, 17, 3), small

    @property
    def maps(self) -> np.ndarray:
        """All maps as a read-only ``(2, F, C, h, w)`` float16 memory map, for inspection.

        Training and evaluation read through :meth:`read` instead, whose positioned reads
        leave the pages in the kernel's page cache, not in the process's resident set.
        """
        return np.load(self.root / _MAPS, mmap_mode="r")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"] = None  # each process opens its own file descriptor
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @property
    def cut(self) -> str:
        """Where in the backbone the maps were taken (``"end"``: its output; a cache made
        before cuts existed is one)."""
        return self.settings.get("cut", "end")

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames in pixels."""
        return self.settings["height"], self.settings["width"]

    @property
    def feature_size(self) -> tuple[int, int]:
        """``(h, w)`` of the maps."""
        return self.shape[-2], self.shape[-1]

    def check(self, settings: dict) -> None:
        """Refuse a run whose settings differ from the cache's.

        Args:
            settings (dict): :func:`cache_settings` of the run.

        Raises:
            ValueError: the message names every setting that differs, with both values.
        """
        diffs = []
        mine = {**self.settings, "cut": self.cut}
        for key in sorted(set(settings) | set(mine)):
            ours, theirs = mine.get(key), settings.get(key)
            if isinstance(ours, dict) and isinstance(theirs, dict):
                diffs += [f"{key}.{k}: cache {ours.get(k)!r}, run {theirs.get(k)!r}"
                          for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
            elif ours != theirs:
                diffs.append(f"{key}: cache {ours!r}, run {theirs!r}")
        if diffs:
            raise ValueError(f"feature cache {self.root} was made with other settings than "
                             f"this run asks for: {'; '.join(diffs)}. Pass the cache's "
                             "settings, or build a new cache with stgraph cache")

    def read(self, rows: Sequence[int], flip: bool = False) -> tuple[Tensor, Tensor]:
        """Maps and keypoints of frames ``rows`` (of the mirror images with ``flip``).

        Each map is one positioned read (``os.preadv``) of its bytes in ``maps.npy``:
        memory is the clip, whatever the size of the cache.

        Returns:
            ``(maps, keypoints)``: :math:`(T, C, h, w)` float32 and :math:`(T, 17, 3)`
            float32 (pixels of the cached frame size).

        Raises:
            IndexError: a row outside ``[0, F)``.
        """
        num = self.shape[1]
        plane = int(bool(flip))
        if self._fd is None:
            self._fd = os.open(self.root / _MAPS, os.O_RDONLY)
        out = np.empty((len(rows), *self.shape[2:]), dtype=np.float16)
        for i, r in enumerate(rows):
            if not 0 <= r < num:
                raise IndexError(f"frame row {r} out of range [0, {num}) in {self.root}")
            offset = self._offset + (plane * num + int(r)) * self._frame_bytes
            if os.preadv(self._fd, [memoryview(out[i]).cast("B")], offset) != self._frame_bytes:
                raise OSError(f"{self.root / _MAPS} is truncated: rebuild the cache")
        keypoints = self._keypoints[plane][np.asarray(rows, dtype=np.int64)]
        return torch.from_numpy(out).float(), torch.from_numpy(keypoints)

    def __repr__(self) -> str:
        s = self.settings
        return (f"FeatureCache({str(self.root)!r}, {s['dataset'].get('name')}, {s['backbone']}, "
                f"{s['height']}x{s['width']}, maps {self.shape})")


class CachedTrainClips(Dataset):
    r"""One random clip per training tracklet of a :class:`FeatureCache`, as feature maps.

    The cached twin of :class:`~stgraph.data.TrainClipDataset`: frames by
    :func:`~stgraph.data.sample_restricted_random`, the mirrored maps with
    probability 0.5 when ``flip``, all randomness from a generator seeded from
    ``(seed, epoch, i)``.

    Args:
        cache (FeatureCache): the maps.
        seq_len (int): clip length :math:`T`.
        seed (int): base seed. (default: :obj:`0`)
        flip (bool): random flip of the whole clip. (default: :obj:`True`)
        keypoints (bool): also return the clip's keypoints. (default: :obj:`False`)

    Shapes:
        - **output:** ``dict(clip=(T, C, h, w) float32, pid, camid, index)``, plus
          ``keypoints=(T, 17, 3)`` with ``keypoints``; ``clip`` holds maps, under the
          name of the frames so the engine's loops serve both.

    Raises:
        ValueError: ``seq_len < 1``.
    """

    def __init__(self, cache: FeatureCache, seq_len: int, seed: int = 0, flip: bool = True,
                 keypoints: bool = False) -> None:
        if int(seq_len) < 1:
            raise ValueError(f"CachedTrainClips: seq_len must be >= 1, got {seq_len}")
        self.cache, self.seq_len, self.seed = cache, int(seq_len), int(seed)
        self.flip, self.keypoints, self.epoch = bool(flip), bool(keypoints), 0

    @property
    def pids(self) -> list[int]:
        """The pid of every item, for :class:`~stgraph.data.PKSampler`."""
        return [t.pid for t in self.cache.train]

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of epoch ``epoch`` (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cache.train)

    def __getitem__(self, i: int) -> dict:
        t = self.cache.train[i]
        gen = make_generator(self.seed, self.epoch, int(i))
        idx = sample_restricted_random(len(t.rows), self.seq_len, gen)
        flip = self.flip and bool(torch.rand((), generator=gen) < 0.5)
        maps, kp = self.cache.read([t.rows[j] for j in idx.tolist()], flip)
        item = {"clip": maps}
        if self.keypoints:
            item["keypoints"] = kp
        item.update(pid=t.pid, camid=t.camid, index=int(i))
        return item


class CachedTestClips(Dataset):
    r"""Every frame of the given cached tracklets as consecutive clips of maps (no flip).

    The cached twin of :class:`~stgraph.data.TestClipDataset`
    (:func:`~stgraph.data.test_clip_indices`: the last clip is the last ``seq_len``
    frames, or with ``last_clip="pad"`` the remaining frames padded with the last).

    Args:
        cache (FeatureCache): the maps.
        tracklets (list[CachedTracklet]): e.g. ``cache.query``.
        seq_len (int): clip length :math:`T`.
        keypoints (bool): also return keypoints. (default: :obj:`False`)
        last_clip (str): ``"overlap"`` or ``"pad"``. (default: ``"overlap"``)

    Attributes:
        num_tracklets (int), clip_tracklet (LongTensor): as in ``TestClipDataset``.

    Shapes:
        - **output:** ``dict(clip=(T, C, h, w) float32, tracklet=int)``, plus
          ``keypoints=(T, 17, 3)``.

    Raises:
        ValueError: ``seq_len < 1``, a tracklet without frames or an unknown ``last_clip``.
    """

    __test__ = False

    def __init__(self, cache: FeatureCache, tracklets: Sequence[CachedTracklet], seq_len: int,
                 keypoints: bool = False, last_clip: str = "overlap") -> None:
        if int(seq_len) < 1:
            raise ValueError(f"CachedTestClips: seq_len must be >= 1, got {seq_len}")
        check_last_clip(last_clip, "CachedTestClips")
        self.cache, self.keypoints = cache, bool(keypoints)
        self.clips: list[tuple[int, list[int]]] = []
        for n, t in enumerate(tracklets):
            if not t.rows:
                raise ValueError(f"CachedTestClips: tracklets[{n}] has no frames")
            for idx in test_clip_indices(len(t.rows), seq_len, last_clip).tolist():
                self.clips.append((n, [t.rows[j] for j in idx]))
        self.num_tracklets = len(tracklets)
        self.clip_tracklet = torch.tensor([n for n, _ in self.clips], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, j: int) -> dict:
        n, rows = self.clips[j]
        maps, kp = self.cache.read(rows)
        item = {"clip": maps, "tracklet": n}
        if self.keypoints:
            item["keypoints"] = kp
        return item


class FeatureMapHead(nn.Module):
    """A model's head as a module that takes cached feature maps where the model takes clips.

    ``FeatureMapHead(model, image_size)(maps, **inputs)`` is
    ``model.forward_head(maps)``; for a model that takes keypoints (CTL) the
    keypoints (in pixels of the ``image_size`` frames) become heatmaps on the
    maps' grid first (``model.heatmaps``). The model, backbone included, is a
    submodule, so its ``state_dict`` (under ``model.``) and a checkpoint of
    ``head.model`` are those of the full model.

    With ``cut="end"`` (maps of the backbone's output: the frozen protocol) the backbone
    is frozen (``requires_grad=False``) and never run. With a cut inside the backbone
    (the partial protocol, :mod:`~stgraph.models.backbones.cut`) the maps are those at
    the cut: the backbone's tail (``backbone.forward_from``) runs on them first and trains
    with the head (in train mode its batch norms update); the part before the cut is
    frozen. The optimiser finds the backbone at :attr:`backbone` (its
    ``--backbone-lr-mult`` group).

    Args:
        model (nn.Module): a registered model (``forward_head``, ``backbone``).
        image_size ((int, int)): frame height and width in pixels of the cache.
        cut (str): where the maps were taken (:attr:`FeatureCache.cut`). (default: ``"end"``)

    Raises:
        ValueError: a ``cut`` the backbone does not have.

    Shapes:
        - **input:** maps :math:`(B, T, C, h, w)`; optional ``keypoints`` :math:`(B, T, 17, 3)`
        - **output:** the model's output dict.
    """

    def __init__(self, model: nn.Module, image_size: tuple[int, int], cut: str = "end") -> None:
        super().__init__()
        self.model = model
        self.image_size = tuple(int(s) for s in image_size)
        self.input_keys = tuple(getattr(model, "input_keys", ()))
        self.cut = cut
        tail = set()
        if cut != "end":
            if not hasattr(model.backbone, "check_cut"):
                raise ValueError(f"backbone {type(model.backbone).__name__} has no cut points; "
                                 "use a cache made at cut 'end'")
            model.backbone.check_cut(cut)
            tail = {id(p) for p in model.backbone.tail_parameters(cut)}
        for p in model.backbone.parameters():
            p.requires_grad_(id(p) in tail)

    @property
    def backbone(self) -> nn.Module:
        """The model's backbone (for :func:`~stgraph.engine.build_optimizer`'s groups)."""
        return self.model.backbone

    def forward(self, maps: Tensor, keypoints: Tensor | None = None):
        if maps.dim() != 5:
            raise ValueError(f"expected feature maps (B, T, C, h, w), got {tuple(maps.shape)}")
        if self.cut != "end":
            B, T = maps.shape[:2]
            out = self.model.backbone.forward_from(maps.flatten(0, 1), self.cut)
            maps = out.reshape(B, T, *out.shape[1:])
        if "keypoints" in self.input_keys:
            B, T = maps.shape[:2]
            heatmaps = self.model.heatmaps(keypoints, B, T, self.image_size,
                                           tuple(maps.shape[-2:]), maps.device, maps.dtype)
            return self.model.forward_head(maps, heatmaps)
        return self.model.forward_head(maps)


def make_cached_train_loader(cache: FeatureCache, seq_len: int, batch_ids: int,
                             batch_instances: int, seed: int = 0, workers: int = 0,
                             keypoints: bool = False, flip: bool = True,
                             num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """A PK-sampled loader of :class:`CachedTrainClips`, the cached twin of
    :func:`stgraph.engine.make_train_loader` (same sampler, same batch layout, the same
    share of each batch per process with ``num_replicas`` / ``rank``)."""
    from stgraph.data.samplers import PKSampler

    clips = CachedTrainClips(cache, seq_len, seed=seed, flip=flip, keypoints=keypoints)
    sampler = PKSampler(clips.pids, batch_ids, batch_instances, seed=seed,
                        num_replicas=num_replicas, rank=rank)
    return DataLoader(clips, batch_size=sampler.share, sampler=sampler,
                      num_workers=workers, drop_last=True)


def evaluate_cached(head: FeatureMapHead, cache: FeatureCache, seq_len: int,
                    batch_size: int = 32, device: str | torch.device = "cpu",
                    metric: str = "cosine", pool: str = "mean", workers: int = 0,
                    progress: bool = True, ranks: Sequence[int] = (1, 5, 10, 20),
                    protocol: str = "torchreid", rerank: bool = False,
                    last_clip: str = "overlap") -> dict:
    """Query/gallery evaluation from cached maps: :func:`stgraph.eval.evaluate` on a cache.

    Every frame of every query and gallery tracklet, unflipped, in consecutive clips;
    clip embeddings pooled per tracklet by ``pool``; CMC and mAP by
    :func:`stgraph.eval.rank_features`. Arguments and result as ``evaluate``.
    """
    from stgraph.eval import extract_features, rank_features

    keypoints = "keypoints" in head.input_keys
    feats = []
    for name in ("query", "gallery"):
        clips = CachedTestClips(cache, getattr(cache, name), seq_len, keypoints=keypoints,
                                last_clip=last_clip)
        loader = DataLoader(clips, batch_size=batch_size, shuffle=False, num_workers=workers)
        feats.append(extract_features(head, loader, clips.num_tracklets, device=device,
                                      pool=pool, progress=progress))
    metrics = rank_features(*feats, cache.query, cache.gallery, metric=metric, ranks=ranks,
                            protocol=protocol, rerank=rerank)
    return {**metrics, "last_clip": last_clip}
