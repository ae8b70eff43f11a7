"""Checkpoints and output folders of ``stgraph train``: reading, writing, locking.

Three kinds of file live in a run's ``--output`` folder:

* ``checkpoint.pth`` (and ``best.pth``): the trained model, :func:`save_checkpoint`'s
  format, read by :func:`load_checkpoint`, ``stgraph evaluate`` and ``stgraph plot``;
* ``last.pth``: everything a run needs to continue after a kill
  (:func:`save_training_state`, :func:`load_training_state`): the model in the format
  above plus the :class:`~stgraph.engine.Trainer`'s state (optimizer, scheduler, random
  number generators, epoch, history) and the run's settings;
* ``.lock``: the process id of the run using the folder (:class:`OutputLock`).

Every file is written to a temporary file beside its destination and renamed
(:func:`atomic_write`), so a kill never leaves a truncated file, and gets the permissions
the umask gives (``0o666 & ~umask``), as ``open()`` would.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import socket
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from stgraph.errors import NamesSettings, Setting, SettingError, SettingWarning
from stgraph.models import create_model, get_model_class
from stgraph.models.backbones.loading import not_a_torch_file

__all__ = [
    "CHECKPOINT_KEYS",
    "METRIC_KEYS",
    "RUN_FILES",
    "CheckpointError",
    "OutputInUseError",
    "OutputLock",
    "atomic_write",
    "check_output_folder",
    "load_checkpoint",
    "load_training_state",
    "read_checkpoint_file",
    "resolved_model_kwargs",
    "resume_state",
    "save_checkpoint",
    "save_training_state",
    "write_json",
]

#: Keys of metrics.json every run writes (fractions in [0, 1] except the counts).
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "num_query", "num_gallery")

#: Keys a checkpoint's ``config`` needs for :func:`load_checkpoint` to rebuild the model.
CHECKPOINT_KEYS = ("model", "model_kwargs", "num_classes")


class CheckpointError(ValueError):
    """A file that is not a readable stgraph checkpoint (truncated, empty, not ours)."""


class OutputInUseError(NamesSettings, RuntimeError):
    """An output folder locked by another live process (the message names the ``output``
    setting, :mod:`stgraph.errors`)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file beside it, then rename.

    The temporary file is created with :func:`tempfile.mkstemp` (mode 0600) and given
    ``0o666 & ~umask`` before the rename, the mode ``open()`` would have given; it is
    removed when ``write`` fails. The folder must exist.

    Returns:
        Path: ``path``.

    Raises:
        OSError: the folder is not writable (and whatever ``write`` raises).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj) -> Path:
    """``obj`` as indented JSON in ``path``, atomically (:func:`atomic_write`); the folder
    is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def dump(p):
        with open(p, "w") as f:
            json.dump(obj, f, indent=2)

    return atomic_write(path, dump)


_PLAIN = (bool, int, float, str, type(None))


def resolved_model_kwargs(name: str, kwargs: dict) -> dict:
    """Every constructor argument of model ``name`` with a plain value: those in ``kwargs``
    and the defaults of the others (not ``num_classes`` and ``pretrained``, whose weights
    are in the state dict), so a checkpoint rebuilds the same model after a default changes.
    """
    out = {}
    for key, param in inspect.signature(get_model_class(name)).parameters.items():
        if key in ("self", "num_classes", "pretrained") or param.kind in (
                param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        value = kwargs.get(key, param.default)
        if isinstance(value, tuple | list) and all(isinstance(v, _PLAIN) for v in value):
            value = list(value)
        elif not isinstance(value, _PLAIN) or value is inspect.Parameter.empty:
            continue  # e.g. a Skeleton object: left to the constructor's default
        out[key] = value
    return out


def _checked_config(config: dict) -> dict:
    missing = [k for k in CHECKPOINT_KEYS if k not in config]
    if missing:
        raise ValueError(f"checkpoint config lacks {missing}; load_checkpoint needs "
                         f"{list(CHECKPOINT_KEYS)}")
    # every constructor argument, defaults included: a later default change cannot alter it
    return {**config, "model_kwargs": resolved_model_kwargs(config["model"],
                                                            config["model_kwargs"]),
            "model_kwargs_resolved": True}


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: dict,
                    metrics: dict) -> Path:
    """Write a checkpoint in the format of ``stgraph train``, which :func:`load_checkpoint`,
    ``stgraph evaluate`` and ``stgraph plot`` read.

    The file holds ``config`` (its ``model_kwargs`` completed with the constructor's
    defaults by :func:`resolved_model_kwargs`), the model's ``state_dict`` and the
    :data:`METRIC_KEYS` of ``metrics``. It is written to a temporary file beside ``path``
    and renamed (:func:`atomic_write`), so an interrupted run never leaves a truncated
    checkpoint; the folder is created.

    Args:
        path (str or Path): the ``.pth`` file.
        model (nn.Module): the trained model.
        config (dict): how to rebuild it: ``model`` (registry name), ``model_kwargs``
            and ``num_classes``; ``stgraph evaluate`` / ``plot`` also read ``dataset``
            (a dataset config), ``seq_len``, ``height`` and ``width`` (pixels).
        metrics (dict): the evaluation, as :func:`stgraph.engine.evaluate` returns it.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: ``config`` without one of :data:`CHECKPOINT_KEYS`, or ``metrics``
            without one of :data:`METRIC_KEYS` (the message names them).
        OSError: the folder cannot be created or written.
    """
    config = _checked_config(config)
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack {missing}; a checkpoint keeps {list(METRIC_KEYS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"config": config, "state_dict": model.state_dict(),
                  "metrics": {k: metrics[k] for k in METRIC_KEYS}}
    return atomic_write(path, lambda p: torch.save(checkpoint, p))


def read_checkpoint_file(path: str | os.PathLike, device="cpu") -> dict:
    """The dict in a checkpoint file, loaded with ``weights_only=True`` (no code runs).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, truncated or corrupt, holds pickled Python
            objects (e.g. a whole module saved with ``torch.save(model)``), or is not a
            dict with ``config`` and ``state_dict`` (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the run that wrote it was "
                              "interrupted or the copy failed; use another checkpoint")
    why = not_a_torch_file(path)
    if why is not None:
        raise CheckpointError(f"{path} is not an stgraph checkpoint: {why}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise CheckpointError(
                f"{path} holds pickled Python objects (e.g. a whole nn.Module saved with "
                "torch.save(model)), which stgraph does not load; an stgraph checkpoint holds "
                "a config and a state_dict (stgraph.checkpoint.save_checkpoint writes one)"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is truncated or corrupt, not a readable checkpoint "
                              f"({first})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not an stgraph checkpoint (no 'config'/'state_dict')")
    return ckpt


def load_checkpoint(path: str | os.PathLike, device="cpu"):
    """Rebuild a model from a checkpoint written by ``stgraph train`` (``checkpoint.pth``,
    ``best.pth`` or ``last.pth``) or :func:`save_checkpoint`.

    Returns:
        ``(model, config)``; the model is in eval mode on ``device``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: (a ``ValueError``) the file is not a readable stgraph checkpoint:
            empty, truncated, a pickled module, or without ``config`` / ``state_dict``.
        ValueError: the config names an unknown model or its state dict does not fit.
    """
    path = Path(path)
    ckpt = read_checkpoint_file(path, device)
    cfg = ckpt["config"]
    if not cfg.get("model_kwargs_resolved"):
        warnings.warn(f"{path} records only the model arguments given on the command line "
                      "(written before stgraph kept them all): a model default changed since "
                      "(e.g. CTL's heatmap_temperature, part_reduce, scale_cross_attention) "
                      "rebuilds it differently; pass the old values to rebuild it as trained",
                      UserWarning, stacklevel=2)
    try:
        model = create_model(cfg["model"], num_classes=cfg["num_classes"],
                             **cfg["model_kwargs"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path}: its config does not build model "
                         f"{cfg['model']!r}: {err}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the state dict does not fit model {cfg['model']}: "
                         f"{str(err).splitlines()[0]}") from None
    return model.to(device).eval(), cfg


#: Format tag of ``last.pth``.
TRAINING_STATE_FORMAT = "stgraph-training-state-1"


def save_training_state(path: str | os.PathLike, model: torch.nn.Module, config: dict,
                        trainer_state: dict) -> Path:
    """Write ``last.pth``: the model as :func:`save_checkpoint` writes it (so
    ``stgraph evaluate`` reads it too, with empty metrics) plus ``trainer``, the
    :meth:`stgraph.engine.Trainer.state_dict` to continue from.

    Tensors shared by the model's and the trainer's state dicts are stored once.

    Raises:
        ValueError: ``config`` without one of :data:`CHECKPOINT_KEYS`.
        OSError: the folder cannot be written.
    """
    config = _checked_config(config)
    path = Path(path)
    ckpt = {"format": TRAINING_STATE_FORMAT, "config": config,
            "state_dict": model.state_dict(), "metrics": {}, "trainer": trainer_state}
    return atomic_write(path, lambda p: torch.save(ckpt, p))


def load_training_state(path: str | os.PathLike, device="cpu") -> dict:
    """The dict :func:`save_training_state` wrote: ``config``, ``state_dict``, ``trainer``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a readable training state (the message names it).
    """
    ckpt = read_checkpoint_file(path, device)
    if ckpt.get("format") != TRAINING_STATE_FORMAT or "trainer" not in ckpt:
        raise CheckpointError(f"{path} is not a training state written by stgraph train "
                              "(no 'trainer' entry); resuming needs a run's last.pth")
    return ckpt


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class OutputLock:
    """``OUTPUT/.lock``: holds the process id of the run using an output folder.

    :meth:`acquire` creates the file exclusively; a lock left by a dead process on this
    host (a killed run) is taken over with a warning, one of a live process is refused.
    Use as a context manager; :meth:`release` removes the file.

    Raises:
        OutputInUseError: (from :meth:`acquire`) a live process holds the lock, or a
            process on another host does (the message says which and how to proceed).
        OSError: the folder cannot be written.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / ".lock"
        self.held = False

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname()}

    def acquire(self) -> OutputLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._check_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._info(), f)
            self.held = True
            return self
        raise OutputInUseError("cannot take the lock {lock}: another run keeps taking it",
                               lock=self.path)

    def check_not_in_use(self) -> dict:
        """Raise :class:`OutputInUseError` if a live process (or one on another host)
        holds the lock; returns the lock file's ``pid`` / ``host`` (empty without one).
        Called before a folder's files are judged, so that a running run is reported as
        running, not as an interrupted one."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not isinstance(info, dict):
            info = {}
        pid, host = info.get("pid"), info.get("host")
        folder = self.path.parent
        if isinstance(pid, int) and host not in (None, socket.gethostname()):
            raise OutputInUseError(
                "{output} {folder} is in use by process {pid} on host {host} (lock file "
                "{lock}); wait for that run, choose another {output}, or delete the "
                "lock file if that run is dead", folder=folder, pid=pid, host=host,
                lock=self.path)
        if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
            raise OutputInUseError(
                "{output} {folder} is in use by a running process ({pid}, lock file "
                "{lock}); wait for that run to finish or choose another {output}",
                folder=folder, pid=pid, lock=self.path)
        return info

    def _check_stale(self) -> None:
        pid = self.check_not_in_use().get("pid")
        warnings.warn(SettingWarning("taking over the stale lock {lock} of process {pid}, "
                                     "which is no longer running (an interrupted run)",
                                     lock=self.path, pid=pid), stacklevel=3)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------ run folders

#: Files of a run that a new run (without ``resume``) would replace.
RUN_FILES = ("checkpoint.pth", "metrics.json", "last.pth", "best.pth", "log.jsonl")


def check_output_folder(out: str | os.PathLike) -> None:
    """Refuse an output folder that cannot become a writable folder, before any work.

    Raises:
        SettingError: it is a file, a parent is a file, or the first existing folder on
            its path is not writable (the message names the ``output`` setting).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SettingError("{output} {out} is a file, not a folder", out=out)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise SettingError("{output} {out}: {probe} is a file, so the folder cannot be "
                           "created", out=out, probe=probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SettingError("{output} {out}: {probe} is not writable", out=out, probe=probe)
    try:  # access() trusts the mode bits; /proc, a read-only mount... refuse only on trying
        with tempfile.TemporaryDirectory(dir=probe, prefix=".stgraph-probe-"):
            pass
    except OSError as err:
        raise SettingError("{output} {out}: cannot create a folder in {probe} ({why})",
                           out=out, probe=probe, why=err.strerror or err) from None


def resume_state(out: str | os.PathLike, settings: dict, resume: bool, overwrite: bool,
                 epochs: int, may_differ: tuple[str, ...] = (), check_lock: bool = True):
    """The training state a run in folder ``out`` continues from, or :obj:`None` for a
    new run: the rules of an output folder.

    * A folder a live run holds (:class:`OutputLock`) is refused first (``check_lock``), so
      that a running run is reported as running, not as an interrupted one.
    * With ``resume``, ``out/last.pth`` must exist, its recorded settings
      (``config["args"]``) must equal ``settings`` but for the names in ``may_differ``
      (a setting newer than ``last.pth`` passes at its default, False or None), and it
      must have at most ``epochs`` epochs done.
    * Without it, a folder that holds a run (:data:`RUN_FILES`) is refused unless
      ``overwrite``.

    Raises:
        SettingError: ``resume`` without ``last.pth``, settings differing from the saved
            run's (each named with both values), more epochs done than ``epochs``, or,
            without ``resume`` / ``overwrite``, a folder that already holds a run.
        OutputInUseError: a live process holds the folder.
        CheckpointError: ``last.pth`` is not a training state.
    """
    out = Path(out)
    last = out / "last.pth"
    if check_lock:
        OutputLock(out).check_not_in_use()
    if resume:
        if not last.is_file():
            raise SettingError("{resume}: {last} not found, nothing to continue (run without "
                               "{resume} to start)", last=last)
        state = load_training_state(last)
        saved = state["config"].get("args", {})
        differ = []
        for key in sorted(set(saved) | set(settings)):
            if key in may_differ or saved.get(key) == settings.get(key):
                continue
            if key not in saved and settings.get(key) in (False, None):
                continue  # a setting newer than last.pth, at its default
            differ.append((key, settings.get(key), saved.get(key)))
        if differ:
            parts = {f"k{i}": Setting(k) for i, (k, _, _) in enumerate(differ)}
            template = "; ".join(f"{{k{i}}} {{now{i}!r}} (last.pth: {{saved{i}!r}})"
                                 for i in range(len(differ)))
            values = {**parts, **{f"now{i}": v for i, (_, v, _) in enumerate(differ)},
                      **{f"saved{i}": v for i, (_, _, v) in enumerate(differ)}}
            raise SettingError("{resume}: the settings differ from the run in {out}: "
                               + template + ". Only {epochs} may change; give the same "
                               "settings, or {overwrite} to start again", out=out, **values)
        done = state["trainer"]["epoch"]
        if done > epochs:
            raise SettingError("{resume}: {last} has {done} epochs done, more than "
                               "{epochs} {n}", last=last, done=done, n=epochs)
        return state
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        if "checkpoint.pth" in present or "metrics.json" in present:
            what = "a finished run"
        else:
            what = "an interrupted run (add {resume} to continue it)"
        raise SettingError("{output} {out} holds " + what + ": {present}; pass {overwrite} "
                           "to replace it or choose another {output}", out=out,
                           present=", ".join(present))
    return None
