"""Why fine-tuning buys little in its first epochs: the fine-tune recipe, one switch at a time.

Issue 20, item 3. TP (Lite0 ImageNet, last stride 1) fine-tuned end to end on
cuhk03-pair1 at ``--height x --width`` (128 x 64), every run with the schedule of a
``--epochs``-epoch run (15: warm-up, then cosine) and evaluated after every epoch
(``--eval-every 1``), is stopped after its first ``--first`` epochs (3): the question is
how far the first epochs move the features. A stopped run continues with ``stgraph train
... --resume`` on the same schedule. Each variant is the recipe with some ``stgraph train``
flags changed (``LABEL=FLAGS``); the reference is the same model untrained (its ImageNet
features; before any training the BNNeck is the identity, so both features rank alike).

For every variant the JSON keeps each epoch's training loss, accuracy and evaluation
(rank-1 / mAP with the run's ranking distance), and the checkpoint of the last epoch
re-ranked with the other distance and with the other feature (before/after the BNNeck),
so the feature that is ranked is measured without another run; the same checkpoint is
also ranked after its batch-norm statistics are re-estimated on one epoch of training clips
(precise BN), which measures how far the running statistics lag behind the weights.

Usage (from the repository root; one heavy job at a time)::

    python benchmarks/finetune_recipe.py                  # the default variants
    python benchmarks/finetune_recipe.py --variants "lr1=--backbone-lr-mult 1"
    python benchmarks/finetune_recipe.py --quick          # synthetic data, a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timer import machine, save_results  # noqa: E402
from accuracy import CUHK03, ROOT, data_args  # noqa: E402

#: The variants measured by default: the recipe as it is, and one change each.
VARIANTS = {
    "defaults": "",
    "lr-x1": "--backbone-lr-mult 1",
    "lr-x1-warmup0": "--backbone-lr-mult 1 --warmup-epochs 0",
    "lr-x1-warmup3": "--backbone-lr-mult 1 --warmup-epochs 3",
    "lr-x1-frozen-bn2": "--backbone-lr-mult 1 --freeze-bn-epochs 2",
    "lr-x1-no-erasing-pad": "--backbone-lr-mult 1 --erasing 0 --pad 0",
    "bn-momentum-0.1": "--bn-momentum 0.1",
}


def untrained(args) -> dict:
    """The untrained model's evaluation (ImageNet features) with both distances."""
    from stgraph.data import create_dataset
    from stgraph.eval import evaluate
    from stgraph.models import create_model

    flags = data_args(args)  # ["--dataset", NAME, "--root", ROOT, ...]
    kwargs = {k.lstrip("-").replace("-", "_"): v for k, v in zip(flags[2::2], flags[3::2],
                                                                  strict=True)}
    kwargs = {k: int(v) if k == "split_id" else v for k, v in kwargs.items()}
    dataset = create_dataset(flags[1], **kwargs)
    model = create_model("tp", num_classes=dataset.num_train_pids,
                         backbone="efficientnet_lite0", pretrained="imagenet").eval()
    out = {}
    for metric in ("cosine", "euclidean"):
        m = evaluate(model, dataset, args.seq_len, args.height, args.width, metric=metric,
                     progress=False)
        out[metric] = {k: m[k] for k in ("rank1", "rank5", "mAP")}
    return out


def reevaluate(run: Path, args) -> dict:
    """``last.pth`` ranked by both distances and both features; and, post-BNNeck with
    cosine distance, once more after its batch norms' running statistics are re-estimated
    on one epoch of training clips ("precise BN", ``torch.optim.swa_utils.update_bn``: the
    statistics of the weights as they are, without the running average's lag)."""
    from torch.optim.swa_utils import update_bn

    from stgraph.checkpoint import load_checkpoint
    from stgraph.data import create_dataset
    from stgraph.engine import make_train_loader
    from stgraph.eval import evaluate
    from stgraph.models.base import ranked_by

    model, cfg = load_checkpoint(run / "last.pth")
    dataset = create_dataset(**cfg["dataset"])
    out = {}
    for feature in ("post-bnneck", "pre-bnneck"):
        for metric in ("cosine", "euclidean"):
            m = evaluate(ranked_by(model, feature), dataset, cfg["seq_len"], cfg["height"],
                         cfg["width"], metric=metric, progress=False)
            out[f"{feature}/{metric}"] = {k: m[k] for k in ("rank1", "rank5", "mAP")}
    a = cfg["args"]
    loader = make_train_loader(dataset, cfg["seq_len"], cfg["height"], cfg["width"],
                               a["batch_ids"], a["batch_instances"], seed=a["seed"],
                               pad=a["pad"], erasing=a["erasing"], flip=not a["no_flip"])
    with torch.no_grad():
        update_bn((batch["clip"] for batch in loader), model)
    m = evaluate(model.eval(), dataset, cfg["seq_len"], cfg["height"], cfg["width"],
                 metric="cosine", progress=False)
    out["post-bnneck/cosine/precise-bn"] = {k: m[k] for k in ("rank1", "rank5", "mAP")}
    return out


def run_first_epochs(cmd: list[str], out: Path, first: int) -> list[dict]:
    """Run ``stgraph train`` until ``first`` epochs are recorded and saved, then stop it
    (SIGTERM); the epochs' records from ``log.jsonl``."""
    log = out / "log.jsonl"

    def records():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() \
            else []

    if len(records()) >= first:
        return records()[:first]
    resume = ["--resume"] if (out / "last.pth").is_file() else []
    print("$ stgraph " + shlex.join(cmd + resume), flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "stgraph", *cmd, *resume])
    try:
        while proc.poll() is None:
            time.sleep(2)
            done = records()
            last = out / "last.pth"
            # last.pth is written after the epoch's log line: wait for it
            if (len(done) >= first and last.is_file()
                    and last.stat().st_mtime >= log.stat().st_mtime):
                time.sleep(1)
                break
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if proc.returncode not in (0, -15):
        raise SystemExit(f"run failed ({proc.returncode}): stgraph {shlex.join(cmd)}")
    return records()[:first]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=None, metavar="LABEL=FLAGS",
                   help="recipe variants (default: the recipe and one change each)")
    p.add_argument("--root", default=str(CUHK03))
    p.add_argument("--split-file")
    p.add_argument("--split-id", type=int, default=0)
    p.add_argument("--keypoints")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=4)
    p.add_argument("--epochs", type=int, default=15, help="the schedule's length")
    p.add_argument("--first", type=int, default=3, help="epochs run of it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=str(ROOT / "runs" / "recipe"))
    p.add_argument("--quick", action="store_true", help="synthetic data, tiny sizes")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                        "finetune_recipe.json"))
    args = p.parse_args(argv)
    tmp = None
    if args.quick:
        args.height, args.width, args.epochs, args.first = 32, 16, 2, 1
        tmp = tempfile.TemporaryDirectory()
        args.runs = tmp.name
        if args.out == p.get_default("out"):
            args.out = str(Path(tmp.name) / "finetune_recipe.json")
    variants = (dict(v.partition("=")[::2] for v in args.variants) if args.variants
                else VARIANTS)
    batch = ["--batch-ids", "4", "--batch-instances", "2"] if args.quick else \
        ["--batch-ids", "16", "--batch-instances", "2"]
    results = {"machine": machine(), "dataset": data_args(args), "height": args.height,
               "width": args.width, "epochs": args.epochs, "first": args.first,
               "untrained": untrained(args), "variants": {}}
    print(f"untrained: {json.dumps(results['untrained'])}", flush=True)
    for label, flags in variants.items():
        out = Path(args.runs) / label
        cmd = ["train", "--model", "tp", *data_args(args), "--backbone", "efficientnet_lite0",
               "--pretrained", "imagenet", "--seq-len", str(args.seq_len), *batch,
               "--height", str(args.height), "--width", str(args.width),
               "--epochs", str(args.epochs), "--eval-every", "1", "--seed", str(args.seed),
               "--no-progress", "--workers", "0", *shlex.split(flags), "--output", str(out)]
        records = run_first_epochs(cmd, out, args.first)
        results["variants"][label] = {
            "flags": flags, "command": "stgraph " + shlex.join(cmd),
            "epochs": [{k: r[k] for k in ("epoch", "loss", "ce", "triplet", "acc", "rank1",
                                          "mAP", "seconds", "lr") if k in r}
                       for r in records],
            f"epoch{args.first}": reevaluate(out, args),
        }
        save_results(Path(args.out), results)
        rows = results["variants"][label]["epochs"]
        print(f"{label}: " + ", ".join(f"ep{r['epoch']} {100 * r.get('rank1', 0):.1f}/"
                                       f"{100 * r.get('mAP', 0):.1f} acc {100 * r['acc']:.0f}"
                                       for r in rows), flush=True)
    save_results(Path(args.out), results)
    if tmp is not None:
        tmp.cleanup()
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
