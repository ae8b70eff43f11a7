"""Training and evaluation loops shared by the CLI and the examples."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stgraph.data import PKSampler, TrainClipDataset, VideoReIDDataset
from stgraph.errors import SettingError
from stgraph.eval.evaluate import evaluate, rank_features  # noqa: F401 (the old home)
from stgraph.models.base import model_inputs, takes_keypoints, to_model  # noqa: F401 (the old home)

__all__ = [
    "EVAL_LOG_KEYS",
    "Trainer",
    "build_optimizer",
    "make_train_loader",
    "mixed_precision",
    "rng_state",
    "set_bn_momentum",
    "set_rng_state",
    "train_one_epoch",
    "warmup_cosine",
]


def make_train_loader(dataset: VideoReIDDataset, seq_len: int, height: int, width: int,
                      batch_ids: int, batch_instances: int, seed: int = 0,
                      workers: int = 0, keypoints: bool = False, flip: bool = True,
                      pad: int | None = None, erasing: float = 0.5,
                      num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """A PK-sampled loader of restricted-random training clips.

    Each batch holds ``batch_ids`` identities x ``batch_instances`` tracklets;
    items are dicts ``clip (B,T,3,H,W)``, ``pid (B,)``, ``camid (B,)``, and
    with ``keypoints`` also ``keypoints (B,T,17,3)`` (pass
    ``keypoints=takes_keypoints(model)`` for a model that takes them).
    Clips get the Bag-of-Tricks augmentations, one draw per clip (see
    :class:`~stgraph.data.TrainClipDataset`): horizontal flip with p 0.5
    (``flip``), zero padding by ``pad`` pixels + random crop back to
    ``(height, width)`` (``pad=0`` turns it off; :obj:`None`, the default, is the
    recipe's 10 px at a width of 128 px scaled to ``width``: 10 at 256 x 128, 2 at
    64 x 32), random erasing with
    probability ``erasing`` (``0`` turns it off); the defaults are the recipe's.
    Call ``loader.dataset.set_epoch(e)`` and ``loader.sampler.set_epoch(e)``
    (or :func:`train_one_epoch`, which does) before each epoch. With ``num_replicas``
    processes (``torchrun``), process ``rank`` gets its contiguous share of every global
    batch, ``batch_ids * batch_instances / num_replicas`` clips (see
    :class:`~stgraph.data.PKSampler`); each clip is drawn from ``(seed, epoch, index)``,
    so the shares put together are the single-process batch, clip for clip.

    Raises:
        ValueError: ``pad`` < 0 or ``erasing`` outside [0, 1] (and the errors of
            :class:`~stgraph.data.TrainClipDataset` and :class:`~stgraph.data.PKSampler`).
    """
    if pad is None:
        pad = round(10 * width / 128)
    clips = TrainClipDataset(dataset, seq_len, height, width, seed=seed, keypoints=keypoints,
                             flip=flip, pad=pad, erasing=erasing)
    pids = [t.pid for t in dataset.train]
    sampler = PKSampler(pids, batch_ids, batch_instances, seed=seed,
                        num_replicas=num_replicas, rank=rank)
    # persistent_workers must stay False: workers copy the dataset when they start, so a
    # persistent worker would never see set_epoch() and would resample epoch 0 forever.
    return DataLoader(clips, batch_size=sampler.share, sampler=sampler,
                      num_workers=workers, drop_last=True)


def mixed_precision(device: str | torch.device):
    """The autocast context factory and gradient scaler of ``--amp`` on ``device``.

    * CPU: ``torch.autocast("cpu", torch.bfloat16)``, no scaler (bfloat16 has float32's
      range, so gradients do not underflow). Known issue: torch 2.13's CPU bfloat16
      convolution (oneDNN) returns NaN in about a third of the calls of a stride-2
      convolution on a 4 x 2 map (a ResNet at 32 x 16 input); the run then stops at the
      NaN loss with its message. 64 x 32 and larger inputs are fine;
    * CUDA: bfloat16 where the GPU supports it (``torch.cuda.is_bf16_supported()``:
      Ampere and later), no scaler, for the same reason; on older GPUs float16 with a
      ``torch.amp.GradScaler`` (dynamic loss scaling; its state is saved in ``last.pth``).

    The losses and the evaluation's distances are computed in float32 whatever the
    autocast dtype (:class:`~stgraph.losses.ReIDLoss`,
    :func:`~stgraph.eval.compute_distance_matrix`); the Triton kernels take the autocast
    dtypes (:mod:`stgraph.kernels`).

    Returns:
        ``(autocast, grad_scaler, dtype)``: a callable returning the context the forward
        pass runs in (:class:`Trainer`'s ``autocast``), a ``GradScaler`` or :obj:`None`,
        and the autocast dtype.

    Raises:
        SettingError: (a :class:`ValueError`) a device type other than ``cpu`` and ``cuda``.
    """
    device = torch.device(device)
    if device.type == "cpu":
        dtype = torch.bfloat16
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        raise SettingError("{amp}: mixed precision runs on cpu (bfloat16) and cuda (bfloat16 "
                           "or float16), not on {device_type}; leave {amp} out",
                           device_type=device.type)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype)

    return autocast, scaler, dtype


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 5e-4,
                    backbone_lr_mult: float = 1.0) -> torch.optim.Adam:
    """Adam over the trainable parameters (Adam, lr 3.5e-4, wd 5e-4 is the field's default).

    Two parameter groups: the parameters of ``model.backbone`` (when the model
    has that attribute) at ``lr * backbone_lr_mult``, and every other parameter
    at ``lr``, both with ``weight_decay``; fine-tuning a pretrained backbone
    usually takes a lower rate than the new layers (e.g. ``backbone_lr_mult=0.1``).
    Only parameters with ``requires_grad`` are included, and an empty group is
    left out. With ``backbone_lr_mult=0`` the backbone group is left out (the
    backbone is not updated, and weight decay does not touch it), but its
    ``requires_grad`` flags are not changed: set them to ``False`` as well to save
    the backward pass through it. A scheduler such as :func:`warmup_cosine`
    scales every group's own lr.

    Raises:
        ValueError: ``backbone_lr_mult`` < 0, or no trainable parameter at all.
    """
    if not backbone_lr_mult >= 0:
        raise ValueError(f"build_optimizer: backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    backbone = getattr(model, "backbone", None)
    in_backbone = ({id(p) for p in backbone.parameters()}
                   if isinstance(backbone, nn.Module) else set())
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in in_backbone],
         "lr": lr * backbone_lr_mult},
        {"params": [p for p in trainable if id(p) not in in_backbone], "lr": lr},
    ]
    if backbone_lr_mult == 0:
        groups = groups[1:]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameter "
                         "(all have requires_grad=False, or only the backbone with "
                         "backbone_lr_mult=0)")
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


def set_bn_momentum(module: nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every batch norm in ``module`` (PyTorch's
    convention: ``running = (1 - momentum) * running + momentum * batch``).

    A backbone trained in TensorFlow keeps TF's momentum 0.99, i.e. PyTorch 0.01
    (EfficientNet-Lite here): its running statistics then follow the fine-tuned weights with
    a lag of about ``1 / momentum`` steps (100), which on a small re-ID set is several
    epochs, and an evaluation in eval mode sees statistics that are mostly ImageNet's.

    Args:
        module (nn.Module): e.g. ``model.backbone``.
        momentum (float): in :math:`(0, 1]`.

    Returns:
        int: the number of batch norms set.

    Raises:
        ValueError: ``momentum`` outside :math:`(0, 1]`.
    """
    if not 0 < momentum <= 1:
        raise ValueError(f"set_bn_momentum: momentum must be > 0 and <= 1, got {momentum}")
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = float(momentum)
    return len(norms)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 1 % to the base lr over ``warmup_steps``, then cosine decay to 0
    at ``total_steps`` (our choice for short runs; the papers use step decay over 240 epochs)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int,
                    device: str | torch.device = "cpu",
                    scheduler=None, progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns the epoch means of ``loss``, ``ce``, ``triplet``, ``acc``
    (and of the criterion's other terms): :meth:`Trainer.run_epoch` without a Trainer.

    Raises:
        FloatingPointError: the loss became NaN or infinite (the step is not applied).
        ValueError: the loader yielded no batch.
    """
    trainer = Trainer(model, loader, criterion, optimizer, scheduler, epochs=epoch + 1,
                      device=device, progress=progress, verbose=False)
    return trainer.run_epoch(epoch)


# --------------------------------------------------------------------------------------------
# The training loop as an object: epochs, evaluation during training, logs, checkpoints
# --------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """The states of every random number generator a run draws from: torch (CPU and
    CUDA), numpy's global one and Python's :mod:`random`, in a form ``torch.load`` reads
    with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "state": list(internal), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: The evaluation metrics an epoch's log record and TensorBoard get.
EVAL_LOG_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP")


class Trainer:
    r"""The training loop of ``stgraph train`` as an object: epochs, evaluation during
    training, the best model, logs and a checkpoint to resume from after every epoch.

    ``Trainer(model, loader, criterion, optimizer, scheduler, epochs=E).fit()`` trains
    epochs ``trainer.epoch .. E - 1`` (``trainer.epoch`` counts the epochs completed, 0
    for a new run); :meth:`state_dict` / :meth:`load_state_dict` hold everything the
    next epoch depends on (model, optimizer, scheduler, gradient scaler, the random number
    generators, the loader's sampler and dataset epochs, the history and the best
    evaluation), so a run restored from the state of epoch :math:`k` continues
    bit-identically to one that was never interrupted: the data pipeline draws from
    generators seeded by ``(seed, epoch, index)`` (:mod:`stgraph.data.seeding`), and the
    global generators (dropout, the loader's worker seeds) are restored.

    With ``output`` (a folder) every epoch writes, in this order:
    ``best.pth`` when the epoch was evaluated (``eval_every``) and its mAP is the best so
    far (:func:`stgraph.checkpoint.save_checkpoint`), one JSON line in ``log.jsonl``
    (the epoch's record, see :meth:`fit`), TensorBoard scalars under ``tb/`` when
    ``tensorboard`` is installed, and ``last.pth``
    (:func:`stgraph.checkpoint.save_training_state`, atomically). The checkpoints need
    ``config`` (:data:`stgraph.checkpoint.CHECKPOINT_KEYS`: ``model``, ``model_kwargs``,
    ``num_classes``).

    Places for mixed precision and multi-process training: ``autocast`` (a callable
    returning the context the forward pass runs in, e.g.
    ``lambda: torch.autocast("cpu", torch.bfloat16)``), ``grad_scaler`` (a
    ``torch.amp.GradScaler``: the backward pass and the step go through it, its state is
    saved), ``is_main`` (only the main process prints, shows progress and writes files),
    and the loader's sampler gets ``set_epoch`` whatever its type (e.g. a
    ``DistributedSampler``). In multi-process training (``model`` a
    ``DistributedDataParallel``, see :mod:`stgraph.distributed`) every process runs the
    Trainer: the states hold the wrapped module's weights (a checkpoint resumes with any
    number of processes), each step's loss is checked for NaN on all processes at once
    (all stop together), the epoch's logged terms are averaged over the processes, and
    ``evaluate_fn`` is called on every process (it may gather features).

    Args:
        model (nn.Module): what is trained (``model(clips, **inputs)`` returns the outputs
            ``criterion`` takes).
        loader (DataLoader): training batches, dicts with ``clip`` and ``pid`` (e.g.
            :func:`make_train_loader`); its ``dataset`` and ``sampler`` get ``set_epoch``.
        criterion (nn.Module): ``criterion(outputs, pids) -> (loss, terms)``, e.g.
            :class:`~stgraph.losses.ReIDLoss`.
        optimizer (Optimizer): e.g. from :func:`build_optimizer`.
        scheduler (optional): stepped after every optimizer step (e.g. :func:`warmup_cosine`).
        epochs (int): epochs in all.
        device: where batches go.
        progress (bool): a tqdm bar per epoch (the CLI shows one only on a terminal).
        verbose (bool): print one plain line per epoch.
        evaluate_fn (callable, optional): ``evaluate_fn(model) -> metrics`` (a dict with
            ``mAP``), called after every ``eval_every``-th epoch.
        eval_every (int): evaluate every that many epochs (0: never).
        output (str or Path, optional): folder for ``last.pth``, ``best.pth``, ``log.jsonl``
            and ``tb/``; nothing is written without it.
        config (dict, optional): the checkpoints' config.
        save_model (nn.Module, optional): the module the checkpoints hold (default
            ``model``; e.g. the full model when ``model`` wraps it).
        tensorboard (bool): write TensorBoard scalars when ``tensorboard`` is importable.
        callbacks (sequence): ``callback(trainer, record)`` after each epoch's files.
        log (callable): where the epoch lines go (default ``print``).
        frozen_bn_epochs (int): for that many first epochs the batch norms of the trained
            module's ``backbone`` stay in eval mode: they normalise with their pretrained
            running statistics and do not update them (their affine weights still train),
            so the first steps on a new domain do not replace ImageNet's statistics with
            those of a few P x K batches. (default: :obj:`0`)

    Raises:
        ValueError: ``epochs`` < 1, ``eval_every`` < 0 or ``frozen_bn_epochs`` < 0;
            ``output`` without ``config``.
    """

    def __init__(self, model: nn.Module, loader: DataLoader, criterion: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler=None, *, epochs: int,
                 device: str | torch.device = "cpu", progress: bool = False,
                 verbose: bool = True, evaluate_fn=None, eval_every: int = 0,
                 output: str | os.PathLike | None = None, config: dict | None = None,
                 save_model: nn.Module | None = None, tensorboard: bool = True,
                 callbacks=(), log=None, autocast=None, grad_scaler=None,
                 is_main: bool = True, frozen_bn_epochs: int = 0) -> None:
        if int(epochs) < 1:
            raise ValueError(f"Trainer: epochs must be >= 1, got {epochs}")
        if int(frozen_bn_epochs) < 0:
            raise ValueError(f"Trainer: frozen_bn_epochs must be >= 0, got {frozen_bn_epochs}")
        self.frozen_bn_epochs = int(frozen_bn_epochs)
        if int(eval_every) < 0:
            raise ValueError(f"Trainer: eval_every must be >= 0, got {eval_every}")
        if output is not None and config is None:
            raise ValueError("Trainer: output needs config (the checkpoints' config)")
        self.model, self.loader, self.criterion = model, loader, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.epochs, self.device = int(epochs), device
        self.progress, self.verbose = progress, verbose
        self.evaluate_fn, self.eval_every = evaluate_fn, int(eval_every)
        self.output = None if output is None else Path(output)
        self.config = config
        self.save_model = model if save_model is None else save_model
        self.tensorboard = tensorboard
        self.callbacks = list(callbacks)
        self.log = log or (lambda line: print(line, flush=True))
        self.autocast = autocast or contextlib.nullcontext
        self.grad_scaler = grad_scaler
        self.is_main = is_main
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.best: dict | None = None  # {"epoch", "mAP"} of best.pth
        self.last_metrics: dict | None = None  # the evaluation of the last epoch, if any

    # -- one epoch ---------------------------------------------------------------------

    def _set_epoch(self, epoch: int) -> None:
        for obj in (self.loader.dataset, self.loader.sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    @property
    def net(self) -> nn.Module:
        """The trained module (``model``, or the module a DDP wrapper holds)."""
        return getattr(self.model, "module", self.model)

    def _step(self, batch: dict, epoch: int, step: int) -> dict:
        from stgraph import distributed

        net = self.net
        clips = to_model(batch["clip"], net, self.device)
        pids = batch["pid"].to(self.device, non_blocking=True)
        with self.autocast():
            outputs = self.model(clips, **model_inputs(net, batch, self.device))
        loss, parts = self.criterion(outputs, pids)
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if distributed.is_distributed():  # all processes stop together
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not finite:
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step "
                                     f"{step + 1}; lower the learning rate (the step was not "
                                     "applied)")
        self.optimizer.zero_grad(set_to_none=True)
        self._lrs = [float(g["lr"]) for g in self.optimizer.param_groups]  # of this step
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        parts["loss"] = loss.detach()
        return parts  # 0-d tensors: read once per logged step (run_epoch)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train one pass over the loader as epoch ``epoch`` (0-based; it selects the data's
        random draws) without any bookkeeping; the epoch means of the loss terms.

        Raises:
            FloatingPointError: the loss became NaN or infinite (the step is not applied).
            ValueError: the loader yielded no batch.
        """
        self.model.train()
        if epoch < self.frozen_bn_epochs:
            backbone = getattr(self.net, "backbone", None)
            for m in backbone.modules() if isinstance(backbone, nn.Module) else ():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self._set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}  # float64 sums, on the loss's device
        n = 0
        shown = self.progress and self.is_main
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}", disable=not shown, leave=False)
        for batch in bar:
            parts = self._step(batch, epoch, n)
            for k, v in parts.items():
                v = torch.as_tensor(v).detach().to(torch.float64)
                sums[k] = sums[k] + v if k in sums else v
            n += 1
            if shown:  # the only per-step read of the loss terms (one host sync)
                loss, acc = torch.stack([parts["loss"].double(), torch.as_tensor(
                    parts.get("acc", 0.0), dtype=torch.float64, device=parts["loss"].device
                )]).tolist()
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
        if n == 0:
            raise ValueError(
                "the training loader yielded no batch: fewer tracklets than one P x K batch")
        from stgraph import distributed

        keys = sorted(sums)
        t = torch.stack([sums[k].reshape(()) for k in keys])  # one read for the epoch
        if distributed.is_distributed():  # the means over every process's clips
            if str(self.device).startswith("cuda"):
                t = t.to(self.device)
            torch.distributed.all_reduce(t)
            t = t / distributed.world_size()
        return {k: v / n for k, v in zip(keys, t.tolist(), strict=True)}

    def train_epoch(self) -> dict:
        """Train the next epoch (``self.epoch``), evaluate it when due, write its files and
        return its record: the means of every loss term, ``epoch`` (1-based), ``lr`` (each
        parameter group's learning rate at the epoch's last step), ``seconds``, and
        :data:`EVAL_LOG_KEYS` when evaluated.

        Raises:
            FloatingPointError: a NaN or infinite loss (``last.pth`` keeps the previous epoch).
        """
        epoch = self.epoch
        t0 = time.perf_counter()
        stats = self.run_epoch(epoch)
        record = {"epoch": epoch + 1, **stats,
                  "lr": self._lrs,
                  "seconds": time.perf_counter() - t0}
        metrics = None
        if self.evaluate_fn is not None and self.eval_every and (
                (epoch + 1) % self.eval_every == 0):
            te = time.perf_counter()
            metrics = self.evaluate_fn(self.save_model)
            record.update({k: float(metrics[k]) for k in EVAL_LOG_KEYS if k in metrics})
            record["eval_seconds"] = time.perf_counter() - te
        self.last_metrics = metrics
        self.history.append(record)
        self.epoch = epoch + 1
        if self.verbose and self.is_main:
            self.log(self.format_record(record))
        if self.is_main and self.output is not None:
            self._write_epoch(record, metrics)
        for callback in self.callbacks:
            callback(self, record)
        return record

    def format_record(self, record: dict) -> str:
        """The plain epoch line: ``epoch k/E  loss ...  ce ...  triplet ...  acc ...  s``."""
        skip = {"epoch", "loss", "ce", "triplet", "acc", "seconds", "lr", "eval_seconds",
                *EVAL_LOG_KEYS}
        extra = "".join(f"  {k} {v:.4f}" for k, v in record.items() if k not in skip)
        line = (f"epoch {record['epoch']}/{self.epochs}  loss {record['loss']:.4f}  "
                f"ce {record.get('ce', 0.0):.4f}  triplet {record.get('triplet', 0.0):.4f}"
                f"{extra}  acc {100 * record.get('acc', 0.0):.1f}%  "
                f"lr {record['lr'][-1]:.2e}  {record['seconds']:.1f}s")
        if "mAP" in record:
            line += (f"  | eval rank1 {100 * record['rank1']:.2f}%  "
                     f"mAP {100 * record['mAP']:.2f}%")
        return line

    # -- files -------------------------------------------------------------------------

    def _write_epoch(self, record: dict, metrics: dict | None) -> None:
        from stgraph.checkpoint import save_checkpoint, save_training_state

        out = self.output
        out.mkdir(parents=True, exist_ok=True)
        if metrics is not None and (self.best is None or metrics["mAP"] > self.best["mAP"]):
            save_checkpoint(out / "best.pth", self.save_model,
                            {**self.config, "epoch": self.epoch}, metrics)
            self.best = {"epoch": self.epoch, "mAP": float(metrics["mAP"])}
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k == "lr":
                    for i, lr in enumerate(v):
                        self._tb.add_scalar(f"lr/group{i}", lr, self.epoch)
                elif k in EVAL_LOG_KEYS:
                    self._tb.add_scalar(f"eval/{k}", v, self.epoch)
                elif k != "epoch":
                    self._tb.add_scalar(f"train/{k}", v, self.epoch)
            self._tb.flush()
        save_training_state(out / "last.pth", self.save_model, self.config, self.state_dict())

    _tb = None
    _lrs: list = []

    def _open_logs(self) -> None:
        """Rewrite ``log.jsonl`` from the history (a resumed run drops the lines of epochs
        it redoes) and open the TensorBoard writer when ``tensorboard`` is importable."""
        if not self.is_main or self.output is None:
            return
        from stgraph.checkpoint import atomic_write

        self.output.mkdir(parents=True, exist_ok=True)

        def dump(p):
            with open(p, "w") as f:
                for record in self.history:
                    f.write(json.dumps(record) + "\n")

        atomic_write(self.output / "log.jsonl", dump)
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the optional extra 'tb' is not installed
                return
            self._tb = SummaryWriter(str(self.output / "tb"), purge_step=self.epoch + 1)

    def fit(self) -> list[dict]:
        """Train the remaining epochs ``self.epoch .. epochs - 1`` (:meth:`train_epoch`).

        Returns:
            list[dict]: the history, one record per epoch completed.

        Raises:
            FloatingPointError: a NaN or infinite loss; ``last.pth`` keeps the last
                completed epoch.
        """
        self._open_logs()
        try:
            while self.epoch < self.epochs:
                self.train_epoch()
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return self.history

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything the next epoch depends on: ``model``, ``optimizer``, ``scheduler``,
        ``grad_scaler``, ``rng`` (:func:`rng_state`), ``data`` (the loader's sampler and
        dataset seeds and epochs), ``epoch`` (epochs completed), ``epochs``, ``history``
        and ``best``."""
        data = {}
        for name, obj in (("sampler", self.loader.sampler), ("dataset", self.loader.dataset)):
            data[name] = {k: int(getattr(obj, k)) for k in ("seed", "epoch")
                          if isinstance(getattr(obj, k, None), int)}
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "grad_scaler": (None if self.grad_scaler is None
                            else self.grad_scaler.state_dict()),
            "rng": rng_state(),
            "data": data,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "history": list(self.history),
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: the next :meth:`fit` trains epoch
        ``state["epoch"]`` on; ``epochs`` stays this Trainer's (a run may be extended).

        Raises:
            ValueError: the state's data seeds differ from this loader's.
        """
        for name, obj in (("sampler", self.loader.sampler), ("dataset", self.loader.dataset)):
            saved = state.get("data", {}).get(name, {})
            if "seed" in saved and getattr(obj, "seed", saved["seed"]) != saved["seed"]:
                raise ValueError(f"the saved state's {name} seed {saved['seed']} differs from "
                                 f"this loader's {obj.seed}")
            if "epoch" in saved and hasattr(obj, "set_epoch"):
                obj.set_epoch(saved["epoch"])
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.grad_scaler is not None and state.get("grad_scaler") is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best = state.get("best")
