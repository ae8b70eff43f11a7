"""Embed tracklets with a trained model, outside the training script.

:class:`FeatureExtractor` turns tracklets (frame files, PIL images or tensors) into
re-ID embeddings the way :func:`stgraph.eval.evaluate` does for a dataset's test
tracklets, so the features of a deployed model are those its metrics were measured on:

* every frame of a tracklet, in consecutive clips of ``seq_len`` frames, the last clip
  its last ``seq_len`` frames (``last_clip="overlap"``) or padded by repeating the last
  frame (``"pad"``) (:func:`~stgraph.data.sampling.test_clip_indices`);
* each frame resized to ``height x width`` with PIL's bilinear filter and normalised
  with the ImageNet mean and std (:func:`~stgraph.data.transforms.load_clip`);
* the clip embeddings (the model's ``"embedding"``, eval mode) pooled per tracklet by
  their mean or elementwise max (:func:`~stgraph.eval.extract_features`);
* for a model that takes keypoints (:func:`stgraph.models.base.takes_keypoints`, e.g. CTL):
  each frame's COCO-17 keypoints from a ``(T, 17, 3)`` tensor or a COCO keypoint results
  file, rescaled to the resized frame
  (:func:`~stgraph.data.transforms.load_clip_with_keypoints`), and the prior pose
  (:func:`~stgraph.graph.prior_pose`) for a frame without any.

Example::

    from stgraph.inference import FeatureExtractor

    fx = FeatureExtractor.from_checkpoint("runs/prid-tp/checkpoint.pth")
    f = fx.embed(["t1/0001.png", "t1/0002.png", "t1/0003.png"])   # (D,)
    F = fx.embed_batch([paths_a, paths_b, clip_tensor])             # (3, D)
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from stgraph.checkpoint import load_checkpoint
from stgraph.config import clip_size
from stgraph.data.base import VideoReIDDataset, to_rgb
from stgraph.data.clips import TestClipDataset
from stgraph.data.folders import IMAGE_SUFFIXES
from stgraph.data.sampling import check_last_clip, test_clip_indices
from stgraph.data.transforms import load_clip, load_clip_with_keypoints
from stgraph.eval.features import extract_features
from stgraph.models.base import ranked_by, takes_keypoints

__all__ = ["FeatureExtractor", "IMAGE_SUFFIXES", "list_tracklet_folders", "load_features",
           "save_features"]

#: File name suffixes read as frames (lower case), as the folder datasets do.

_POOLS = ("mean", "max")


def list_tracklet_folders(root: str | os.PathLike) -> list[tuple[str, list[Path]]]:
    """The tracklets of a folder with one sub-folder per tracklet.

    Args:
        root (str or Path): the folder; each sub-folder holding at least one image file
            (:data:`IMAGE_SUFFIXES`) is one tracklet, its frames sorted by file name.

    Returns:
        list of ``(name, frames)``: the sub-folder's name and its frame paths, sorted by
        name. Sub-folders without images are skipped.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no sub-folder of ``root`` holds an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"frames folder not found: {root}")
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        frames = sorted(f for f in sub.iterdir()
                        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if frames:
            out.append((sub.name, frames))
    if not out:
        raise ValueError(f"no tracklet in {root}: expected one sub-folder of "
                         f"{'/'.join(IMAGE_SUFFIXES)} frames per tracklet")
    return out


def _read_image(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)  # as the datasets read frames: 16-bit scaled, not clipped
    except (OSError, ValueError, SyntaxError) as err:
        raise OSError(f"cannot read frame {path}: {err}") from err


class _TrackletFrames:
    """A stand-in for a dataset over the frames of the tracklets being embedded.

    ``read_frame(key)`` / ``frame_keypoints(key)`` with ``key = (n, i)``: frame ``i`` of
    tracklet ``n``, what :func:`~stgraph.data.transforms.load_clip` needs.
    """

    name = "frames"

    def __init__(self, frames: list[list[Any]], keypoints: list[np.ndarray | None],
                 table: Mapping[Hashable, np.ndarray] | None, table_keys: list[list[Any]]):
        self.frames = frames
        self.keypoints = keypoints
        self.table = table
        self.table_keys = table_keys

    def read_frame(self, key: tuple[int, int]) -> Image.Image:
        n, i = key
        frame = self.frames[n][i]
        if isinstance(frame, Image.Image):
            return to_rgb(frame)
        return _read_image(frame)

    def frame_keypoints(self, key: tuple[int, int]) -> np.ndarray | None:
        n, i = key
        kp = self.keypoints[n]
        if kp is not None:
            return kp[i]
        if self.table is not None:
            for k in self.table_keys[n][i]:
                if k in self.table:
                    return self.table[k]
        return None  # load_clip_with_keypoints: the prior pose of the resized frame


class FeatureExtractor:
    r"""Embeddings of tracklets by a model, computed as :func:`stgraph.eval.evaluate` does.

    Args:
        model (nn.Module): a registered stgraph model (or any module mapping clips
            ``(B, T, 3, H, W)``, plus ``keypoints`` ``(B, T, 17, 3)`` when its
            ``input_keys`` name them, to a dict with ``"embedding"`` ``(B, D)``).
            It is put in eval mode; it should already be on ``device``.
        seq_len (int): clip length :math:`T` in frames (keyword-only, as ``height`` and
            ``width``: the clip size in stgraph's one order, ``seq_len, height, width``).
        height (int): frame height the model takes, in pixels.
        width (int): frame width the model takes, in pixels.
        pool (str): pooling of the clip embeddings per tracklet, ``"mean"`` or
            ``"max"``. (default: ``"mean"``, what ``stgraph evaluate`` uses)
        last_clip (str): a tracklet's last clip, ``"overlap"`` or ``"pad"``
            (:func:`~stgraph.data.sampling.test_clip_indices`). (default:
            ``"overlap"``, what ``stgraph evaluate`` uses)
        batch_size (int): clips per forward pass (memory is one batch of clips).
            (default: :obj:`32`, ``stgraph evaluate``'s ``--test-batch``)
        device (str or torch.device): where the clips go. (default: ``"cpu"``)
        keypoints_file (str or Path, optional): a COCO keypoint results file
            (:func:`~stgraph.graph.load_coco_keypoints`) with the keypoints of frames
            given as paths, for a model that takes keypoints. A frame is looked up by
            its path relative to ``keypoints_root`` (posix), else by its path as given,
            else by its file name; a frame missing from the file gets the prior pose.
            (default: :obj:`None`)
        keypoints_root (str or Path, optional): the folder ``image_id`` s are relative
            to. (default: :obj:`None`)
        feature (str, optional): the feature embedded: ``"post-bnneck"`` (the model's
            ``"embedding"``, the default) or ``"pre-bnneck"``
            (:func:`~stgraph.models.base.ranked_by`), as ``--eval-feature``.
            (default: :obj:`None`, post-BNNeck)

    Attributes:
        takes_keypoints (bool): whether the model takes keypoints.
        num_clips (int): clips embedded by the last call (for throughput figures).

    Raises:
        ValueError: a size < 1, an unknown ``pool`` or ``last_clip``, ``batch_size`` < 1.
        FileNotFoundError, ValueError: a missing or malformed ``keypoints_file``.
    """

    def __init__(self, model: nn.Module, *, seq_len: int, height: int, width: int,
                 pool: str = "mean", batch_size: int = 32, device: str | torch.device = "cpu",
                 last_clip: str = "overlap",
                 keypoints_file: str | os.PathLike | None = None,
                 keypoints_root: str | os.PathLike | None = None,
                 feature: str | None = None) -> None:
        for name, value in (("seq_len", seq_len), ("height", height), ("width", width),
                            ("batch_size", batch_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"FeatureExtractor: {name} must be an int >= 1, got {value!r}")
        if pool not in _POOLS:
            raise ValueError(f"FeatureExtractor: unknown pool {pool!r}; choose one of: "
                             f"{', '.join(_POOLS)}")
        check_last_clip(last_clip, "FeatureExtractor")
        self.model = ranked_by(model, feature).eval()
        self.height, self.width, self.seq_len = int(height), int(width), int(seq_len)
        self.pool = pool
        self.last_clip = last_clip
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.takes_keypoints = takes_keypoints(model)
        self.keypoints_root = None if keypoints_root is None else Path(keypoints_root)
        self._table = None
        if keypoints_file is not None:
            from stgraph.graph.keypoints import load_coco_keypoints

            self._table = load_coco_keypoints(keypoints_file)
        self.num_clips = 0
        self.config: dict = {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        **kwargs: Any) -> FeatureExtractor:
        """The extractor of a checkpoint written by ``stgraph train``.

        The model is rebuilt by :func:`stgraph.checkpoint.load_checkpoint`; ``seq_len``,
        ``height`` and ``width`` are the checkpoint's (what it was trained and evaluated
        with, :func:`stgraph.config.clip_size`), and :attr:`config` holds its config.

        Args:
            path (str or Path): the ``checkpoint.pth``.
            device (str or torch.device): where the model runs. (default: ``"cpu"``)
            **kwargs: the other arguments of :class:`FeatureExtractor` (``pool``,
                ``batch_size``, ``keypoints_file`` ...).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: not an stgraph checkpoint, or one without ``height``, ``width``
                and ``seq_len``.
        """
        model, cfg = load_checkpoint(path, device)
        size = clip_size(cfg, path)
        fx = cls(model, **size._asdict(), device=device, **kwargs)
        fx.config = cfg
        return fx

    # ------------------------------------------------------------------ inputs -> clips

    def _frames_of(self, n: int, tracklet: Any) -> tuple[list[Any], list[Any]]:
        """The frames of tracklet ``n`` (paths or PIL images) and their keypoint-file keys;
        a float tensor is returned as it is (already a clip)."""
        if isinstance(tracklet, (str, os.PathLike, Image.Image)):
            raise TypeError(f"tracklet {n}: expected a sequence of frames (paths or PIL "
                            f"images) or a (T, 3, H, W) tensor, got a single "
                            f"{type(tracklet).__name__}; wrap one frame in a list")
        if isinstance(tracklet, np.ndarray):
            tracklet = torch.from_numpy(tracklet)
        if isinstance(tracklet, Tensor):
            if tracklet.dim() != 4 or tracklet.size(1) != 3 or tracklet.size(0) < 1:
                raise ValueError(f"tracklet {n}: expected a tensor of shape (T, 3, H, W) with "
                                 f"T >= 1, got {tuple(tracklet.shape)}")
            if tracklet.dtype == torch.uint8:  # raw RGB frames: through PIL, as files are
                frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in tracklet]
                return frames, [[] for _ in frames]
            if not tracklet.is_floating_point():
                raise ValueError(f"tracklet {n}: a tensor must be float (normalised as "
                                 f"load_clip does) or uint8 (RGB pixels), got {tracklet.dtype}")
            if tuple(tracklet.shape[-2:]) != (self.height, self.width):
                raise ValueError(
                    f"tracklet {n}: a float tensor is a normalised clip at the model's size "
                    f"(T, 3, {self.height}, {self.width}), got {tuple(tracklet.shape)}; pass "
                    "frames (paths, PIL images or a uint8 tensor) to have them resized")
            return tracklet, []
        frames = list(tracklet)
        if not frames:
            raise ValueError(f"tracklet {n} has no frames")
        keys = []
        for i, frame in enumerate(frames):
            if isinstance(frame, Image.Image):
                keys.append([])
            elif isinstance(frame, (str, os.PathLike)):
                p = Path(frame)
                cand = []
                if self.keypoints_root is not None:
                    try:
                        cand.append(p.relative_to(self.keypoints_root).as_posix())
                    except ValueError:
                        pass
                cand += [str(frame), p.as_posix(), p.name]
                keys.append(cand)
            else:
                raise TypeError(f"tracklet {n}, frame {i}: expected a path or a PIL image, "
                                f"got {type(frame).__name__}")
        return frames, keys

    def _keypoints_of(self, n: int, kp: Any, length: int) -> np.ndarray | None:
        if kp is None:
            return None
        arr = np.asarray(kp.detach().cpu() if isinstance(kp, Tensor) else kp, dtype=np.float32)
        if arr.shape != (length, 17, 3):
            raise ValueError(f"keypoints of tracklet {n}: expected shape ({length}, 17, 3) "
                             f"(x, y, score per COCO keypoint of each of its {length} frames, "
                             f"in the frame's own pixels), got {tuple(arr.shape)}")
        if not np.isfinite(arr).all():
            raise ValueError(f"keypoints of tracklet {n} hold NaN or infinite values")
        return arr

    def _batches(self, tracklets: Sequence[Any],
                 keypoints: Sequence[Any] | None) -> Iterator[dict[str, Tensor]]:
        """Batches of ``batch_size`` consecutive clips over all tracklets, as the test
        loader of :func:`stgraph.eval.evaluate` yields them."""
        if keypoints is not None and len(keypoints) != len(tracklets):
            raise ValueError(f"keypoints: {len(keypoints)} entries for {len(tracklets)} "
                             "tracklets; give one (T, 17, 3) tensor or None per tracklet")
        frames, table_keys, kps, plan = [], [], [], []
        for n, t in enumerate(tracklets):
            f, keys = self._frames_of(n, t)
            frames.append(f)
            table_keys.append(keys)
            length = len(f)
            kps.append(self._keypoints_of(n, None if keypoints is None else keypoints[n],
                                          length))
            for row in test_clip_indices(length, self.seq_len, self.last_clip).tolist():
                plan.append((n, row))
        self.num_clips = len(plan)
        source = _TrackletFrames(frames, kps, self._table, table_keys)
        for start in range(0, len(plan), self.batch_size):
            clips, kp_rows, tids = [], [], []
            for n, row in plan[start:start + self.batch_size]:
                if isinstance(frames[n], Tensor):  # a normalised clip tensor
                    clip = frames[n][row].to(torch.float32)
                    kp = None
                    if self.takes_keypoints:
                        kp = self._tensor_keypoints(kps[n], row)
                elif self.takes_keypoints:
                    clip, kp = load_clip_with_keypoints(source, [(n, i) for i in row],
                                                        self.height, self.width)
                else:
                    clip, kp = load_clip(source, [(n, i) for i in row], self.height,
                                         self.width), None
                clips.append(clip)
                kp_rows.append(kp)
                tids.append(n)
            batch = {"clip": torch.stack(clips), "tracklet": torch.tensor(tids)}
            if self.takes_keypoints:
                batch["keypoints"] = torch.stack(kp_rows)
            yield batch

    def _tensor_keypoints(self, kp: np.ndarray | None, row: list[int]) -> Tensor:
        """Keypoints of a clip given as a normalised tensor: already in its pixels."""
        from stgraph.graph.keypoints import prior_pose

        if kp is None:
            pose = torch.from_numpy(prior_pose(self.height, self.width))
            return pose.expand(len(row), 17, 3).clone()
        return torch.from_numpy(kp[row])

    # ------------------------------------------------------------------ clips -> features

    def _embed_batches(self, batches: Iterator[dict[str, Tensor]], num: int) -> Tensor:
        return extract_features(self.model, batches, num, device=self.device, pool=self.pool)

    @torch.no_grad()
    def embed_batch(self, tracklets: Sequence[Any],
                    keypoints: Sequence[Any] | None = None) -> Tensor:
        r"""Embeddings of several tracklets, one row each.

        Args:
            tracklets (sequence): each one tracklet of any length :math:`T_n \ge 1`, as

                * a sequence of frame paths (``str`` / ``Path``) or PIL images, in
                  temporal order, at any size (resized as in evaluation);
                * a uint8 tensor :math:`(T_n, 3, H_0, W_0)` of RGB pixels (resized);
                * a float tensor :math:`(T_n, 3, H, W)` normalised as
                  :func:`~stgraph.data.transforms.load_clip` returns it, at the model's
                  ``height x width``.
            keypoints (sequence, optional): for a model that takes keypoints, one entry
                per tracklet: a :math:`(T_n, 17, 3)` tensor / array of COCO-17 rows
                ``(x, y, score)`` in the pixels of the tracklet's original frames (in
                the model's frame for a float tensor), or :obj:`None` for the
                ``keypoints_file`` / prior pose. Ignored by other models.
                (default: :obj:`None`)

        Returns:
            Tensor: :math:`(N, D)` float32 on ``device``, row :math:`n` the pooled
            embedding of ``tracklets[n]``.

        Raises:
            ValueError: no tracklet, an empty tracklet, a tensor of a wrong shape /
                dtype / size, keypoints of a wrong shape or count (the message names
                the tracklet).
            TypeError: a frame that is neither a path nor a PIL image.
            FileNotFoundError, OSError: a frame file that is missing or unreadable.
        """
        tracklets = list(tracklets)
        if not tracklets:
            raise ValueError("embed_batch: no tracklet given")
        return self._embed_batches(self._batches(tracklets, keypoints), len(tracklets))

    def __call__(self, tracklets: Sequence[Any], keypoints: Sequence[Any] | None = None
                 ) -> Tensor:
        """``fx(tracklets)``: :meth:`embed_batch`, the :math:`(N, D)` embeddings of several
        tracklets (``fx([t])[0]`` is :meth:`embed` of one)."""
        return self.embed_batch(tracklets, keypoints)

    def embed(self, tracklet: Any, keypoints: Any = None) -> Tensor:
        """The embedding :math:`(D,)` of one tracklet; see :meth:`embed_batch`."""
        return self.embed_batch([tracklet], None if keypoints is None else [keypoints])[0]

    @torch.no_grad()
    def embed_dataset(self, dataset: VideoReIDDataset, tracklets: Sequence[Any] | None = None,
                      workers: int = 0, progress: bool = False) -> Tensor:
        """Embeddings of a dataset's tracklets (:class:`~stgraph.data.Tracklet` s, default
        ``dataset.query + dataset.gallery``), read by the dataset (its ``read_frame`` and
        ``frame_keypoints``) exactly as :func:`stgraph.eval.evaluate` reads them.

        Returns:
            Tensor: :math:`(N, D)`, one row per tracklet.

        Raises:
            ValueError: no tracklet (and the errors of
                :class:`~stgraph.data.TestClipDataset`).
        """
        tracklets = list(dataset.query) + list(dataset.gallery) if tracklets is None \
            else list(tracklets)
        if not tracklets:
            raise ValueError("embed_dataset: no tracklet given")
        clips = TestClipDataset(dataset, tracklets, self.seq_len, self.height, self.width,
                                keypoints=self.takes_keypoints, last_clip=self.last_clip)
        self.num_clips = len(clips)
        loader = DataLoader(clips, batch_size=self.batch_size, shuffle=False,
                            num_workers=workers)
        if progress:
            from tqdm.auto import tqdm

            loader = tqdm(loader, desc="features", unit="batch")
        return self._embed_batches(iter(loader), len(tracklets))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, "
                f"size=({self.height}, {self.width}), seq_len={self.seq_len}, "
                f"pool={self.pool!r}, last_clip={self.last_clip!r}, "
                f"batch_size={self.batch_size}, device={self.device})")


# ------------------------------------------------------------------ features files


def save_features(path: str | os.PathLike, features: torch.Tensor, pids, camids, names,
                  **meta: str) -> Path:
    """Write a features file, the ``.npz`` of ``stgraph extract``; its folder is created.

    The file holds ``features`` (N, D) float32, ``pids`` and ``camids`` (N,) int64 (-1
    where unknown, e.g. for ``--frames-dir``), ``names`` (N,) str (the tracklet's folder,
    or ``split/index`` for generated data), and each ``meta`` entry (e.g. ``model``,
    ``checkpoint``, ``pool``) as a 0-d str array.

    Raises:
        ValueError: ``pids`` / ``camids`` / ``names`` not one entry per row.
    """
    feats = features.detach().cpu().to(torch.float32).numpy()
    pids, camids = np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
    names = np.asarray([str(n) for n in names])
    if not len(pids) == len(camids) == len(names) == len(feats):
        raise ValueError(f"save_features: {len(feats)} rows but {len(pids)} pids, "
                         f"{len(camids)} camids, {len(names)} names")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to the name
        np.savez(f, features=feats, pids=pids, camids=camids, names=names,
                 **{k: np.asarray(str(v)) for k, v in meta.items()})
    return path


def load_features(path: str | os.PathLike) -> dict:
    """A features file as a dict: ``features`` (N, D) float32 tensor, ``pids``,
    ``camids`` (N,) int64 arrays, ``names`` (N,) list of str, and its other entries.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a features file (the message names the missing entries).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    missing = [k for k in ("features", "pids", "camids", "names") if k not in data]
    if missing:
        raise ValueError(f"{path} is not a features file of 'stgraph extract': no {missing}")
    feats = data["features"]
    if feats.ndim != 2 or len(feats) != len(data["pids"]):
        raise ValueError(f"{path}: features of shape {feats.shape} for {len(data['pids'])} "
                         "pids; expected (N, D)")
    out = {k: (v.item() if v.ndim == 0 else v) for k, v in data.items()}
    out["features"] = torch.from_numpy(feats)
    out["names"] = [str(n) for n in data["names"]]
    return out
