"""Command line: ``stgraph train``, ``evaluate``, ``plot``, ``cache``, ``extract``, ``rank``
and ``export`` (also ``python -m stgraph``).

``extract``, ``rank`` and ``export`` live in :mod:`stgraph.cli_inference`; the argument
groups the commands share in :mod:`stgraph.cli_args`.

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

This module parses and dispatches: each command is one ``run_<command>(args) -> int``.
Training is :func:`stgraph.recipe.train` (the flags become a
:class:`~stgraph.config.TrainSettings`), settings are :mod:`stgraph.config`, checkpoints
and output folders :mod:`stgraph.checkpoint`. Library errors are exceptions; only
:func:`main` turns them into one line ``stgraph: error: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
import warnings
from pathlib import Path

import torch

from stgraph import cli_inference
from stgraph.checkpoint import (
    CHECKPOINT_KEYS,
    METRIC_KEYS,
    OutputInUseError,
    load_checkpoint,
    resolved_model_kwargs,
    save_checkpoint,
    write_json,
)
from stgraph.cli_args import (
    NON_NEGATIVE,
    POSITIVE,
    HelpFormatter,
    add_backbone_args,
    add_data_args,
    add_eval_args,
    add_model_args,
    float_in,
    int_at_least,
    progress_bars,
)
from stgraph.config import (
    TrainSettings,
    clip_size,
    dataset_config,
    evaluation_kwargs,
    load_dataset,
    parse_model_args,
    resolve_device,
    with_protocol,
)
from stgraph.data import TestClipDataset
from stgraph.errors import NamesSettings, SettingError, SettingWarning
from stgraph.eval import RANK_PROTOCOLS, evaluate, evaluate_with_distances, format_table
from stgraph.models import list_models
from stgraph.models.base import _no_attention_message, ranked_by, takes_keypoints
from stgraph.models.graphs import models_with_graphs
from stgraph.recipe import TrainingStopped, train
from stgraph.viz import MODEL_PLOTS, plot_model_attention, plot_model_graph, plot_ranking

__all__ = ["CHECKPOINT_KEYS", "METRIC_KEYS", "main", "build_parser", "load_checkpoint",
           "resolved_model_kwargs", "run_cache", "run_evaluate", "run_plot", "run_train",
           "save_checkpoint"]

#: What ``stgraph --help`` says (plain text: no reST markup).
DESCRIPTION = """\
Spatial-temporal graph models for video person re-identification: train, evaluate,
plot and cache. 'stgraph COMMAND --help' lists a command's options with their defaults;
'python -m stgraph' is the same command."""

_TRIPLET = (": the batch-hard triplet loss needs at least 2 identities per batch and 2 "
            "tracklets per identity (with 1 it is 0 and silently trains nothing)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stgraph", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (stgraph COMMAND --help)")

    def add(name, **kw):
        return sub.add_parser(name, formatter_class=HelpFormatter, **kw)

    t = add("train", help="train a model, evaluate it, write metrics and a checkpoint "
                          "(last.pth every epoch: --resume continues a killed run)",
            description="Train a model, evaluate it, write OUTPUT/metrics.json and\n"
                        "OUTPUT/checkpoint.pth; OUTPUT/last.pth after every epoch (--resume),\n"
                        "OUTPUT/log.jsonl one line per epoch.")
    t.add_argument("--model", required=True, choices=list_models(),
                   help="registered model")
    add_data_args(t, required=True)
    add_backbone_args(t, backbone="resnet50", pretrained=None)
    t.add_argument("--seq-len", type=POSITIVE, default=8, help="frames per clip T")
    t.add_argument("--epochs", type=POSITIVE, default=10,
                   help="epochs in all (with --resume: may be raised to train on)")
    t.add_argument("--batch-ids", type=int_at_least(2, _TRIPLET), default=8,
                   help="identities per batch P")
    t.add_argument("--batch-instances", type=int_at_least(2, _TRIPLET), default=4,
                   help="tracklets per identity K")
    t.add_argument("--lr", type=float_in(0, low_open=True), default=3.5e-4,
                   help="learning rate (Adam)")
    t.add_argument("--weight-decay", type=float_in(0), default=5e-4, help="weight decay")
    t.add_argument("--warmup-epochs", type=float_in(0), default=None,
                   help="epochs of linear warm-up before the cosine decay (default 1; 0 when "
                        "fine-tuning --pretrained weights from frames: on cuhk03-pair1 TP's "
                        "epoch-3 rank-1 at 128 x 64 is 16.0 %% without it, 10.0 %% with 1)")
    add_model_args(t)
    t.add_argument("--diversity-weight", type=float_in(0), default=1.0,
                   help="weight of CTL's diversity loss, eq. 9")
    t.add_argument("--margin", type=float_in(0), default=0.3,
                   help="margin of the batch-hard triplet losses (0.4 in RRU's paper)")
    t.add_argument("--part-triplet-weight", type=float_in(0), default=1.0,
                   help="weight of the part triplet loss of models that output part "
                        "features for it (RRU)")
    t.add_argument("--backbone-lr-mult", type=float_in(0), default=None,
                   help="learning-rate multiplier of the backbone (default 1: on cuhk03-pair1 "
                        "TP fine-tuned at 128 x 64 has mAP 23.6 after 3 epochs at 1, 19.9 at "
                        "0.1; from a partial cache 30.0 %% rank-1 at 1, 17.0 %% at 0.1)")
    t.add_argument("--freeze-bn-epochs", type=NON_NEGATIVE, default=0,
                   help="keep the backbone's batch-norm statistics (its pretrained running "
                        "means and variances) frozen for the first N epochs (default 0)")
    t.add_argument("--bn-momentum", type=float_in(0, 1, low_open=True), default=None,
                   help="momentum of the backbone's batch-norm running statistics, PyTorch's "
                        "convention (default: the backbone's own: 0.1 for the ResNets, 0.01 "
                        "for EfficientNet-Lite, TF's 0.99)")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    t.add_argument("--pad", type=NON_NEGATIVE, default=None,
                   help="zero padding in pixels before the random crop (default: the "
                        "recipe's 10 px per 128 px of --width, 10 at 256 x 128; 0: no crop; "
                        "not with --feature-cache)")
    t.add_argument("--erasing", type=float_in(0, 1), default=0.5,
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
    t.add_argument("--eval-every", type=NON_NEGATIVE, default=0, metavar="N",
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
    add_eval_args(t)

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
                          "mirror image) and store the maps for 'train --feature-cache'")
    add_data_args(c, required=True)
    add_backbone_args(c, backbone="efficientnet_lite0", pretrained="imagenet")
    c.add_argument("--cut", default=None,
                   help="where in the backbone to take the maps: 'end' (its output, the "
                        "frozen protocol) or a point inside it, after which 'train "
                        "--feature-cache' trains the backbone's tail (the partial protocol): "
                        "resnets: layer4 (default), layer3; efficientnet_lite: head "
                        "(default: the head conv's input), last_stage")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--batch", type=POSITIVE, default=32, help="frames per backbone call")
    c.add_argument("--workers", type=NON_NEGATIVE, default=1, help="frame reader processes")
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
    add_data_args(e, required=False)
    e.add_argument("--output", help="folder to write metrics.json into (optional)")
    add_eval_args(e)

    pl = add("plot", help="plot a trained model's graphs, attention maps or rankings")
    pl.add_argument("--checkpoint", required=True, help="the .pth file")
    add_data_args(pl, required=False)
    pl.add_argument("--what", required=True, choices=[*MODEL_PLOTS, "attention", "ranking"],
                    help="a graph of the model, its attention maps (sta, drsta, rru) or the "
                         "ranking of a query")
    pl.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg)")
    pl.add_argument("--index", type=NON_NEGATIVE, default=0, help="query tracklet to plot")
    pl.add_argument("--layer", help="graph layer to plot (default: the first that fits)")
    pl.add_argument("--frame", type=int, default=None, help="frame / window (CTL graphs)")
    pl.add_argument("--top-k", type=POSITIVE, default=None,
                    help="edges drawn (graph plots, default 20) or gallery tracklets (ranking, "
                         "default 5)")
    add_eval_args(pl)

    for add_parser in (cli_inference.add_extract_parser, cli_inference.add_rank_parser,
                       cli_inference.add_export_parser):
        add_parser(sub)
    return parser


def _dataset_config(args: argparse.Namespace, base: dict | None = None) -> dict:
    """:func:`stgraph.config.dataset_config` of the data flags; a wrong one is a usage
    error (``SystemExit`` with the message), before anything is loaded."""
    try:
        return dataset_config(getattr(args, "dataset", None), getattr(args, "root", None),
                              getattr(args, "split_file", None),
                              getattr(args, "split_id", None),
                              getattr(args, "keypoints", None), base=base)
    except SettingError as err:
        raise SystemExit(f"stgraph: error: {err.for_cli()}") from None


def _parse_model_args(pairs: list[str]) -> dict:
    """:func:`stgraph.config.parse_model_args` with the errors naming ``--model-arg``."""
    try:
        return parse_model_args(pairs)
    except SettingError as err:
        raise ValueError(err.for_cli()) from None


def run_train(args: argparse.Namespace, callbacks=()) -> int:
    """``stgraph train``: :func:`stgraph.recipe.train` of the flags' settings."""
    resolve_device(args.device)
    _dataset_config(args)  # a wrong data flag: a usage error before anything else
    train(TrainSettings.from_mapping(vars(args)), callbacks=callbacks)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``stgraph evaluate``: a checkpoint's metrics on its dataset (or the one given)."""
    device = resolve_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    data_cfg = _dataset_config(args, base=cfg["dataset"])
    dataset = load_dataset(data_cfg, args.protocol)
    metrics = evaluate(ranked_by(model, args.eval_feature), dataset,
                       *clip_size(cfg, args.checkpoint), **_eval_kwargs(args, device))
    print(format_table(metrics))
    if args.output:
        write_json(Path(args.output) / "metrics.json", metrics)
        print(f"wrote {Path(args.output) / 'metrics.json'}")
    return 0


def _eval_kwargs(args: argparse.Namespace, device) -> dict:
    return evaluation_kwargs(args, device, progress_bars(args))


def run_plot(args: argparse.Namespace) -> int:
    """``stgraph plot``: a trained model's graphs, attention maps or a query's ranking."""
    device = resolve_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    if args.what == "attention" and not getattr(model, "has_attention", lambda: False)():
        raise ValueError(f"--what attention: {_no_attention_message(type(model))}")
    if args.what not in ("attention", "ranking") and cfg["model"] not in models_with_graphs():
        raise ValueError(f"--what {args.what}: model {cfg['model']} builds no graph; the graph "
                         f"plots are for {', '.join(models_with_graphs())} (every model has "
                         "--what ranking)")
    size = clip_size(cfg, args.checkpoint)
    dataset = load_dataset(_dataset_config(args, base=cfg["dataset"]), args.protocol)
    if not 0 <= args.index < len(dataset.query):
        raise ValueError(f"--index {args.index} out of range: {len(dataset.query)} queries")
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
        metrics, distmat = evaluate_with_distances(ranked_by(model, args.eval_feature),
                                                   dataset, *size,
                                                   **_eval_kwargs(args, device))
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


def run_cache(args: argparse.Namespace) -> int:
    """``stgraph cache``: a frozen backbone's maps of every frame, for ``--feature-cache``."""
    from stgraph.cache import build_feature_cache, cache_settings
    from stgraph.models.backbones import build_backbone

    data_cfg = _dataset_config(args)
    dataset = load_dataset(data_cfg, args.protocol)
    print(dataset.summary())  # not hidden by --no-progress
    backbone = build_backbone(args.backbone, last_stride=args.last_stride,
                              pretrained=args.pretrained)
    cut = backbone.default_cut if args.cut is None else backbone.check_cut(args.cut)
    settings = cache_settings(with_protocol(data_cfg, args.protocol), args.backbone,
                              args.pretrained, args.last_stride, args.height, args.width, cut)
    cache = build_feature_cache(dataset, backbone, args.out, settings, batch_size=args.batch,
                                workers=args.workers, device=resolve_device(args.device),
                                progress=progress_bars(args), overwrite=args.overwrite)
    size = os.path.getsize(Path(args.out) / "maps.npy") / 2**30
    print(f"wrote {cache}: {cache.shape[1]} frames x 2 flips at cut {cut!r} "
          f"({cache.shape[2]} channels, {cache.shape[3]} x {cache.shape[4]}), {size:.2f} GiB, "
          f"{cache.seconds:.0f} s")
    return 0


def _one_line(err: BaseException) -> str:
    """The message of ``err`` without a ``DataLoader`` worker's traceback: the worker's
    own message (the last line of ``Original Traceback``), else the message itself; a
    library message that names settings names them as flags."""
    if isinstance(err, NamesSettings):
        return err.for_cli()
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


@contextlib.contextmanager
def _settings_warnings():
    """Show the library's :class:`~stgraph.errors.SettingWarning` s as ``stgraph: warning:
    ...`` lines on stderr (flags named as flags), every time they are given."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(message, SettingWarning):
            print(f"stgraph: warning: {message.for_cli()}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SettingWarning)
        warnings.showwarning = show
        yield


#: The command functions, by command.
COMMANDS = {"train": run_train, "evaluate": run_evaluate, "plot": run_plot,
            "cache": run_cache, "extract": cli_inference.run_extract,
            "rank": cli_inference.run_rank, "export": cli_inference.run_export}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 for a wrong setting, file or data (one line
    ``stgraph: error: ...`` on stderr), 1 for a training run stopped (a NaN loss)."""
    args = build_parser().parse_args(argv)
    try:
        with _settings_warnings():
            return COMMANDS[args.command](args)
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
