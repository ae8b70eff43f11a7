"""Per-epoch curves of training runs: rank-1, mAP and training accuracy from ``log.jsonl``.

Every run of ``stgraph train --eval-every 1`` writes one JSON line per epoch to
``OUTPUT/log.jsonl`` (its losses, accuracy and, when evaluated, rank-1 and mAP). This script
draws them side by side, one line per run, with an optional horizontal reference (e.g. the
untrained ImageNet features' rank-1 at the same size), and writes the figures' numbers to a
JSON beside the picture.

Usage (from the repository root)::

    python benchmarks/plot_curves.py runs/accuracy/finetune/*/seed0 \\
        --reference 7.0 --reference-label "untrained ImageNet features" \\
        --out docs/_static/results/finetune_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def read_log(run: Path) -> list[dict]:
    """The epoch records of ``run/log.jsonl``.

    Raises:
        FileNotFoundError: no ``log.jsonl`` in ``run``.
    """
    log = Path(run) / "log.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"{log}: not found (is {run} a stgraph train --output folder?)")
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def label_of(run: Path) -> str:
    """``runs/accuracy/finetune/stgcn/seed0`` -> ``stgcn``: the folder above ``seedK``."""
    run = Path(run)
    return run.parent.name if run.name.startswith("seed") else run.name


def plot(runs: list[Path], out: Path, reference: float | None = None,
         reference_label: str = "reference", title: str | None = None) -> dict:
    """Draw rank-1, mAP (evaluated epochs) and training accuracy per epoch of ``runs``."""
    curves = {}
    fig = Figure(figsize=(13, 3.8), layout="constrained")  # no pyplot: no global figure
    axes = fig.subplots(1, 3)
    for run in runs:
        records = read_log(run)
        label = label_of(run)
        evaluated = [r for r in records if "rank1" in r]
        curves[label] = {
            "epoch": [r["epoch"] for r in records],
            "acc": [100 * r["acc"] for r in records],
            "eval_epoch": [r["epoch"] for r in evaluated],
            "rank1": [100 * r["rank1"] for r in evaluated],
            "mAP": [100 * r["mAP"] for r in evaluated],
        }
        c = curves[label]
        axes[0].plot(c["eval_epoch"], c["rank1"], marker="o", ms=3, label=label)
        axes[1].plot(c["eval_epoch"], c["mAP"], marker="o", ms=3, label=label)
        axes[2].plot(c["epoch"], c["acc"], marker="o", ms=3, label=label)
    for ax, name in zip(axes, ("rank-1 (%)", "mAP (%)", "training accuracy (%)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if reference is not None:
        axes[0].axhline(reference, color="grey", ls="--", lw=1, label=reference_label)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    data = {"runs": [str(r) for r in runs], "reference": reference, "curves": curves}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    return data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="stgraph train --output folders")
    p.add_argument("--out", required=True, help="the PNG (its numbers go to a .json beside it)")
    p.add_argument("--reference", type=float, help="a rank-1 to draw as a horizontal line")
    p.add_argument("--reference-label", default="reference")
    p.add_argument("--title")
    args = p.parse_args(argv)
    data = plot([Path(r) for r in args.runs], Path(args.out), args.reference,
                args.reference_label, args.title)
    print(f"wrote {args.out} ({len(data['curves'])} runs)")
    return data


if __name__ == "__main__":
    main()
