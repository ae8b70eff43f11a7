"""Training as library code: what ``stgraph train`` does, callable from Python.

::

    from stgraph.config import TrainSettings
    from stgraph.recipe import train

    metrics = train(TrainSettings(model="stgcn", dataset="synthetic", backbone="resnet18",
                                  height=128, width=64, seq_len=4, output="runs/x"))

:func:`train` checks every setting first (:func:`prepare`: nothing is written before the
run is known to be possible), then assembles the run: the data source (frames, or a
feature cache: :class:`FrameSource`, :class:`CacheSource`, one interface for the training
loader and the evaluation), the model, the loss, the optimizer and its schedule, the DDP
wrapper under ``torchrun``, and a :class:`~stgraph.engine.Trainer`; after training it
evaluates and writes ``OUTPUT/metrics.json`` and ``OUTPUT/checkpoint.pth``.

The command line is :mod:`stgraph.cli`; it turns the flags into a
:class:`~stgraph.config.TrainSettings` and calls :func:`train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from stgraph import distributed
from stgraph.checkpoint import (
    OutputInUseError,
    OutputLock,
    check_output_folder,
    resume_state,
    save_checkpoint,
    write_json,
)
from stgraph.config import (
    ClipSize,
    TrainSettings,
    checkpoint_config,
    evaluation_kwargs,
    load_dataset,
    model_kwargs,
    resolve_device,
    resolved_backbone_lr_mult,
    resolved_warmup_epochs,
    with_protocol,
)
from stgraph.engine import (
    Trainer,
    build_optimizer,
    make_train_loader,
    mixed_precision,
    set_bn_momentum,
    warmup_cosine,
)
from stgraph.errors import SettingError, SettingWarning
from stgraph.eval import evaluate, format_table
from stgraph.losses import ReIDLoss
from stgraph.models import create_model, get_model_class
from stgraph.models.base import ranked_by, takes_keypoints

__all__ = ["CacheSource", "FrameSource", "TrainingRun", "TrainingStopped", "prepare", "train"]


class TrainingStopped(Exception):
    """A run stopped on purpose with a message for the user (e.g. a NaN loss)."""


# ------------------------------------------------------------------ data sources


class FrameSource:
    """Training and evaluation on a dataset's frames: the whole model runs on clips.

    Args:
        dataset (VideoReIDDataset): the dataset.
        height, width (int): frame size in pixels.
    """

    def __init__(self, dataset, height: int, width: int) -> None:
        self.dataset, self.height, self.width = dataset, int(height), int(width)

    @property
    def num_classes(self) -> int:
        """Training identities."""
        return self.dataset.num_train_pids

    def net(self, model: nn.Module) -> nn.Module:
        """The module trained: the model itself."""
        return model

    def train_loader(self, settings: TrainSettings, keypoints: bool, num_replicas: int = 1,
                     rank: int = 0):
        """:func:`~stgraph.engine.make_train_loader` with the run's settings."""
        s = settings
        return make_train_loader(self.dataset, s.seq_len, self.height, self.width, s.batch_ids,
                                 s.batch_instances, seed=s.seed, workers=s.workers,
                                 keypoints=keypoints, flip=not s.no_flip, pad=s.pad,
                                 erasing=s.erasing, num_replicas=num_replicas, rank=rank)

    def evaluate(self, net: nn.Module, seq_len: int, **kwargs) -> dict:
        """:func:`~stgraph.eval.evaluate` on the dataset (under ``torchrun`` each process
        embeds a shard)."""
        return evaluate(net, self.dataset, seq_len, self.height, self.width, **kwargs)

    def __repr__(self) -> str:
        return f"FrameSource({self.dataset.name}, {self.height} x {self.width})"


class CacheSource:
    """Training and evaluation on a feature cache (:class:`~stgraph.cache.FeatureCache`):
    the model's head, and the backbone's tail after the cache's cut, run on cached maps.

    Args:
        cache (FeatureCache): the cache.
    """

    def __init__(self, cache) -> None:
        self.cache = cache

    @property
    def num_classes(self) -> int:
        """Training identities."""
        return self.cache.num_train_pids

    def net(self, model: nn.Module) -> nn.Module:
        """The module trained: a :class:`~stgraph.cache.FeatureMapHead` of the model."""
        from stgraph.cache import FeatureMapHead

        return FeatureMapHead(model, self.cache.image_size, self.cache.cut)

    def train_loader(self, settings: TrainSettings, keypoints: bool, num_replicas: int = 1,
                     rank: int = 0):
        """:func:`~stgraph.cache.make_cached_train_loader` with the run's settings."""
        from stgraph.cache import make_cached_train_loader

        s = settings
        return make_cached_train_loader(self.cache, s.seq_len, s.batch_ids, s.batch_instances,
                                        seed=s.seed, workers=s.workers, keypoints=keypoints,
                                        flip=not s.no_flip, num_replicas=num_replicas,
                                        rank=rank)

    def evaluate(self, net: nn.Module, seq_len: int, **kwargs) -> dict:
        """:func:`~stgraph.cache.evaluate_cached` (every process evaluates the whole
        cache)."""
        from stgraph.cache import evaluate_cached

        return evaluate_cached(net, self.cache, seq_len, **kwargs)

    def __repr__(self) -> str:
        return f"CacheSource({self.cache})"


# ------------------------------------------------------------------ the run


@dataclasses.dataclass
class TrainingRun:
    """A training run checked and ready to start (:func:`prepare`): nothing written yet.

    Attributes:
        settings: the run's settings.
        device: where it trains.
        output: the output folder (absolute).
        dataset: the dataset config (:func:`~stgraph.config.dataset_config`).
        model_kwargs: the model's constructor arguments.
        source: the data (:class:`FrameSource` or :class:`CacheSource`).
        resume: the training state to continue from, or :obj:`None`.
        amp: ``(autocast, grad_scaler, dtype)`` of mixed precision, or :obj:`None`.
        progress: whether progress bars are drawn.
    """

    settings: TrainSettings
    device: torch.device
    output: Path
    dataset: dict
    model_kwargs: dict
    source: FrameSource | CacheSource
    resume: dict | None = None
    amp: tuple | None = None
    progress: bool = False

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def clip_size(self) -> ClipSize:
        s = self.settings
        return ClipSize(s.seq_len, s.height, s.width)

    @property
    def eval_kwargs(self) -> dict:
        """The keyword arguments of the run's evaluations (:func:`~stgraph.eval.evaluate`)."""
        return evaluation_kwargs(self.settings, self.device, self.progress)


def _print(line: str) -> None:
    print(line, flush=True)


def _warn(template: str, **values) -> None:
    warnings.warn(SettingWarning(template, **values), stacklevel=3)


def _deterministic(device: torch.device) -> None:
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _preflight(s: TrainSettings, device, dataset, kwargs: dict, num_classes: int) -> None:
    """Before anything is written: refuse a batch that cannot fit in memory, feature maps
    too small for the head (warn when merely small), and warn when clips repeat frames
    (:mod:`stgraph.preflight`)."""
    from stgraph import preflight

    clips = s.batch_ids * s.batch_instances // distributed.world_size()
    preflight.check_memory(s.backbone, s.seq_len, s.height, s.width, clips, s.test_batch,
                           s.last_stride, device)
    with torch.random.fork_rng(devices=[]):
        probe = create_model(s.model, num_classes=num_classes,
                             **{k: v for k, v in kwargs.items() if k != "pretrained"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preflight.check_map_size(probe, s.seq_len, s.height, s.width)
    for w in caught:  # re-raised from here: the caller's line, settings still named
        warnings.warn(w.message, stacklevel=3)
    lengths = [len(t.frames) for t in dataset.train]
    repeated = preflight.repeated_frames(s.seq_len, lengths)
    if repeated:
        _warn("{seq_len} {T} exceeds the longest training tracklet ({longest} frames): every "
              "training clip repeats frames, at least {n} of its {T}", T=s.seq_len,
              longest=max(lengths), n=repeated)


def prepare(settings: TrainSettings, device: torch.device | None = None,
            progress: bool | None = None, log: Callable[[str], None] | None = None
            ) -> TrainingRun:
    """Every check of a training run, before anything is written: the settings, the
    model arguments, the output folder (and ``resume`` against ``last.pth``), the data
    (the test tracklets' frames are checked in :func:`train`), the memory a batch needs.

    Args:
        settings (TrainSettings): the run.
        device (torch.device, optional): the device (default: ``settings.device``
            resolved).
        progress (bool, optional): draw progress bars (default: unless
            ``settings.no_progress``, and only when stdout is a terminal).
        log (callable): where the dataset summary and other notes go (default: printed,
            flushed).

    Raises:
        SettingError: a setting is wrong (the message names it).
        OutputInUseError: a live run holds the output folder.
        MemoryError: a batch needs more memory than there is.
        FileNotFoundError, ValueError: the data cannot be read.
    """
    s = settings
    log = log or _print
    if device is None:
        device = resolve_device(s.device)
    main_process = distributed.rank() == 0
    amp = mixed_precision(device) if s.amp else None  # amp on mps: fail first
    if s.deterministic:
        _deterministic(device)
    if progress is None:
        progress = not s.no_progress and sys.stdout.isatty()
    progress = bool(progress) and main_process
    data_cfg = s.dataset_config()
    if data_cfg.get("name") is None:
        raise SettingError("{dataset} is required (a registered dataset name)")
    kwargs = model_kwargs(s.model, s)  # bad model_arg: fail before any work
    share = s.batch_ids * s.batch_instances
    if share % distributed.world_size():
        raise SettingError("{batch_ids} x {batch_instances} = {share} clips per step cannot "
                           "be shared by {n} processes: make it a multiple of the number of "
                           "processes", share=share, n=distributed.world_size())
    if s.bn_momentum is not None and not 0 < s.bn_momentum <= 1:
        raise SettingError("{bn_momentum} must be > 0 and <= 1 (PyTorch's convention), got "
                           "{value}", value=s.bn_momentum)
    out_dir = Path(s.output).absolute()
    check_output_folder(out_dir)
    if s.cut is not None and not s.feature_cache:
        raise SettingError("{cut} is a setting of {feature_cache} (the cut its maps were "
                           "taken at); without a cache the whole backbone runs")
    if s.feature_cache and s.check_data:
        raise SettingError("{check_data} reads the frames; with {feature_cache} training "
                           "reads the cache only (check the frames with 'stgraph cache')")
    if s.feature_cache:
        from stgraph.cache import FeatureCache, cache_settings

        cache = FeatureCache(s.feature_cache)
        run_cfg = with_protocol(data_cfg, s.protocol)
        if not takes_keypoints(get_model_class(s.model)):  # keypoints do not matter
            run_cfg.pop("keypoints", None)
            if "keypoints" in cache.settings["dataset"]:
                run_cfg["keypoints"] = cache.settings["dataset"]["keypoints"]
        if s.cut is not None and s.cut != cache.cut:
            raise SettingError("{cut} {want}: feature cache {root} holds the maps at cut "
                               "{have!r}; build a cache at {cut} {want} or leave {cut} out",
                               want=s.cut, root=cache.root, have=cache.cut)
        cache.check(cache_settings(run_cfg, s.backbone, s.pretrained, s.last_stride,
                                   s.height, s.width, cache.cut))
        source = CacheSource(cache)
        what = ("the head" if cache.cut == "end" else
                f"the backbone after cut {cache.cut!r} and the head")
        log(f"training {what} on {cache}")
    else:
        # validates root / split file before anything is written
        dataset = load_dataset(data_cfg, s.protocol)
        source = FrameSource(dataset, s.height, s.width)
        log(dataset.summary())  # not hidden by no_progress
        _preflight(s, device, dataset, kwargs, source.num_classes)
    resume = resume_state(out_dir, s.record(), s.resume, s.overwrite, s.epochs,
                          may_differ=TrainSettings.RESUME_MAY_DIFFER, check_lock=main_process)
    return TrainingRun(s, device, out_dir, data_cfg, kwargs, source, resume, amp, progress)


def _all_ranks_ok(ok: bool) -> bool:
    """Whether every process reports ``ok`` (a collective; True in one process)."""
    if not distributed.is_distributed():
        return ok
    flag = torch.tensor([1.0 if ok else 0.0])
    if torch.distributed.get_backend() == "nccl":
        flag = flag.cuda()
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def train(settings: TrainSettings, callbacks: Sequence[Callable] = (),
          log: Callable[[str], None] | None = None) -> dict:
    """Train, evaluate and write a run: ``stgraph train`` as a function.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls it: it joins the process
    group (:func:`stgraph.distributed.init_from_env`: gloo on the CPU, nccl and
    ``cuda:LOCAL_RANK`` on GPUs), trains its share of each global batch in
    ``DistributedDataParallel``, and takes part in the evaluation; only rank 0 prints to
    stdout, shows progress, takes the lock and writes files. The output folder must be on
    a file system every process sees (``resume`` reads ``last.pth`` in each).

    Args:
        settings (TrainSettings): the run.
        callbacks: called as ``callback(trainer, record)`` after every epoch
            (:class:`~stgraph.engine.Trainer`).
        log (callable): where the run's lines go (default: printed, flushed, so that a
            log file follows the run).

    Returns:
        dict: the metrics written to ``OUTPUT/metrics.json`` (rank-1/5/10/20, mAP, the
        timings, the history; on ranks other than 0 the same, nothing written).

    Raises:
        SettingError, OutputInUseError, MemoryError, OSError, FileNotFoundError: a setting,
            the data or the output folder is wrong (see :func:`prepare`), e.g. ``amp`` on a
            device other than cpu or cuda, a batch that the processes cannot share evenly.
        TrainingStopped: the loss became NaN (``last.pth`` keeps the last good epoch).
    """
    log = log or _print
    device = resolve_device(settings.device)
    if not distributed.launched_by_torchrun():
        if settings.sync_bn:
            _warn("{sync_bn} has no effect in a single process (start the run with torchrun "
                  "--nproc_per_node N)")
        return _train_process(settings, device, callbacks, log)
    device = distributed.init_from_env(device)
    try:
        if distributed.rank() == 0:
            return _train_process(settings, device, callbacks, log)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            return _train_process(settings, device, callbacks, log)  # only rank 0 prints
    finally:
        torch.distributed.destroy_process_group()


def _train_process(settings, device, callbacks, log) -> dict:
    run = prepare(settings, device, log=log)
    main_process = distributed.rank() == 0
    run.output.mkdir(parents=True, exist_ok=True)
    lock, failure = None, None
    if main_process:  # one lock for the run, held by rank 0
        try:
            lock = OutputLock(run.output).acquire()
        except (OutputInUseError, OSError) as err:
            failure = err
    if not _all_ranks_ok(failure is None):
        if failure is not None:
            raise failure
        raise SettingError("rank 0 could not lock {output} {out} (see its error)",
                           out=run.output)
    try:
        return _train_locked(run, callbacks, log)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(run: TrainingRun, callbacks, log) -> dict:
    s = run.settings
    main_process = distributed.rank() == 0
    ddp = distributed.is_distributed()
    world, rank = distributed.world_size(), distributed.rank()
    out_dir, device = run.output, run.device
    if run.resume is None and s.overwrite and main_process:
        for name in ("last.pth", "best.pth", "log.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
    if isinstance(run.source, FrameSource):
        dataset = run.source.dataset
        if s.check_data:
            n = dataset.check_frames(dataset.train + dataset.query + dataset.gallery,
                                     decode=True, progress=run.progress)
            log(f"checked the data: decoded {n} frames of every tracklet")
        else:
            dataset.check_frames(dataset.query + dataset.gallery, progress=run.progress)
    torch.manual_seed(s.seed)
    model = create_model(s.model, num_classes=run.num_classes, **run.model_kwargs)
    if s.bn_momentum is not None:
        set_bn_momentum(model.backbone, s.bn_momentum)
    if ddp and s.sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    model = model.to(device)
    num_params = sum(p.numel() for p in model.parameters())
    keypoints = takes_keypoints(model)
    if isinstance(run.source, FrameSource) and keypoints and run.source.dataset.frame_keypoints(
            run.source.dataset.train[0].frames[0]) is None:
        _warn("{model} takes keypoints but {name} has none (pass {keypoints} FILE); every "
              "frame uses the prior pose", model=s.model, name=run.dataset["name"])
    autocast = run.amp[0] if run.amp is not None else contextlib.nullcontext
    net = run.source.net(model)
    loader = run.source.train_loader(s, keypoints, num_replicas=world, rank=rank)
    ranked = ranked_by(net, s.eval_feature)

    def run_eval(_model):  # frames: each process embeds a shard; a cache: each the whole
        with autocast():
            return run.source.evaluate(ranked, s.seq_len, **run.eval_kwargs)

    criterion = ReIDLoss(run.num_classes, margin=s.margin, diversity_weight=s.diversity_weight,
                         part_triplet_weight=s.part_triplet_weight, distributed=ddp)
    optimizer = build_optimizer(net, s.lr, s.weight_decay,
                                backbone_lr_mult=resolved_backbone_lr_mult(s))
    steps = len(loader) * s.epochs
    scheduler = warmup_cosine(optimizer, steps, int(resolved_warmup_epochs(s) * len(loader)))
    config = checkpoint_config(s.model, run.model_kwargs, run.num_classes, run.dataset,
                               run.clip_size, s)
    trained = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a model may leave a branch out of the loss (e.g. the
        # keypoint branch without keypoints); the graph walk costs little next to a video
        # model's step
        trained = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    trainer = Trainer(trained, loader, criterion, optimizer, scheduler, epochs=s.epochs,
                      device=device, progress=run.progress, evaluate_fn=run_eval,
                      eval_every=s.eval_every, output=out_dir, config=config,
                      save_model=model, callbacks=callbacks if main_process else (),
                      autocast=autocast if run.amp is not None else None,
                      grad_scaler=run.amp[1] if run.amp is not None else None,
                      is_main=main_process, frozen_bn_epochs=s.freeze_bn_epochs, log=log)
    if run.resume is not None:
        trainer.load_state_dict(run.resume["trainer"])
        log(f"resuming from {out_dir / 'last.pth'}: {trainer.epoch} of {s.epochs} epochs done")
    try:
        history = trainer.fit()
    except FloatingPointError as err:
        kept = (f"{out_dir / 'last.pth'} keeps epoch {trainer.epoch}" if trainer.epoch
                else "no epoch was completed")
        raise TrainingStopped(f"training stopped: {err}; {kept}") from None
    train_seconds = sum(r["seconds"] for r in history)  # resumed runs: every epoch's time
    te = time.perf_counter()
    if trainer.last_metrics is not None and trainer.epoch == s.epochs:
        metrics = dict(trainer.last_metrics)  # the last epoch was just evaluated
        eval_seconds = history[-1].get("eval_seconds", 0.0)
    else:
        metrics = run_eval(model)
        eval_seconds = time.perf_counter() - te
    metrics.update(
        model=s.model, dataset=run.dataset["name"], parameters=num_params,
        trainable_parameters=sum(p.numel() for p in net.parameters() if p.requires_grad),
        train_seconds=round(train_seconds, 1),
        seconds_per_epoch=round(train_seconds / max(1, s.epochs), 2),
        eval_seconds=round(eval_seconds, 1),
        history=history,
    )
    if trainer.best is not None:
        metrics["best"] = dict(trainer.best)
    if ddp:
        metrics["processes"] = world
    if not main_process:
        return metrics
    log(format_table(metrics))
    save_checkpoint(out_dir / "checkpoint.pth", model, config, metrics)
    write_json(out_dir / "metrics.json", metrics)
    log(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'checkpoint.pth'}"
        + (f" (best.pth: epoch {trainer.best['epoch']}, mAP "
           f"{100 * trainer.best['mAP']:.2f}%)" if trainer.best else ""))
    return metrics
