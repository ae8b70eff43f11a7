"""What each model adds on real data: every registered model under stgraph's protocols.

DESIGN.md, "How stgraph compares models on real data". Single runs of 100 queries cannot
separate models (one query is one point of rank-1), so:

* **partial** (the default): the ImageNet EfficientNet-Lite0 backbone (last stride 1,
  256 x 128) is run once per frame and per flip up to its head conv's input (320 x 16 x 8
  maps) into a feature-map cache (``stgraph cache``, its default ``--cut``); each model
  trains the backbone's tail (head conv + BN) and its head from it (``stgraph train
  --feature-cache``) with several seeds, so every branch, the global one included, can
  learn; the table gives the mean and standard deviation over seeds of rank-1, rank-5 and
  mAP.
* **frozen** (``--cut end``): the same, with the backbone's output maps cached and the
  head alone trained (the backbone's global feature cannot learn).
* **finetune**: the same backbone trained end to end with the recipe (flip, pad + crop,
  random erasing, backbone at the head's learning rate, no warm-up), one seed, at
  ``--ft-height x --ft-width``.

Each model is evaluated as ``stgraph train`` does (cosine distance, the default) and with
euclidean distance (the checkpoint re-evaluated, kept in ``metrics_euclidean.json``; runs
made before cosine became the default ranked by euclidean and keep ``metrics_cosine.json``).
A run evaluated with the test clips of before issue 20's fix (a tracklet's last clip padded
by repeating its last frame, ``--last-clip pad``; its metrics have no ``last_clip``) is
re-evaluated with today's (``"overlap"``) for both distances; the older files are kept as
``metrics_<distance>_pad.json``, and ``--merge`` takes only runs recorded with today's.
Every run is one ``stgraph train`` command (printed, and kept in the JSON; run in-process
through :func:`stgraph.recipe.train` with the command's settings), written to
``--runs/<protocol>/<label>/seed<k>``; a run whose ``metrics.json`` exists is read, not
run again, so the script can be stopped and resumed, and a row can be added later.
``--merge OLD.json`` takes runs recorded in an earlier output with the same command (e.g.
seeds run on another day) into the rows, each marked in the JSON with the file it came from.

Models are registry names (``tp``, ``tp_mlp``, ``stgcn``, ``ctl``, ...) or variants
``LABEL=NAME:FLAGS`` with extra ``stgraph train`` flags, e.g.
``"ctl-paper=ctl:--heatmap-temperature 1 --part-reduce sum --no-scale-cross-attention"``.

Usage (from the repository root)::

    stgraph cache --dataset prid2011 --root ../shared/data/cuhk03-pair1 \\
        --split-file ../shared/data/cuhk03-pair1/splits.json --split-id 0 \\
        --keypoints ../shared/data/cuhk03-pair1/keypoints.json --out CACHE
    python benchmarks/accuracy.py --protocol partial --cache CACHE
    python benchmarks/accuracy.py --protocol frozen --frozen-cache CACHE_END   # --cut end
    python benchmarks/accuracy.py --protocol finetune --models tp stgcn
    python benchmarks/accuracy.py --quick   # synthetic data, tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, save_results  # noqa: E402

from stgraph.config import TrainSettings  # noqa: E402
from stgraph.data.sampling import test_clip_indices  # noqa: E402
from stgraph.models import list_models  # noqa: E402
from stgraph.recipe import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The test clips every figure of the tables is ranked with: stgraph's default last clip.
LAST_CLIP = inspect.signature(test_clip_indices).parameters["last_clip"].default
CUHK03 = ROOT.parent / "shared" / "data" / "cuhk03-pair1"


def parse_model(spec: str) -> tuple[str, str, list[str]]:
    """``"NAME"`` or ``"LABEL=NAME:FLAGS"`` -> ``(label, registry name, extra flags)``.

    Raises:
        ValueError: an unknown registry name.
    """
    label, _, rest = spec.partition("=")
    if not rest:
        label, rest = spec, spec
    name, _, flags = rest.partition(":")
    if name not in list_models():
        raise ValueError(f"unknown model {name!r} in {spec!r}; choose one of: "
                         f"{', '.join(list_models())}")
    return label, name, shlex.split(flags)


def data_args(args) -> list[str]:
    if args.quick:
        return ["--dataset", "synthetic"]
    root = Path(args.root).resolve()
    out = ["--dataset", "prid2011", "--root", str(root), "--split-id", str(args.split_id),
           "--split-file", str(Path(args.split_file).resolve() if args.split_file
                               else root / "splits.json")]
    if args.keypoints or (root / "keypoints.json").is_file():
        out += ["--keypoints", str(Path(args.keypoints or root / "keypoints.json").resolve())]
    return out


def settings_of(cmd: list[str]) -> TrainSettings:
    """The :class:`~stgraph.config.TrainSettings` of a ``stgraph train`` command line
    (``["train", "--model", ...]``, parsed by the command's own parser, so that every
    run is recorded as the command that repeats it)."""
    from stgraph.cli import build_parser

    return TrainSettings.from_mapping(vars(build_parser().parse_args(cmd)))


def reevaluate(out: Path, cache: str | None, metric: str) -> dict:
    """The run's checkpoint evaluated with ``metric`` (the distance the run did not rank
    by, or both when the run's own evaluation used other test clips than
    :data:`LAST_CLIP`), from the cache (through its tail, at the cache's cut) or from the
    frames; kept in ``metrics_<metric>.json`` (an older one, made with padded last clips,
    is kept as ``metrics_<metric>_pad.json``)."""
    path = out / f"metrics_{metric}.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("last_clip", "pad") == LAST_CLIP:
            return kept
        path.rename(out / f"metrics_{metric}_{kept.get('last_clip', 'pad')}.json")
    from stgraph.checkpoint import load_checkpoint
    from stgraph.config import load_dataset
    from stgraph.models.base import ranked_by

    model, cfg = load_checkpoint(out / "checkpoint.pth")
    feature = cfg.get("args", {}).get("eval_feature")
    if cache is not None:
        from stgraph.cache import FeatureCache, FeatureMapHead, evaluate_cached

        fc = FeatureCache(cache)
        head = ranked_by(FeatureMapHead(model, fc.image_size, fc.cut), feature)
        metrics = evaluate_cached(head, fc, cfg["seq_len"], metric=metric, progress=False,
                                  last_clip=LAST_CLIP)
    else:
        from stgraph.eval import evaluate

        metrics = evaluate(ranked_by(model, feature), load_dataset(cfg["dataset"]),
                           cfg["seq_len"], cfg["height"], cfg["width"], metric=metric,
                           progress=False, last_clip=LAST_CLIP)
    path.write_text(json.dumps(metrics))
    return metrics


#: The protocols, in the order of the tables: the partial protocol (a cache cut inside the
#: backbone, its tail trained with the head), the frozen one (cut "end"), fine-tuning.
PROTOCOLS = ("partial", "frozen", "finetune")
#: The cut of each cached protocol's feature cache.
CUTS = {"partial": None, "frozen": "end"}  # None: the backbone's default cut

#: What each run's entry in the JSON keeps (enough to rebuild its row with ``--merge``).
KEPT = ("rank1", "rank5", "mAP", "cos_rank1", "cos_rank5", "cos_mAP", "parameters",
        "trainable_parameters", "seconds_per_epoch", "last_clip")


def load_earlier(paths: list[str]) -> dict[str, dict]:
    """The runs recorded in earlier JSON outputs of this script, by their exact command."""
    earlier = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        rows = {(protocol, r["model"]): r for protocol in PROTOCOLS
                for r in data.get(protocol, [])}
        for entry in data.get("commands", []):
            if "rank1" not in entry:
                continue
            if entry.get("last_clip", "pad") != LAST_CLIP:
                print(f"--merge: not taking {entry['output']} from {path}: ranked with "
                      f"last_clip={entry.get('last_clip', 'pad')!r}, the tables use "
                      f"{LAST_CLIP!r} (re-evaluate its checkpoint or run it again)")
                continue
            entry = {**entry, "from": str(path)}
            # older files keep the size and the time per epoch on the row only
            out = Path(entry["output"])
            row = rows.get((out.parent.parent.name, out.parent.name), {})
            for key in ("parameters", "trainable_parameters", "seconds_per_epoch"):
                if key not in entry and row.get(key) is not None:
                    entry[key] = row[key]
            earlier[entry["command"]] = entry
    return earlier


def run_one(cmd: list[str], out: Path, log: list[dict], cache: str | None = None,
            run: bool = True, earlier: dict[str, dict] | None = None) -> dict | None:
    """Run ``stgraph train`` (unless ``out/metrics.json`` exists) and return its metrics:
    the euclidean figures as ``rank1`` ... ``mAP``, the cosine ones as ``cos_rank1`` ...
    ``cos_mAP`` (the run ranks by one, :func:`reevaluate` gives the other).

    A run absent here but recorded with the same command in ``earlier`` (``--merge``) is
    taken from there, marked with the file it came from."""
    metrics_file = out / "metrics.json"
    entry = {"command": "stgraph " + shlex.join(cmd), "output": str(out)}
    if not metrics_file.is_file() and earlier and entry["command"] in earlier:
        entry = dict(earlier[entry["command"]])
        log.append(entry)
        return {k: entry[k] for k in KEPT if k in entry}
    recorded = out / "command.txt"
    if metrics_file.is_file() and recorded.is_file() and recorded.read_text() != entry["command"]:
        raise SystemExit(f"{out} holds a run of another command:\n  {recorded.read_text()}\n"
                         f"this one is:\n  {entry['command']}\nuse another --runs folder")
    if not metrics_file.is_file() and not run:
        return None
    if not metrics_file.is_file():
        t0 = time.perf_counter()
        print(f"$ {entry['command']}", flush=True)
        # a run killed before it finished continues from its last.pth
        train(settings_of([*cmd, "--resume"] if (out / "last.pth").is_file() else cmd))
        entry["wall_s"] = time.perf_counter() - t0
    else:
        entry["reused"] = True
    recorded.write_text(entry["command"])
    metrics = json.loads(metrics_file.read_text())
    ranked = metrics.get("metric", "euclidean")  # runs before cosine became the default
    own = dict(metrics)  # (metrics is updated below)
    euc, cos = ((own if ranked == m and own.get("last_clip", "pad") == LAST_CLIP
                 else reevaluate(out, cache, m)) for m in ("euclidean", "cosine"))
    metrics.update({k: euc[k] for k in ("rank1", "rank5", "mAP")})
    metrics.update({f"cos_{k}": cos[k] for k in ("rank1", "rank5", "mAP")})
    metrics["last_clip"] = LAST_CLIP
    entry.update({k: metrics[k] for k in KEPT if k in metrics})
    log.append(entry)
    return metrics


def summarise(label: str, runs: list[dict]) -> dict:
    """Mean and standard deviation over ``runs``; a figure some runs lack (runs merged from
    an older JSON have no cos_rank5 or timing) is taken over those that have it."""

    def ms(key):
        vals = [100 * r[key] for r in runs if key in r]
        if not vals:
            return float("nan"), float("nan")
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    def first(key):
        return next((r[key] for r in runs if key in r), None)

    row = {"model": label, "seeds": len(runs)}
    for key in ("rank1", "rank5", "mAP", "cos_rank1", "cos_rank5", "cos_mAP"):
        row[key], row[f"{key}_std"] = ms(key)
    row["parameters"] = first("parameters")
    row["trainable_parameters"] = first("trainable_parameters") or row["parameters"]
    timed = [r["seconds_per_epoch"] for r in runs if "seconds_per_epoch" in r]
    row["seconds_per_epoch"] = statistics.fmean(timed) if timed else None
    row["per_seed"] = [{k: r[k] for k in ("rank1", "rank5", "mAP", "cos_rank1", "cos_mAP")}
                       for r in runs]
    return row


def _millions(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} M"


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f}"


def table(title: str, rows: list[dict]) -> str:
    """A markdown table of ``rows``: mean ± std over seeds, cosine first (the default
    ranking distance), then euclidean; "–" for a figure no run of the row has (runs merged
    from older outputs lack the cosine rank-5)."""

    def f(r, key):
        if math.isnan(r[key]):
            return "–"
        return f"{r[key]:.1f} ± {r[key + '_std']:.1f}"

    keys = ("cos_rank1", "cos_rank5", "cos_mAP", "rank1", "rank5", "mAP")
    lines = [f"### {title}", "",
             "| model | seeds | rank-1 (cos) | rank-5 (cos) | mAP (cos) | rank-1 (eucl.) "
             "| rank-5 (eucl.) | mAP (eucl.) | trainable params | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seeds']} | " + " | ".join(f(r, k) for k in keys)
                     + f" | {_millions(r['trainable_parameters'])} | "
                     f"{_num(r['seconds_per_epoch'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", choices=[*PROTOCOLS, "all"], default="partial")
    p.add_argument("--models", nargs="+", default=None,
                   help="registry names or LABEL=NAME:FLAGS (default: every registered model)")
    p.add_argument("--root", default=str(CUHK03), help="PRID-2011-layout dataset root")
    p.add_argument("--split-file", help="split json (default ROOT/splits.json)")
    p.add_argument("--split-id", type=int, default=0)
    p.add_argument("--keypoints", help="COCO keypoint file (default ROOT/keypoints.json if any)")
    p.add_argument("--cache", help="feature cache of the dataset at the default cut (partial "
                                   "protocol; default: built under --runs)")
    p.add_argument("--frozen-cache", help="feature cache made with --cut end (frozen "
                                          "protocol; default: built under --runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=20, help="frozen protocol epochs")
    p.add_argument("--seq-len", type=int, default=4)
    p.add_argument("--batch-ids", type=int, default=16)
    p.add_argument("--batch-instances", type=int, default=2)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--ft-epochs", type=int, default=10, help="fine-tune protocol epochs")
    p.add_argument("--ft-height", type=int, default=128)
    p.add_argument("--ft-width", type=int, default=64)
    p.add_argument("--ft-seed", type=int, default=0)
    p.add_argument("--runs", default=str(ROOT / "runs" / "accuracy"))
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--no-run", action="store_true",
                   help="only read the runs that exist (a table of what is done so far)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="earlier outputs of this script: a run not in --runs but recorded "
                        "there with the same command is taken from there")
    p.add_argument("--quick", action="store_true", help="synthetic data, tiny sizes")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "accuracy.json"))
    args = p.parse_args(argv)
    models = [parse_model(m) for m in (args.models or list_models())]
    height, width = 256, 128
    tmp = None
    if args.quick:
        height, width, args.batch_ids = 64, 32, 8
        args.seeds, args.epochs, args.ft_epochs = args.seeds[:2], 1, 1
        args.ft_height, args.ft_width = 64, 32
        tmp = tempfile.TemporaryDirectory()
        if args.runs == p.get_default("runs"):
            args.runs = tmp.name
        if args.out == p.get_default("out"):  # a smoke test leaves the recorded figures alone
            args.out = str(Path(tmp.name) / "accuracy.json")
    common = ["--seq-len", str(args.seq_len), "--batch-ids", str(args.batch_ids),
              "--batch-instances", str(args.batch_instances), "--lr", str(args.lr),
              "--workers", str(args.workers), "--no-progress",
              "--backbone", "efficientnet_lite0", "--pretrained", "imagenet"]
    runs = Path(args.runs)
    earlier = load_earlier(args.merge)
    results = {"machine": machine(), "dataset": data_args(args), "partial": [], "frozen": [],
               "finetune": [], "commands": []}
    cached = [p for p in ("partial", "frozen") if args.protocol in (p, "all")]
    for protocol in cached:
        cache = args.cache if protocol == "partial" else args.frozen_cache
        if cache is None:  # the script's own cache (built unless --no-run)
            cut = CUTS[protocol]
            cache = str(runs / ("cache" if cut == "end" else "cache-partial"))
            if not args.no_run and not (Path(cache) / "manifest.json").is_file():
                cmd = ["cache", *data_args(args), "--height", str(height), "--width",
                       str(width), "--out", cache, "--no-progress",
                       *(["--cut", cut] if cut else [])]
                print(f"$ stgraph {shlex.join(cmd)}", flush=True)
                if subprocess.run([sys.executable, "-m", "stgraph", *cmd]).returncode != 0:
                    raise SystemExit("building the feature cache failed")
        if (Path(cache) / "manifest.json").is_file():
            from stgraph.cache import FeatureCache

            have = FeatureCache(cache).cut
            if (have == "end") != (protocol == "frozen"):
                raise SystemExit(f"{cache} holds maps at cut {have!r}: not a cache of the "
                                 f"{protocol} protocol (frozen: --cut end; partial: a cut "
                                 "inside the backbone)")
        for label, name, flags in models:
            per_seed = []
            for seed in args.seeds:
                out = runs / protocol / label / f"seed{seed}"
                cmd = ["train", "--model", name, *data_args(args), *common, *flags,
                       "--height", str(height), "--width", str(width),
                       "--epochs", str(args.epochs), "--seed", str(seed),
                       "--feature-cache", cache, "--output", str(out)]
                per_seed.append(run_one(cmd, out, results["commands"], cache,
                                        run=not args.no_run, earlier=earlier))
            per_seed = [m for m in per_seed if m is not None]
            if per_seed:
                results[protocol].append(summarise(label, per_seed))
    if args.protocol in ("finetune", "all"):
        for label, name, flags in models:
            out = runs / "finetune" / label / f"seed{args.ft_seed}"
            cmd = ["train", "--model", name, *data_args(args), *common, *flags,
                   "--height", str(args.ft_height), "--width", str(args.ft_width),
                   "--epochs", str(args.ft_epochs), "--seed", str(args.ft_seed),
                   "--output", str(out)]
            metrics = run_one(cmd, out, results["commands"], run=not args.no_run,
                              earlier=earlier)
            if metrics is not None:
                results["finetune"].append(summarise(label, [metrics]))
    if results["partial"]:
        print(table(f"Partial protocol: Lite0 ImageNet cut at the head conv's input, tail "
                    f"trained, {height} x {width}, {args.epochs} epochs, seeds {args.seeds}",
                    results["partial"]))
    if results["frozen"]:
        print(table(f"Frozen protocol (cut end): Lite0 ImageNet, {height} x {width}, "
                    f"{args.epochs} epochs, seeds {args.seeds}", results["frozen"]))
    if results["finetune"]:
        print(table(f"Fine-tune protocol: Lite0 ImageNet, {args.ft_height} x {args.ft_width}, "
                    f"{args.ft_epochs} epochs, seed {args.ft_seed}", results["finetune"]))
    save_results(Path(args.out), results)
    if tmp is not None:
        tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
