"""Command line: ``stgraph train``, ``evaluate``, ``plot``, ``cache``, ``extract``, ``rank``
and ``export`` (also ``python -m stgraph``).

``extract``, ``rank`` and ``export`` live in :mod:`stgraph.cli_inference`.

Examples::

    stgraph train --model stgcn --dataset synthetic --backbone resnet18 \\
        --height 128 --width 64 --seq-len 4 --epochs 10 --output runs/synthetic-stgcn
    stgraph train ... --output runs/synthetic-stgcn --resume   # after a kill: continue
    stgraph train ... --amp        # mixed precision (bfloat16 autocast; float16 on old GPUs)
    torchrun --nproc_per_node 4 -m stgraph train ... --sync-bn   # 4 processes, torch DDP
    stgraph evaluate --checkpoint runs/synthetic-stgcn/checkpoint.pth
    stgraph train --model tp_mlp --dataset synthetic --backbone resnet18 \\
        --model-arg hidden=512 --model-arg dropout=0.1 --output runs/synthetic-tp-mlp
    stgraph plot --checkpoint runs/synthetic-sta/checkpoint.pth --what attention \\
        --out attention.png

``--model-arg KEY=VALUE`` (repeatable) sets any constructor argument of the model that has
no flag of its own; the checkpoint records every argument, so ``evaluate`` and ``plot``
rebuild the model as trained.

This module is the argument layer: the training loop is :class:`stgraph.engine.Trainer`,
checkpoints and output folders are :mod:`stgraph.checkpoint`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import errno
import inspect
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from stgraph import distributed
from stgraph.checkpoint import (
    CHECKPOINT_KEYS,
    METRIC_KEYS,
    OutputInUseError,
    OutputLock,
    load_checkpoint,
    load_training_state,
    resolved_model_kwargs,
    save_checkpoint,
    write_json,
)
from stgraph.data import TestClipDataset, create_dataset, get_dataset_class, list_datasets
from stgraph.engine import (
    Trainer,
    build_optimizer,
    evaluate,
    make_train_loader,
    mixed_precision,
    takes_keypoints,
    warmup_cosine,
)
from stgraph.eval import RANK_PROTOCOLS
from stgraph.losses import ReIDLoss
from stgraph.models import create_model, get_model_class, list_models
from stgraph.models.backbones import list_backbones
from stgraph.models.base import _no_attention_message, ranked_by
from stgraph.models.graphs import models_with_graphs
from stgraph.models.registry import check_model_kwargs
from stgraph.viz import MODEL_PLOTS, plot_model_attention, plot_model_graph, plot_ranking

__all__ = ["CHECKPOINT_KEYS", "METRIC_KEYS", "main", "build_parser", "load_checkpoint",
           "resolved_model_kwargs", "save_checkpoint"]

#: What ``stgraph --help`` says (plain text: no reST markup).
DESCRIPTION = """\
Spatial-temporal graph models for video person re-identification: train, evaluate,
plot and cache. 'stgraph COMMAND --help' lists a command's options with their defaults;
'python -m stgraph' is the same command."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every default shown: ``(default: X)`` appended unless the help already
    says what the default is (an unset optional value, :obj:`None`, is described there)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS
                or default is False or default == [] or action.option_strings == []
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def _int_at_least(low: int, why: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}{why}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _float_in(low: float, high: float | None = None, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not (value > low if low_open else value >= low) or (
            high is not None and not value <= high)
        if bad or value != value:
            rng = (f"> {low}" if low_open else f">= {low}") + (
                f" and <= {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


_POSITIVE = _int_at_least(1)
_NON_NEGATIVE = _int_at_least(0)
_TRIPLET = (": the batch-hard triplet loss needs at least 2 identities per batch and 2 "
            "tracklets per identity (with 1 it is 0 and silently trains nothing)")

def _add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--dataset", required=required, choices=list_datasets(),
                   help="dataset name")
    p.add_argument("--root", help="dataset root folder (not needed for synthetic)")
    p.add_argument("--split-file", help="split json (prid2011, ilidsvid)")
    p.add_argument("--split-id", type=int, default=None, help="index into the split file")
    p.add_argument("--keypoints", help="COCO keypoint results file (prid2011); synthetic "
                   "data carries its own ground-truth keypoints")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stgraph", description=DESCRIPTION,
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (stgraph COMMAND --help)")

    def add(name, **kw):
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kw)

    t = add("train", help="train a model, evaluate it, write metrics and a checkpoint "
                          "(last.pth every epoch: --resume continues a killed run)",
            description="Train a model, evaluate it, write OUTPUT/metrics.json and\n"
                        "OUTPUT/checkpoint.pth; OUTPUT/last.pth after every epoch (--resume),\n"
                        "OUTPUT/log.jsonl one line per epoch.")
    t.add_argument("--model", required=True, choices=list_models(),
                   help="registered model")
    _add_data_args(t, required=True)
    t.add_argument("--backbone", default="resnet50", choices=list_backbones(),
                   help="backbone network")
    t.add_argument("--last-stride", type=_POSITIVE, default=1,
                   help="stride of the backbone's last stage")
    t.add_argument("--pretrained", help="'imagenet' (the weights packaged for "
                   "efficientnet_lite0/1/2, extra 'pretrained') or the local path of an "
                   "ImageNet state dict (.pth; torchvision's for the ResNets)")
    t.add_argument("--height", type=_POSITIVE, default=256, help="input height in pixels")
    t.add_argument("--width", type=_POSITIVE, default=128, help="input width in pixels")
    t.add_argument("--seq-len", type=_POSITIVE, default=8, help="frames per clip T")
    t.add_argument("--epochs", type=_POSITIVE, default=10,
                   help="epochs in all (with --resume: may be raised to train on)")
    t.add_argument("--batch-ids", type=_int_at_least(2, _TRIPLET), default=8,
                   help="identities per batch P")
    t.add_argument("--batch-instances", type=_int_at_least(2, _TRIPLET), default=4,
                   help="tracklets per identity K")
    t.add_argument("--lr", type=_float_in(0, low_open=True), default=3.5e-4,
                   help="learning rate (Adam)")
    t.add_argument("--weight-decay", type=_float_in(0), default=5e-4, help="weight decay")
    t.add_argument("--warmup-epochs", type=_float_in(0), default=1.0,
                   help="epochs of linear warm-up before the cosine decay")
    t.add_argument("--num-patches", type=_POSITIVE, default=4, help="STGCN patches per frame")
    t.add_argument("--num-layers", type=int, default=None,
                   help="graph layers per branch / scale (STGCN M, CTL L; default 2)")
    t.add_argument("--tau", type=int, default=None, help="CTL 3D-GCL window (default 3)")
    t.add_argument("--alpha", type=float, default=None,
                   help="CTL cross-scale weight, eq. 7 (default 0.3)")
    t.add_argument("--heatmap-temperature", type=float, default=None,
                   help="CTL heatmap softmax temperature (default 0.1; 1 is the paper's)")
    t.add_argument("--heatmap-sigma", type=float, default=None,
                   help="CTL heatmap Gaussian sigma in feature cells (default 1)")
    t.add_argument("--part-reduce", choices=["sum", "mean"], default=None,
                   help="CTL: parts summed (the paper; default) or averaged in V_f^a")
    t.add_argument("--part-grad-scale", type=float, default=None,
                   help="CTL: factor on the part branch's gradient into the backbone "
                        "(0 detaches it; default 1)")
    t.add_argument("--normalize-parts", action=argparse.BooleanOptionalAction, default=None,
                   help="CTL: parts rescaled to the global feature's norm in the fusion")
    t.add_argument("--scale-cross-attention", action=argparse.BooleanOptionalAction,
                   default=None, help="CTL: 1/sqrt(d) in the cross-scale attention "
                                      "(default on; off is the paper's)")
    t.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor argument of the model, repeatable (e.g. "
                        "--model-arg dropout=0.1 --model-arg hidden=512); VALUE is read as a "
                        "Python literal (number, True/False/None, list, quoted string), else "
                        "as a string; not with the argument's own flag (--tau and "
                        "--model-arg tau=3 is an error), and not for --backbone, --last-stride, "
                        "--pretrained, --seq-len, which the run uses too")
    t.add_argument("--diversity-weight", type=_float_in(0), default=1.0,
                   help="weight of CTL's diversity loss, eq. 9")
    t.add_argument("--margin", type=_float_in(0), default=0.3,
                   help="margin of the batch-hard triplet losses (0.4 in RRU's paper)")
    t.add_argument("--part-triplet-weight", type=_float_in(0), default=1.0,
                   help="weight of the part triplet loss of models that output part "
                        "features for it (RRU)")
    t.add_argument("--backbone-lr-mult", type=_float_in(0), default=None,
                   help="learning-rate multiplier of the backbone (default 0.1 when "
                        "fine-tuning with --pretrained, else 1; 1 for the backbone's tail "
                        "trained from a --feature-cache cut inside it: on cuhk03-pair1 TP "
                        "ranks 30.0 %% rank-1 with it, 17.0 %% at 0.1)")
    t.add_argument("--freeze-bn-epochs", type=_NON_NEGATIVE, default=0,
                   help="keep the backbone's batch-norm statistics (its pretrained running "
                        "means and variances) frozen for the first N epochs (default 0)")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    t.add_argument("--pad", type=_NON_NEGATIVE, default=None,
                   help="zero padding in pixels before the random crop (default: the "
                        "recipe's 10 px per 128 px of --width, 10 at 256 x 128; 0: no crop; "
                        "not with --feature-cache)")
    t.add_argument("--erasing", type=_float_in(0, 1), default=0.5,
                   help="random erasing probability (0: off; pixels: not with --feature-cache)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the model's initialisation and of every random draw")
    t.add_argument("--output", required=True,
                   help="folder for metrics.json, checkpoint.pth, last.pth, best.pth, "
                        "log.jsonl (and tb/ with the extra 'tb'); one run at a time (a lock "
                        "file), a finished run is not overwritten without --overwrite")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --output from last.pth; every setting but "
                        "--epochs (and --workers, --no-progress, --check-data) must be the "
                        "same")
    t.add_argument("--overwrite", action="store_true",
                   help="start again in an --output that holds a run (finished or not)")
    t.add_argument("--eval-every", type=_NON_NEGATIVE, default=0, metavar="N",
                   help="evaluate every N epochs during training and keep the best model "
                        "by mAP as best.pth (0: only after training)")
    t.add_argument("--check-data", action="store_true",
                   help="decode every frame of every tracklet before training (without it "
                        "only the test tracklets' file headers are checked)")
    t.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True) (and "
                        "CUBLAS_WORKSPACE_CONFIG on CUDA): two runs with one seed give the "
                        "same weights and metrics, slower on GPUs")
    t.add_argument("--amp", action="store_true",
                   help="mixed precision: bfloat16 autocast on the CPU and on GPUs that "
                        "support it, float16 with a gradient scaler on older GPUs; losses "
                        "and distances in float32")
    t.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: batch norm statistics over the global batch of "
                        "all processes (a warning and no effect in one process)")
    _add_eval_args(t)

    t.add_argument("--feature-cache", metavar="DIR",
                   help="train from the backbone maps cached in DIR by 'stgraph cache': "
                        "with a cache cut inside the backbone (the partial protocol) the "
                        "backbone's tail after the cut trains with the head at "
                        "--backbone-lr-mult; with --cut end (the frozen protocol) the head "
                        "alone. The cache must have been made with this run's dataset, "
                        "--backbone, --pretrained, --last-stride, --height and --width")
    t.add_argument("--cut", default=None,
                   help="with --feature-cache: the cut the cache must have (default: the "
                        "cache's own); a cache made at another cut is refused")

    c = add("cache", help="run a frozen backbone once over every frame (and its "
                                     "mirror image) and store the maps for 'train "
                                     "--feature-cache'")
    _add_data_args(c, required=True)
    c.add_argument("--backbone", default="efficientnet_lite0", choices=list_backbones(),
                   help="backbone network")
    c.add_argument("--pretrained", default="imagenet",
                   help="'imagenet' or the local path of an ImageNet state dict")
    c.add_argument("--last-stride", type=_POSITIVE, default=1,
                   help="stride of the backbone's last stage")
    c.add_argument("--height", type=_POSITIVE, default=256, help="input height in pixels")
    c.add_argument("--width", type=_POSITIVE, default=128, help="input width in pixels")
    c.add_argument("--cut", default=None,
                   help="where in the backbone to take the maps: 'end' (its output, the "
                        "frozen protocol) or a point inside it, after which 'train "
                        "--feature-cache' trains the backbone's tail (the partial protocol): "
                        "resnets: layer4 (default), layer3; efficientnet_lite: head "
                        "(default: the head conv's input), last_stage")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--batch", type=_POSITIVE, default=32, help="frames per backbone call")
    c.add_argument("--workers", type=_NON_NEGATIVE, default=1, help="frame reader processes")
    c.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    c.add_argument("--protocol", default="torchreid", choices=list(RANK_PROTOCOLS),
                   help="for mars: which gallery the cache holds")
    c.add_argument("--overwrite", action="store_true", help="replace a cache in --out")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = add("evaluate", help="evaluate a checkpoint written by 'stgraph train'",
            description="Evaluate a checkpoint written by 'stgraph train' (checkpoint.pth,\n"
                        "best.pth or last.pth) on its dataset; --dataset / --root override\n"
                        "the dataset recorded in the checkpoint.")
    e.add_argument("--checkpoint", required=True, help="the .pth file")
    _add_data_args(e, required=False)
    e.add_argument("--output", help="folder to write metrics.json into (optional)")
    _add_eval_args(e)

    pl = add("plot", help="plot a trained model's graphs, attention maps or rankings")
    pl.add_argument("--checkpoint", required=True, help="the .pth file")
    _add_data_args(pl, required=False)
    pl.add_argument("--what", required=True, choices=[*MODEL_PLOTS, "attention", "ranking"],
                    help="a graph of the model, its attention maps (sta, drsta, rru) or the "
                         "ranking of a query")
    pl.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg)")
    pl.add_argument("--index", type=_NON_NEGATIVE, default=0, help="query tracklet to plot")
    pl.add_argument("--layer", help="graph layer to plot (default: the first that fits)")
    pl.add_argument("--frame", type=int, default=None, help="frame / window (CTL graphs)")
    pl.add_argument("--top-k", type=_POSITIVE, default=None,
                    help="edges drawn (graph plots, default 20) or gallery tracklets (ranking, "
                         "default 5)")
    _add_eval_args(pl)

    from stgraph import cli_inference  # extract, rank, export

    for add in (cli_inference.add_extract_parser, cli_inference.add_rank_parser,
                cli_inference.add_export_parser):
        add(sub)
    return parser


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"],
                   help="distance between tracklet features (default cosine: higher mAP "
                        "than euclidean in all 11 rows of docs/results.md's frozen table, "
                        "higher rank-1 in 9; fast-reid's test default, and Bag of Tricks "
                        "normalises the features before ranking)")
    p.add_argument("--eval-feature", default=None, choices=["post-bnneck", "pre-bnneck"],
                   help="the feature ranked: the embedding after the BNNeck (default, Bag of "
                        "Tricks' test feature) or the branch features before it (the "
                        "triplet loss's)")
    p.add_argument("--pool", default="mean", choices=["mean", "max"],
                   help="pooling of clip features per tracklet")
    p.add_argument("--test-batch", type=_POSITIVE, default=32, help="clips per test batch")
    p.add_argument("--workers", type=_NON_NEGATIVE, default=2,
                   help="data loader worker processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--protocol", default="torchreid", choices=list(RANK_PROTOCOLS),
                   help="evaluation protocol; for mars also which gallery is used")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are shown only when stdout is a terminal; "
                        "the dataset summary and the epoch lines are always printed)")


def _device(name: str) -> torch.device:
    """``--device``: ``auto`` is CUDA where available, else the CPU.

    Raises:
        ValueError: not a device name, or a CUDA device on a machine without CUDA (or
            without that many GPUs).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device (cpu, cuda, cuda:1 or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "no GPU found" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"--device {name}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}, {build}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _dataset_config(args: argparse.Namespace, base: dict | None = None) -> dict:
    cfg = dict(base or {})
    if args.dataset is not None:
        cfg = {"name": args.dataset}
    for key in ("root", "split_file", "split_id", "keypoints"):
        val = getattr(args, key, None)
        if val is not None:
            # absolute: a checkpoint's dataset is found from any working folder
            cfg[key] = os.path.abspath(val) if key != "split_id" else val
    if cfg.get("name") != "synthetic" and cfg.get("name") is not None and "root" not in cfg:
        raise SystemExit(f"stgraph: error: --root is required for --dataset {cfg['name']}")
    if cfg.get("name") == "synthetic":
        given = [f"--{k.replace('_', '-')}" for k in ("root", "split_file", "split_id")
                 if getattr(args, k, None) is not None]
        if given:
            raise SystemExit(f"stgraph: error: {', '.join(given)} is not for --dataset "
                             "synthetic, which is generated (no files)")
    if cfg.get("name") == "synthetic" and "keypoints" in cfg:
        raise SystemExit("stgraph: error: --keypoints is not for --dataset synthetic, "
                         "which carries its own ground-truth keypoints")
    return cfg


def _with_protocol(cfg: dict, protocol: str) -> dict:
    """``cfg`` plus ``protocol`` for a dataset whose lists depend on it (MARS's gallery)."""
    if "protocol" in inspect.signature(get_dataset_class(cfg["name"])).parameters:
        return {**cfg, "protocol": protocol}
    return cfg


def _load_dataset(cfg: dict, protocol: str | None = None):
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    if protocol is not None and "protocol" in inspect.signature(
            get_dataset_class(cfg["name"])).parameters:
        kwargs["protocol"] = protocol  # e.g. MARS: which gallery the protocol uses
    return create_dataset(cfg["name"], **kwargs)


_PLAIN = (bool, int, float, str, type(None))


#: Model arguments that are also settings of the run (the data loader, the feature cache,
#: the optimiser): only their own flags set them, never ``--model-arg``.
_RUN_SETTINGS = {"backbone": "--backbone", "last_stride": "--last-stride",
                 "pretrained": "--pretrained", "seq_len": "--seq-len"}


def _parse_model_args(pairs: list[str]) -> dict:
    """``["K=4", "rows=[1, 2]"]`` -> ``{"K": 4, "rows": [1, 2]}`` (:func:`ast.literal_eval`,
    else the string itself); ``-`` in a key reads as ``_``."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        if key in out:
            raise ValueError(f"--model-arg {key} is given twice")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        if isinstance(value, tuple):
            value = list(value)
        if not (isinstance(value, _PLAIN) or isinstance(value, list) and all(
                isinstance(v, _PLAIN) for v in value)):
            raise ValueError(f"--model-arg {key}={text}: a value must be a number, a string, "
                             "True/False/None or a list of them (the checkpoint records it), "
                             f"got a {type(value).__name__}")
        out[key] = value
    return out


def _model_kwargs(name: str, args: argparse.Namespace) -> dict:
    """The model's constructor arguments from the flags and ``--model-arg`` pairs.

    Raises:
        ValueError: a ``--model-arg`` key the model's constructor does not take (the
            message lists those it takes), one of :data:`_RUN_SETTINGS`, or one also set
            by its own flag.
    """
    candidates = {
        "backbone": args.backbone, "last_stride": args.last_stride,
        "pretrained": args.pretrained, "seq_len": args.seq_len,
        "num_patches": args.num_patches, "num_layers": args.num_layers, "tau": args.tau,
        "alpha": args.alpha, "heatmap_temperature": args.heatmap_temperature,
        "heatmap_sigma": args.heatmap_sigma, "part_reduce": args.part_reduce,
        "part_grad_scale": args.part_grad_scale, "normalize_parts": args.normalize_parts,
        "scale_cross_attention": args.scale_cross_attention,
    }
    params = inspect.signature(get_model_class(name)).parameters
    kwargs = {k: v for k, v in candidates.items() if k in params and v is not None}
    extra = _parse_model_args(getattr(args, "model_arg", None) or [])
    takes = [k for k, p in params.items() if k not in ("self", "num_classes") and p.kind not in (
        p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    given = getattr(args, "_given", None)  # dests set on the command line (see main)
    for key in extra:
        if key in _RUN_SETTINGS:
            raise ValueError(f"--model-arg {key}: set it with {_RUN_SETTINGS[key]} (the run "
                             "uses it too)")
        if key == "num_classes":
            raise ValueError("--model-arg num_classes: the number of classes is the dataset's "
                             "number of training identities")
        if key not in takes:
            raise ValueError(f"--model-arg {key}: model {name} takes no argument {key!r}; its "
                             f"constructor arguments: {', '.join(takes)}")
        flag = "--" + key.replace("_", "-")
        if key in candidates and (key in given if given is not None else
                                  candidates[key] is not None):
            raise ValueError(f"{flag} and --model-arg {key} both set {key}; give one")
        try:  # the value as the constructor's type (an int for a float argument, ...)
            extra[key] = check_model_kwargs(name, {key: extra[key]})[key]
        except ValueError as e:
            raise ValueError(f"--model-arg {key}={extra[key]!r}: {e}") from None
    return {**kwargs, **extra}


def _bars(args: argparse.Namespace) -> bool:
    """Progress bars: not with ``--no-progress``, and only when stdout is a terminal (in a
    log file tqdm's redrawn lines would run into the epoch lines)."""
    return not args.no_progress and sys.stdout.isatty()


def _write_metrics(out_dir: Path, metrics: dict) -> None:
    write_json(out_dir / "metrics.json", metrics)


def format_table(metrics: dict) -> str:
    """Rank-1/5/10/20 and mAP in percent, as a small text table."""
    cols = ["rank1", "rank5", "rank10", "rank20", "mAP"]
    head = " | ".join(f"{c:>7}" for c in cols)
    row = " | ".join(f"{100 * metrics[c]:6.2f}%" for c in cols)
    rule = "-" * len(head)
    info = f"{metrics['num_query']} queries vs {metrics['num_gallery']} gallery tracklets"
    if "protocol" in metrics:
        info += f", {metrics['protocol']} protocol" + (", re-ranked" if metrics.get("rerank")
                                                       else "")
    return f"{info}\n{head}\n{rule}\n{row}"


#: Settings ``--resume`` lets differ from the interrupted run's (they do not change the
#: weights).
RESUME_MAY_DIFFER = ("epochs", "resume", "overwrite", "no_progress", "workers", "check_data")

#: Arguments that hold paths: recorded absolute.
_PATH_ARGS = ("root", "split_file", "keypoints", "output", "feature_cache")

#: Files of a run that a new run (without --resume) would replace.
_RUN_FILES = ("checkpoint.pth", "metrics.json", "last.pth", "best.pth", "log.jsonl")


class TrainingStopped(Exception):
    """A run stopped on purpose with a message for the user (e.g. a NaN loss)."""


def _recorded_args(args: argparse.Namespace) -> dict:
    out = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    for key in _PATH_ARGS:
        if out.get(key) is not None:
            out[key] = os.path.abspath(out[key])
    if out.get("pretrained") not in (None, "imagenet") and os.path.exists(out["pretrained"]):
        out["pretrained"] = os.path.abspath(out["pretrained"])
    return out


def _check_output(out: Path) -> None:
    """Refuse an ``--output`` that cannot become a writable folder, before any work.

    Raises:
        ValueError: it is a file, a parent is a file, or the first existing folder on its
            path is not writable.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file, not a folder")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"--output {out}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--output {out}: {probe} is not writable")
    try:  # access() trusts the mode bits; /proc, a read-only mount... refuse only on trying
        with tempfile.TemporaryDirectory(dir=probe, prefix=".stgraph-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"--output {out}: cannot create a folder in {probe} "
                         f"({err.strerror or err})") from None


def _resume_state(args: argparse.Namespace, out: Path):
    """The training state to continue from (``--resume``), or :obj:`None` for a new run.

    Raises:
        ValueError: ``--resume`` without ``last.pth``, settings differing from the saved
            run's (named), or, without ``--resume`` / ``--overwrite``, an output folder
            that already holds a run.
    """
    last = out / "last.pth"
    if distributed.rank() == 0:  # (rank 0 takes the lock; the other ranks must not see it)
        OutputLock(out).check_not_in_use()  # a live run: say so, not "an interrupted run"
    if args.resume:
        if not last.is_file():
            raise ValueError(f"--resume: {last} not found, nothing to continue (run without "
                             "--resume to start)")
        state = load_training_state(last)
        saved = state["config"].get("args", {})
        now = _recorded_args(args)
        differ = []
        for key in sorted(set(saved) | set(now)):
            if key in RESUME_MAY_DIFFER or saved.get(key) == now.get(key):
                continue
            if key not in saved and now.get(key) in (False, None):
                continue  # a setting newer than last.pth, at its default
            flag = "--" + key.replace("_", "-")
            differ.append(f"{flag} {now.get(key)!r} (last.pth: {saved.get(key)!r})")
        if differ:
            raise ValueError(f"--resume: the settings differ from the run in {out}: "
                             + "; ".join(differ) + ". Only --epochs may change; give the "
                             "same settings, or --overwrite to start again")
        done = state["trainer"]["epoch"]
        if done > args.epochs:
            raise ValueError(f"--resume: {last} has {done} epochs done, more than "
                             f"--epochs {args.epochs}")
        return state
    present = [name for name in _RUN_FILES if (out / name).exists()]
    if present and not args.overwrite:
        if "checkpoint.pth" in present or "metrics.json" in present:
            what = "a finished run"
        else:
            what = "an interrupted run (add --resume to continue it)"
        raise ValueError(f"--output {out} holds {what}: {', '.join(present)}; pass "
                         "--overwrite to replace it or choose another --output")
    return None


def _deterministic(device: torch.device) -> None:
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _pause_for_tests():
    """A callback for the kill-and-resume test: ``STGRAPH_TEST_PAUSE_AFTER_EPOCH=k`` makes
    the run wait after epoch ``k``'s files are written, so the test can SIGKILL it there."""
    at = os.environ.get("STGRAPH_TEST_PAUSE_AFTER_EPOCH")
    if not at:
        return []

    def pause(trainer, record):
        if record["epoch"] == int(at):
            print(f"paused after epoch {at} (STGRAPH_TEST_PAUSE_AFTER_EPOCH)", flush=True)
            time.sleep(600)

    return [pause]


def _train(args: argparse.Namespace) -> int:
    """``stgraph train``: every check first, then :class:`~stgraph.engine.Trainer`.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this: it joins the process
    group (:func:`stgraph.distributed.init_from_env`: gloo on the CPU, nccl and
    ``cuda:LOCAL_RANK`` on GPUs), trains its share of each global batch in
    ``DistributedDataParallel``, and takes part in the evaluation; only rank 0 prints
    to stdout, shows progress, takes the lock and writes files. The output folder must be
    on a file system every process sees (``--resume`` reads ``last.pth`` in each).

    Raises:
        ValueError, OSError, OutputInUseError: a setting, the data or the output folder is
            wrong (``main`` prints one line), e.g. ``--amp`` on a device other than cpu
            or cuda, a batch ``P x K`` that the processes cannot share evenly, or
            ``--device cuda:1`` under torchrun.
        TrainingStopped: the loss became NaN (``last.pth`` keeps the last good epoch).
    """
    device = _device(args.device)
    if not distributed.launched_by_torchrun():
        if args.sync_bn:
            print("stgraph: warning: --sync-bn has no effect in a single process (start "
                  "the run with torchrun --nproc_per_node N)", file=sys.stderr)
        return _train_process(args, device)
    device = distributed.init_from_env(device)
    try:
        if distributed.rank() == 0:
            return _train_process(args, device)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            return _train_process(args, device)  # only rank 0 prints
    finally:
        torch.distributed.destroy_process_group()


def _all_ranks_ok(ok: bool) -> bool:
    """Whether every process reports ``ok`` (a collective; True in one process)."""
    if not distributed.is_distributed():
        return ok
    flag = torch.tensor([1.0 if ok else 0.0])
    if torch.distributed.get_backend() == "nccl":
        flag = flag.cuda()
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def _train_process(args: argparse.Namespace, device: torch.device) -> int:
    main_process = distributed.rank() == 0
    amp = mixed_precision(device) if args.amp else None  # --amp on mps: fail first
    if args.deterministic:
        _deterministic(device)
    bars = _bars(args) and main_process
    data_cfg = _dataset_config(args)
    model_kwargs = _model_kwargs(args.model, args)  # bad --model-arg: fail before any work
    share = args.batch_ids * args.batch_instances
    if share % distributed.world_size():
        raise ValueError(f"--batch-ids x --batch-instances = {share} clips per step cannot be "
                         f"shared by {distributed.world_size()} processes: make it a multiple "
                         "of the number of processes")
    out_dir = Path(args.output).absolute()
    _check_output(out_dir)
    if args.cut is not None and not args.feature_cache:
        raise ValueError("--cut is a setting of --feature-cache (the cut its maps were taken "
                         "at); without a cache the whole backbone runs")
    if args.feature_cache and args.check_data:
        raise ValueError("--check-data reads the frames; with --feature-cache training reads "
                         "the cache only (check the frames with 'stgraph cache')")
    cache = None
    if args.feature_cache:
        from stgraph.cache import FeatureCache, cache_settings

        cache = FeatureCache(args.feature_cache)
        run_cfg = _with_protocol(data_cfg, args.protocol)
        if not takes_keypoints(get_model_class(args.model)):  # keypoints do not matter
            run_cfg.pop("keypoints", None)
            if "keypoints" in cache.settings["dataset"]:
                run_cfg["keypoints"] = cache.settings["dataset"]["keypoints"]
        if args.cut is not None and args.cut != cache.cut:
            raise ValueError(f"--cut {args.cut}: feature cache {cache.root} holds the maps at "
                             f"cut {cache.cut!r}; build a cache at --cut {args.cut} or leave "
                             "--cut out")
        cache.check(cache_settings(run_cfg, args.backbone, args.pretrained, args.last_stride,
                                   args.height, args.width, cache.cut))
        num_classes = cache.num_train_pids
        what = ("the head" if cache.cut == "end" else
                f"the backbone after cut {cache.cut!r} and the head")
        print(f"training {what} on {cache}")
    else:
        # validates root / split file before anything is written
        dataset = _load_dataset(data_cfg, args.protocol)
        num_classes = dataset.num_train_pids
        print(dataset.summary())  # not hidden by --no-progress
        _preflight(args, device, dataset, model_kwargs, num_classes)
    resume = _resume_state(args, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock, failure = None, None
    if main_process:  # one lock for the run, held by rank 0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                with warnings.catch_warnings(record=True) as caught:
                    lock = OutputLock(out_dir).acquire()
            for w in caught:
                print(f"stgraph: warning: {w.message}", file=sys.stderr)
        except (OutputInUseError, OSError) as err:
            failure = err
    if not _all_ranks_ok(failure is None):
        if failure is not None:
            raise failure
        raise ValueError(f"rank 0 could not lock --output {out_dir} (see its error)")
    try:
        return _train_locked(args, device, bars, data_cfg, model_kwargs, out_dir, resume,
                             cache, None if cache is not None else dataset, num_classes, amp)
    finally:
        if lock is not None:
            lock.release()


def _preflight(args, device, dataset, model_kwargs: dict, num_classes: int) -> None:
    """Before anything is written: refuse a batch that cannot fit in memory, feature maps
    too small for the head (warn when merely small), and warn when clips repeat frames
    (:mod:`stgraph.preflight`)."""
    from stgraph import preflight

    clips = args.batch_ids * args.batch_instances // distributed.world_size()
    preflight.check_memory(args.backbone, args.seq_len, args.height, args.width, clips,
                           args.test_batch, args.last_stride, device)
    with torch.random.fork_rng(devices=[]):
        probe = create_model(args.model, num_classes=num_classes,
                             **{k: v for k, v in model_kwargs.items() if k != "pretrained"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preflight.check_map_size(probe, args.seq_len, args.height, args.width)
    for w in caught:
        print(f"stgraph: warning: {w.message}", file=sys.stderr)
    lengths = [len(t.frames) for t in dataset.train]
    repeated = preflight.repeated_frames(args.seq_len, lengths)
    if repeated:
        print(f"stgraph: warning: --seq-len {args.seq_len} exceeds the longest training "
              f"tracklet ({max(lengths)} frames): every training clip repeats frames, at "
              f"least {repeated} of its {args.seq_len}", file=sys.stderr)


def _train_locked(args, device, bars, data_cfg, model_kwargs, out_dir, resume, cache, dataset,
                  num_classes, amp) -> int:
    main_process = distributed.rank() == 0
    ddp = distributed.is_distributed()
    world, rank = distributed.world_size(), distributed.rank()
    if resume is None and args.overwrite and main_process:
        for name in ("last.pth", "best.pth", "log.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
    if dataset is not None:
        if args.check_data:
            n = dataset.check_frames(dataset.train + dataset.query + dataset.gallery,
                                     decode=True, progress=bars)
            print(f"--check-data: decoded {n} frames of every tracklet")
        else:
            dataset.check_frames(dataset.query + dataset.gallery, progress=bars)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=num_classes, **model_kwargs)
    if ddp and args.sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    model = model.to(device)
    num_params = sum(p.numel() for p in model.parameters())
    keypoints = takes_keypoints(model)
    if cache is None and keypoints and dataset.frame_keypoints(
            dataset.train[0].frames[0]) is None:
        print(f"stgraph: warning: {args.model} takes keypoints but {data_cfg['name']} has none "
              "(pass --keypoints FILE); every frame uses the prior pose", file=sys.stderr)
    eval_kwargs = dict(batch_size=args.test_batch, device=device, metric=args.metric,
                       pool=args.pool, workers=args.workers, progress=bars,
                       protocol=args.protocol, rerank=args.rerank)
    autocast = amp[0] if amp is not None else contextlib.nullcontext
    if cache is not None:
        from stgraph.cache import FeatureMapHead, evaluate_cached, make_cached_train_loader

        net = FeatureMapHead(model, cache.image_size, cache.cut)
        loader = make_cached_train_loader(cache, args.seq_len, args.batch_ids,
                                          args.batch_instances, seed=args.seed,
                                          workers=args.workers, keypoints=keypoints,
                                          flip=not args.no_flip, num_replicas=world,
                                          rank=rank)

        def run_eval(_model):  # every process evaluates the whole cache
            with autocast():
                return evaluate_cached(ranked_by(net, args.eval_feature), cache, args.seq_len,
                                       **eval_kwargs)
    else:
        net = model
        loader = make_train_loader(dataset, args.seq_len, args.height, args.width,
                                   args.batch_ids, args.batch_instances, seed=args.seed,
                                   workers=args.workers, keypoints=keypoints,
                                   flip=not args.no_flip, pad=args.pad, erasing=args.erasing,
                                   num_replicas=world, rank=rank)

        def run_eval(_model):  # under torchrun: each process embeds a shard
            with autocast():
                return evaluate(ranked_by(model, args.eval_feature), dataset, args.seq_len,
                                args.height, args.width, **eval_kwargs)
    criterion = ReIDLoss(num_classes, margin=args.margin,
                         diversity_weight=args.diversity_weight,
                         part_triplet_weight=args.part_triplet_weight, distributed=ddp)
    lr_mult = args.backbone_lr_mult
    if lr_mult is None:  # the tail of a cut cache: x 1 measured 30.0 % rank-1, x 0.1 17.0 %
        lr_mult = 0.1 if args.pretrained and cache is None else 1.0
    optimizer = build_optimizer(net, args.lr, args.weight_decay, backbone_lr_mult=lr_mult)
    steps = len(loader) * args.epochs
    scheduler = warmup_cosine(optimizer, steps, int(args.warmup_epochs * len(loader)))
    config = {
        "model": args.model, "model_kwargs": model_kwargs,
        "num_classes": num_classes, "dataset": data_cfg,
        "seq_len": args.seq_len, "height": args.height, "width": args.width,
        "args": _recorded_args(args),
    }
    trained = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a model may leave a branch out of the loss (e.g. the
        # keypoint branch without keypoints); the graph walk costs little next to a video
        # model's step
        trained = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    trainer = Trainer(trained, loader, criterion, optimizer, scheduler, epochs=args.epochs,
                      device=device, progress=bars, evaluate_fn=run_eval,
                      eval_every=args.eval_every, output=out_dir, config=config,
                      save_model=model, callbacks=_pause_for_tests() if main_process else (),
                      autocast=autocast if amp is not None else None,
                      grad_scaler=amp[1] if amp is not None else None,
                      is_main=main_process, frozen_bn_epochs=args.freeze_bn_epochs)
    if resume is not None:
        trainer.load_state_dict(resume["trainer"])
        print(f"resuming from {out_dir / 'last.pth'}: {trainer.epoch} of {args.epochs} "
              "epochs done")
    try:
        history = trainer.fit()
    except FloatingPointError as err:
        kept = (f"{out_dir / 'last.pth'} keeps epoch {trainer.epoch}" if trainer.epoch
                else "no epoch was completed")
        raise TrainingStopped(f"training stopped: {err}; {kept}") from None
    train_seconds = sum(r["seconds"] for r in history)  # resumed runs: every epoch's time
    te = time.perf_counter()
    if trainer.last_metrics is not None and trainer.epoch == args.epochs:
        metrics = dict(trainer.last_metrics)  # the last epoch was just evaluated
        eval_seconds = history[-1].get("eval_seconds", 0.0)
    else:
        metrics = run_eval(model)
        eval_seconds = time.perf_counter() - te
    metrics.update(
        model=args.model, dataset=data_cfg["name"], parameters=num_params,
        trainable_parameters=sum(p.numel() for p in net.parameters() if p.requires_grad),
        train_seconds=round(train_seconds, 1),
        seconds_per_epoch=round(train_seconds / max(1, args.epochs), 2),
        eval_seconds=round(eval_seconds, 1),
        history=history,
    )
    if trainer.best is not None:
        metrics["best"] = dict(trainer.best)
    if ddp:
        metrics["processes"] = world
    if not main_process:
        return 0
    print(format_table(metrics))
    save_checkpoint(out_dir / "checkpoint.pth", model, config, metrics)
    _write_metrics(out_dir, metrics)
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'checkpoint.pth'}"
          + (f" (best.pth: epoch {trainer.best['epoch']}, mAP "
             f"{100 * trainer.best['mAP']:.2f}%)" if trainer.best else ""))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    device = _device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    data_cfg = _dataset_config(args, base=cfg["dataset"])
    dataset = _load_dataset(data_cfg, args.protocol)
    metrics = evaluate(ranked_by(model, args.eval_feature), dataset,
                       cfg["seq_len"], cfg["height"], cfg["width"],
                       batch_size=args.test_batch, device=device, metric=args.metric,
                       pool=args.pool, workers=args.workers, progress=_bars(args),
                       protocol=args.protocol, rerank=args.rerank)
    print(format_table(metrics))
    if args.output:
        _write_metrics(Path(args.output), metrics)
        print(f"wrote {Path(args.output) / 'metrics.json'}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    device = _device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    if args.what == "attention" and not getattr(model, "has_attention", lambda: False)():
        raise ValueError(f"--what attention: {_no_attention_message(type(model))}")
    if args.what not in ("attention", "ranking") and cfg["model"] not in models_with_graphs():
        raise ValueError(f"--what {args.what}: model {cfg['model']} builds no graph; the graph "
                         f"plots are for {', '.join(models_with_graphs())} (every model has "
                         "--what ranking)")
    dataset = _load_dataset(_dataset_config(args, base=cfg["dataset"]), args.protocol)
    if not 0 <= args.index < len(dataset.query):
        raise ValueError(f"--index {args.index} out of range: {len(dataset.query)} queries")
    size = (cfg["seq_len"], cfg["height"], cfg["width"])
    keypoints = takes_keypoints(model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.what != "ranking":
        item = TestClipDataset(dataset, [dataset.query[args.index]], *size,
                               keypoints=keypoints)[0]
        kp = item["keypoints"][None].to(device) if keypoints else None
        clip = item["clip"][None].to(device)
        if args.what == "attention":
            plot_model_attention(model, clip, keypoints=kp, save=out,
                                 title=f"{cfg['model']} attention, query {args.index}")
        else:
            plot_model_graph(model, clip, args.what, keypoints=kp, layer=args.layer,
                             frame=args.frame, top_k=args.top_k or 20, save=out)
    else:
        metrics, distmat = evaluate(ranked_by(model, args.eval_feature),
                                    dataset, *size, batch_size=args.test_batch,
                                    device=device, metric=args.metric, pool=args.pool,
                                    workers=args.workers, progress=_bars(args),
                                    protocol=args.protocol, rerank=args.rerank,
                                    return_distances=True)
        k = min(args.top_k or 5, len(dataset.gallery))
        row = distmat[args.index]
        top = torch.argsort(row, stable=True)[:k].tolist()

        def frames(t):
            keys = t.frames[:: max(1, len(t.frames) // 4)][:4]
            return [dataset.read_frame(key) for key in keys]

        query = dataset.query[args.index]
        plot_ranking(frames(query), [frames(dataset.gallery[j]) for j in top],
                     row[top], query_pid=query.pid,
                     gallery_pids=[dataset.gallery[j].pid for j in top], top_k=k,
                     title=f"query {args.index}: rank-1 {100 * metrics['rank1']:.1f}% over "
                           f"all queries", save=out)
    print(f"wrote {out}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from stgraph.cache import build_feature_cache, cache_settings
    from stgraph.models.backbones import build_backbone

    data_cfg = _dataset_config(args)
    dataset = _load_dataset(data_cfg, args.protocol)
    print(dataset.summary())  # not hidden by --no-progress
    backbone = build_backbone(args.backbone, last_stride=args.last_stride,
                              pretrained=args.pretrained)
    cut = backbone.default_cut if args.cut is None else backbone.check_cut(args.cut)
    settings = cache_settings(_with_protocol(data_cfg, args.protocol), args.backbone,
                              args.pretrained, args.last_stride, args.height, args.width, cut)
    cache = build_feature_cache(dataset, backbone, args.out, settings, batch_size=args.batch,
                                workers=args.workers, device=_device(args.device),
                                progress=_bars(args), overwrite=args.overwrite)
    size = os.path.getsize(Path(args.out) / "maps.npy") / 2**30
    print(f"wrote {cache}: {cache.shape[1]} frames x 2 flips at cut {cut!r} "
          f"({cache.shape[2]} channels, {cache.shape[3]} x {cache.shape[4]}), {size:.2f} GiB, "
          f"{cache.seconds:.0f} s")
    return 0


def _given_dests(argv: list[str] | None) -> set[str]:
    """The ``dest`` of every option given on the command line ``argv`` (not defaulted)."""
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def _one_line(err: BaseException) -> str:
    """The message of ``err`` without a ``DataLoader`` worker's traceback: the worker's
    own message (the last line of ``Original Traceback``), else the message itself."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        match = re.match(r"^[\w.]+: (.*)$", last)
        return match.group(1) if match else last
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return text


#: errno values of a failed write that name no file (a full disk, a read-only mount)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _write_error(args: argparse.Namespace, err: OSError) -> str | None:
    """``err`` as a failed write to the command's output (``--output`` / ``--out``), naming
    the flag and the file; :obj:`None` when it is not one (e.g. a frame that cannot be read)."""
    flag = "--output" if args.command == "train" else "--out"
    target = getattr(args, flag[2:], None)
    if target is None:
        return None
    target = Path(target).absolute()
    name = err.filename
    path = None if name is None else Path(os.fsdecode(name)).absolute()
    if path is not None:
        if path != target and target not in path.parents:
            return None
    elif err.errno not in _WRITE_ERRNOS:
        return None
    where = f" ({name})" if path is not None and path != target else ""
    return f"{flag} {target}: cannot write{where}: {err.strerror or err}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 for a wrong setting, file or data (one line
    ``stgraph: error: ...`` on stderr), 1 for a training run stopped (a NaN loss)."""
    args = build_parser().parse_args(argv)
    args._given = sorted(_given_dests(argv))
    try:
        if args.command in ("extract", "rank", "export"):
            from stgraph import cli_inference

            return getattr(cli_inference, f"run_{args.command}")(args)
        if args.command == "cache":
            return _cache(args)
        if args.command == "train":
            return _train(args)
        if args.command == "plot":
            return _plot(args)
        return _evaluate(args)
    except TrainingStopped as err:
        print(f"stgraph: error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, KeyError, OSError, ImportError, MemoryError,
            OutputInUseError) as err:
        text = _write_error(args, err) if isinstance(err, OSError) else None
        print(f"stgraph: error: {text or _one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
