"""The settings of a run, without argparse: devices, datasets, model arguments, checkpoints.

Everything ``stgraph train``, ``evaluate``, ``plot``, ``extract`` and ``export`` resolve
from their flags lives here as plain functions and records, so that a run can be set up
from Python exactly as the command line sets it up:

* :class:`TrainSettings`: every setting of a training run, one field per flag of
  ``stgraph train`` (same names as the flags, ``-`` read as ``_``; same defaults).
  :func:`stgraph.recipe.train` takes one; the checkpoint records it
  (:meth:`TrainSettings.record`, its ``config["args"]``), and ``--resume`` compares it;
* :func:`resolve_device`, :func:`dataset_config`, :func:`load_dataset`: the device and the
  dataset of a run;
* :func:`parse_model_args`, :func:`model_kwargs`: the model's constructor arguments from
  the settings and ``KEY=VALUE`` pairs;
* :func:`checkpoint_config` builds a checkpoint's ``config``; :func:`clip_size` reads the
  clip size back from one.

Errors are :class:`~stgraph.errors.SettingError` (a :class:`ValueError`) whose message
names the setting as this module spells it (``output``); the command line prints the same
message with its flags (``--output``, :mod:`stgraph.errors`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from stgraph.data import create_dataset, get_dataset_class
from stgraph.errors import Setting, SettingError, SettingWarning, flag  # noqa: F401 (re-exported)
from stgraph.models import get_model_class
from stgraph.models.registry import check_model_kwargs

__all__ = [
    "CHECKPOINT_SIZE_KEYS",
    "RUN_SETTINGS",
    "ClipSize",
    "TrainSettings",
    "checkpoint_config",
    "clip_size",
    "dataset_config",
    "evaluation_kwargs",
    "load_dataset",
    "model_kwargs",
    "parse_model_args",
    "resolved_backbone_lr_mult",
    "resolved_warmup_epochs",
    "resolve_device",
    "with_protocol",
]


# ------------------------------------------------------------------ device


def resolve_device(name: str) -> torch.device:
    """A device setting: ``auto`` is CUDA where available, else the CPU.

    Raises:
        SettingError: not a device name, or a CUDA device on a machine without CUDA (or
            without that many GPUs).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingError("{device} {name}: not a device (cpu, cuda, cuda:1 or auto)",
                           name=name) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "no GPU found" if torch.version.cuda else "a CPU-only build"
            raise SettingError("{device} {name}: CUDA is not available on this machine "
                               "(torch {version}, {build}); use {device} cpu or auto",
                               name=name, version=torch.__version__, build=build)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingError("{device} {name}: this machine has {n} CUDA device(s)",
                               name=name, n=torch.cuda.device_count())
    return device


# ------------------------------------------------------------------ dataset


def dataset_config(dataset: str | None = None, root: str | None = None,
                   split_file: str | None = None, split_id: int | None = None,
                   keypoints: str | None = None, base: dict | None = None) -> dict:
    """The dataset of a run as a dict ``{"name", "root", "split_file", "split_id",
    "keypoints"}`` (what was given; paths absolute, so that a checkpoint's dataset is
    found from any working folder): ``base`` (a checkpoint's) with what is given replacing
    its entries, or, with ``dataset``, a new config.

    Raises:
        SettingError: no ``root`` for a dataset that needs one; ``root``, ``split_file``,
            ``split_id`` or ``keypoints`` for the generated ``synthetic`` dataset.
    """
    cfg = dict(base or {})
    if dataset is not None:
        cfg = {"name": dataset}
    given = {"root": root, "split_file": split_file, "split_id": split_id,
             "keypoints": keypoints}
    for key, val in given.items():
        if val is not None:
            cfg[key] = os.path.abspath(val) if key != "split_id" else val
    name = cfg.get("name")
    if name != "synthetic" and name is not None and "root" not in cfg:
        raise SettingError("{root} is required for {dataset} {name}", name=name)
    if name == "synthetic":
        extra = [k for k in ("root", "split_file", "split_id") if given[k] is not None]
        if extra:
            raise SettingError("{given} is not for {dataset} synthetic, which is generated "
                               "(no files)", given=tuple(Setting(k) for k in extra))
        if "keypoints" in cfg:
            raise SettingError("{keypoints} is not for {dataset} synthetic, which carries "
                               "its own ground-truth keypoints")
    return cfg


def with_protocol(cfg: dict, protocol: str) -> dict:
    """``cfg`` plus ``protocol`` for a dataset whose lists depend on it (MARS's gallery)."""
    if "protocol" in inspect.signature(get_dataset_class(cfg["name"])).parameters:
        return {**cfg, "protocol": protocol}
    return cfg


def load_dataset(cfg: dict, protocol: str | None = None):
    """The dataset of a :func:`dataset_config` (for MARS, with the gallery of ``protocol``).

    Raises:
        the errors of the dataset's constructor (a missing root, a bad split file...).
    """
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    if protocol is not None and "protocol" in inspect.signature(
            get_dataset_class(cfg["name"])).parameters:
        kwargs["protocol"] = protocol  # e.g. MARS: which gallery the protocol uses
    return create_dataset(cfg["name"], **kwargs)


# ------------------------------------------------------------------ model arguments

_PLAIN = (bool, int, float, str, type(None))

#: Model arguments that are also settings of the run (the data loader, the feature cache,
#: the optimiser): only their own settings set them, never ``model_arg``.
RUN_SETTINGS = ("backbone", "last_stride", "pretrained", "seq_len")

#: The settings that are model arguments when the model takes them (and are not None).
MODEL_SETTINGS = ("backbone", "last_stride", "pretrained", "seq_len", "num_patches",
                  "num_layers", "tau", "alpha", "heatmap_temperature", "heatmap_sigma",
                  "part_reduce", "part_grad_scale", "normalize_parts",
                  "scale_cross_attention")

#: STGCN's patches per frame when ``num_patches`` is not set.
DEFAULT_NUM_PATCHES = 4


def parse_model_args(pairs: list[str]) -> dict:
    """``["K=4", "rows=[1, 2]"]`` -> ``{"K": 4, "rows": [1, 2]}`` (:func:`ast.literal_eval`,
    else the string itself); ``-`` in a key reads as ``_``.

    Raises:
        SettingError: not ``KEY=VALUE``, a key given twice, or a value that is not a
            number, a string, True/False/None or a list of them.
    """
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise SettingError("{model_arg} expects KEY=VALUE, got {pair!r}", pair=pair)
        if key in out:
            raise SettingError("{model_arg} {key} is given twice", key=key)
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        if isinstance(value, tuple):
            value = list(value)
        if not (isinstance(value, _PLAIN) or isinstance(value, list) and all(
                isinstance(v, _PLAIN) for v in value)):
            raise SettingError("{model_arg} {key}={text}: a value must be a number, a string, "
                               "True/False/None or a list of them (the checkpoint records "
                               "it), got a {kind}", key=key, text=text,
                               kind=type(value).__name__)
        out[key] = value
    return out


def model_kwargs(name: str, settings: Any) -> dict:
    """Model ``name``'s constructor arguments from ``settings`` (a :class:`TrainSettings`
    or anything with its attributes): the :data:`MODEL_SETTINGS` the model takes and that
    are set, and the ``model_arg`` pairs (:func:`parse_model_args`), checked against the
    constructor (:func:`~stgraph.models.registry.check_model_kwargs`).

    Raises:
        SettingError: a ``model_arg`` key the model's constructor does not take (the
            message lists those it takes), one of :data:`RUN_SETTINGS` or ``num_classes``,
            one also set by its own setting, or a value of the wrong type.
    """
    params = inspect.signature(get_model_class(name)).parameters
    candidates = {k: getattr(settings, k, None) for k in MODEL_SETTINGS}
    extra = parse_model_args(getattr(settings, "model_arg", None) or [])
    if "num_patches" in params and candidates["num_patches"] is None and (
            "num_patches" not in extra):
        candidates["num_patches"] = DEFAULT_NUM_PATCHES
    kwargs = {k: v for k, v in candidates.items() if k in params and v is not None}
    takes = [k for k, p in params.items() if k not in ("self", "num_classes") and p.kind not in (
        p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key in extra:
        if key in RUN_SETTINGS:
            raise SettingError("{model_arg} {key}: set it with {own} (the run uses it too)",
                               key=key, own=Setting(key))
        if key == "num_classes":
            raise SettingError("{model_arg} num_classes: the number of classes is the "
                               "dataset's number of training identities")
        if key not in takes:
            raise SettingError("{model_arg} {key}: model {name} takes no argument {key!r}; "
                               "its constructor arguments: {takes}", key=key, name=name,
                               takes=", ".join(takes))
        if key in candidates and getattr(settings, key, None) is not None:
            raise SettingError("{own} and {model_arg} {key} both set {key}; give one",
                               key=key, own=Setting(key))
        try:  # the value as the constructor's type (an int for a float argument, ...)
            extra[key] = check_model_kwargs(name, {key: extra[key]})[key]
        except ValueError as e:
            raise SettingError("{model_arg} {key}={value!r}: {why}", key=key,
                               value=extra[key], why=e) from None
    return {**kwargs, **extra}


# ------------------------------------------------------------------ the training settings


def fine_tunes_pretrained(settings: Any) -> bool:
    """Whether a run fine-tunes pretrained weights end to end (``pretrained`` given, frames
    read: no ``feature_cache``)."""
    return bool(getattr(settings, "pretrained", None)) and not getattr(
        settings, "feature_cache", None)


def resolved_warmup_epochs(settings: Any) -> float:
    """``warmup_epochs``, or its default: 0 when fine-tuning pretrained weights from
    frames (the first epochs at the full rate: on cuhk03-pair1 at 128 x 64, TP's epoch-3
    rank-1 is 16.0 % without warm-up, 10.0 % after one epoch of it, 11.0 % after three;
    ``benchmarks/finetune_recipe.py``), else 1 (a head trained from scratch)."""
    if settings.warmup_epochs is not None:
        return float(settings.warmup_epochs)
    return 0.0 if fine_tunes_pretrained(settings) else 1.0


def resolved_backbone_lr_mult(settings: Any) -> float:
    """``backbone_lr_mult``, or its default 1: the backbone (or a cache's tail) at the
    head's rate. Measured on cuhk03-pair1: TP fine-tuned at 128 x 64 ranks mAP 23.6 after
    3 epochs at x 1 against 19.9 at x 0.1 (``benchmarks/finetune_recipe.py``), and from a
    partial cache 30.0 % rank-1 against 17.0 %."""
    return 1.0 if settings.backbone_lr_mult is None else float(settings.backbone_lr_mult)



@dataclasses.dataclass
class TrainSettings:
    """Every setting of a training run: one field per flag of ``stgraph train``, with its
    name (``-`` as ``_``) and default (``stgraph train --help`` documents each).

    ``TrainSettings(model="stgcn", dataset="synthetic", output="runs/x")`` is
    ``stgraph train --model stgcn --dataset synthetic --output runs/x``; pass it to
    :func:`stgraph.recipe.train`. Paths may be relative (they are recorded absolute).
    Values are checked where they are used (:func:`stgraph.recipe.prepare`), with
    :class:`SettingError` naming the field.
    """

    model: str
    output: str
    dataset: str | None = None
    root: str | None = None
    split_file: str | None = None
    split_id: int | None = None
    keypoints: str | None = None
    #: further constructor arguments of the dataset (no flag: e.g. the synthetic dataset's
    #: ``num_train_ids``, ``image_size``); recorded in the checkpoint's dataset config
    dataset_kwargs: dict | None = None
    backbone: str = "resnet50"
    last_stride: int = 1
    pretrained: str | None = None
    height: int = 256
    width: int = 128
    seq_len: int = 8
    epochs: int = 10
    batch_ids: int = 8
    batch_instances: int = 4
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: float | None = None  # None: resolved_warmup_epochs
    num_patches: int | None = None  # None: DEFAULT_NUM_PATCHES for the models that take it
    num_layers: int | None = None
    tau: int | None = None
    alpha: float | None = None
    heatmap_temperature: float | None = None
    heatmap_sigma: float | None = None
    part_reduce: str | None = None
    part_grad_scale: float | None = None
    normalize_parts: bool | None = None
    scale_cross_attention: bool | None = None
    model_arg: list = dataclasses.field(default_factory=list)
    diversity_weight: float = 1.0
    margin: float = 0.3
    part_triplet_weight: float = 1.0
    backbone_lr_mult: float | None = None
    freeze_bn_epochs: int = 0
    bn_momentum: float | None = None  # None: the backbone's own (Lite0 0.01, ResNet 0.1)
    no_flip: bool = False
    pad: int | None = None
    erasing: float = 0.5
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    eval_every: int = 0
    check_data: bool = False
    deterministic: bool = False
    amp: bool = False
    sync_bn: bool = False
    metric: str = "cosine"
    eval_feature: str | None = None
    pool: str = "mean"
    last_clip: str = "overlap"
    test_batch: int = 32
    workers: int = 2
    device: str = "auto"
    protocol: str = "torchreid"
    rerank: bool = False
    no_progress: bool = False
    feature_cache: str | None = None
    cut: str | None = None

    #: Settings ``resume`` lets differ from the interrupted run's (they do not change the
    #: weights).
    RESUME_MAY_DIFFER = ("epochs", "resume", "overwrite", "no_progress", "workers",
                         "check_data", "last_clip")
    #: Settings that hold paths: recorded absolute.
    PATHS = ("root", "split_file", "keypoints", "output", "feature_cache")

    @classmethod
    def from_mapping(cls, values: dict) -> TrainSettings:
        """The settings among ``values`` (e.g. ``vars(args)`` of ``stgraph train``'s
        parser; other keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def record(self) -> dict:
        """The settings as a checkpoint records them (``config["args"]``): every field,
        paths absolute, ``num_patches`` and ``warmup_epochs`` resolved, and ``command``
        ``"train"``."""
        out = {"command": "train", **dataclasses.asdict(self)}
        if out["num_patches"] is None:
            out["num_patches"] = DEFAULT_NUM_PATCHES
        out["warmup_epochs"] = resolved_warmup_epochs(self)
        for key in self.PATHS:
            if out.get(key) is not None:
                out[key] = os.path.abspath(out[key])
        if out.get("pretrained") not in (None, "imagenet") and os.path.exists(out["pretrained"]):
            out["pretrained"] = os.path.abspath(out["pretrained"])
        return out

    def dataset_config(self) -> dict:
        """This run's :func:`dataset_config` (with :attr:`dataset_kwargs`)."""
        cfg = dataset_config(self.dataset, self.root, self.split_file, self.split_id,
                             self.keypoints)
        return {**cfg, **(self.dataset_kwargs or {})}


def evaluation_kwargs(settings: Any, device: torch.device | str, progress: bool) -> dict:
    """The keyword arguments of an evaluation (:func:`stgraph.eval.evaluate`,
    :func:`stgraph.cache.evaluate_cached`) from the settings of a run or of ``stgraph
    evaluate`` / ``plot`` (anything with ``test_batch``, ``metric``, ``pool``, ``last_clip``,
    ``workers``, ``protocol``, ``rerank``)."""
    s = settings
    return dict(batch_size=s.test_batch, device=device, metric=s.metric, pool=s.pool,
                workers=s.workers, progress=progress, protocol=s.protocol, rerank=s.rerank,
                last_clip=s.last_clip)


# ------------------------------------------------------------------ checkpoints

#: The clip size a checkpoint's config records, in this order.
CHECKPOINT_SIZE_KEYS = ("seq_len", "height", "width")


class ClipSize(NamedTuple):
    """The size of a clip: ``seq_len`` frames of ``height x width`` pixels."""

    seq_len: int
    height: int
    width: int


def checkpoint_config(model: str, model_kwargs: dict, num_classes: int, dataset: dict,
                      size: ClipSize | tuple[int, int, int],
                      settings: TrainSettings | None = None) -> dict:
    """A checkpoint's ``config``: what :func:`stgraph.checkpoint.load_checkpoint` rebuilds
    the model from (``model``, ``model_kwargs``, ``num_classes``), the dataset, the clip
    size (``seq_len``, ``height``, ``width``) and the run's settings (``args``,
    :meth:`TrainSettings.record`) when given."""
    seq_len, height, width = (int(v) for v in size)
    cfg = {"model": model, "model_kwargs": model_kwargs, "num_classes": int(num_classes),
           "dataset": dataset, "seq_len": seq_len, "height": height, "width": width}
    if settings is not None:
        cfg["args"] = settings.record()
    return cfg


def clip_size(cfg: dict, source: str | os.PathLike = "checkpoint") -> ClipSize:
    """The clip size a checkpoint's config records (:func:`checkpoint_config`).

    Raises:
        ValueError: ``cfg`` lacks one of ``seq_len``, ``height``, ``width`` or holds a
            value that is not a positive integer (the message names ``source``).
    """
    missing = [k for k in CHECKPOINT_SIZE_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{Path(source)}: its config has no {', '.join(missing)}, so the "
                         "clip size the model was trained on is unknown (a checkpoint of "
                         "stgraph train records seq_len, height and width)")
    size = []
    for key in CHECKPOINT_SIZE_KEYS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{Path(source)}: its config's {key} is {value!r}, not a "
                             "positive integer")
        size.append(value)
    return ClipSize(*size)
