"""The argument groups every ``stgraph`` command shares: value types, the help formatter,
and the data, backbone, embedding and ranking groups (argparse only; used by
:mod:`stgraph.cli` and :mod:`stgraph.cli_inference`)."""

from __future__ import annotations

import argparse
import sys

from stgraph.data import list_datasets
from stgraph.eval import RANK_PROTOCOLS
from stgraph.models.backbones import list_backbones

__all__ = ["HelpFormatter", "POSITIVE", "NON_NEGATIVE", "add_backbone_args", "add_data_args",
           "add_embedding_args", "add_eval_args", "add_model_args", "add_ranking_args",
           "float_in", "int_at_least", "progress_bars"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
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


def int_at_least(low: int, why: str = ""):
    """An argparse type: an integer >= ``low`` (``why`` is added to the error)."""

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


def float_in(low: float, high: float | None = None, low_open: bool = False):
    """An argparse type: a number >= ``low`` (> with ``low_open``) and <= ``high``."""

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


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)


def add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    """``--dataset``, ``--root``, ``--split-file``, ``--split-id``, ``--keypoints``."""
    p.add_argument("--dataset", required=required, choices=list_datasets(),
                   help="dataset name")
    p.add_argument("--root", help="dataset root folder (not needed for synthetic)")
    p.add_argument("--split-file", help="split json (prid2011, ilidsvid)")
    p.add_argument("--split-id", type=int, default=None, help="index into the split file")
    p.add_argument("--keypoints", help="COCO keypoint results file (prid2011); synthetic "
                   "data carries its own ground-truth keypoints")


def add_backbone_args(p: argparse.ArgumentParser, backbone: str,
                      pretrained: str | None) -> None:
    """``--backbone``, ``--last-stride``, ``--pretrained``, ``--height``, ``--width``, with
    the command's defaults of ``--backbone`` and ``--pretrained``."""
    p.add_argument("--backbone", default=backbone, choices=list_backbones(),
                   help="backbone network")
    p.add_argument("--last-stride", type=POSITIVE, default=1,
                   help="stride of the backbone's last stage")
    if pretrained is None:
        p.add_argument("--pretrained", help="'imagenet' (the weights packaged for "
                       "efficientnet_lite0/1/2, extra 'pretrained') or the local path of an "
                       "ImageNet state dict (.pth; torchvision's for the ResNets)")
    else:
        p.add_argument("--pretrained", default=pretrained,
                       help="'imagenet' or the local path of an ImageNet state dict")
    p.add_argument("--height", type=POSITIVE, default=256, help="input height in pixels")
    p.add_argument("--width", type=POSITIVE, default=128, help="input width in pixels")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model's constructor arguments of ``stgraph train``: the flags of STGCN's and
    CTL's settings and ``--model-arg KEY=VALUE`` for any other."""
    p.add_argument("--num-patches", type=POSITIVE, default=None,
                   help="STGCN patches per frame (default: 4)")
    p.add_argument("--num-layers", type=int, default=None,
                   help="graph layers per branch / scale (STGCN M, CTL L; default 2)")
    p.add_argument("--tau", type=int, default=None, help="CTL 3D-GCL window (default 3)")
    p.add_argument("--alpha", type=float, default=None,
                   help="CTL cross-scale weight, eq. 7 (default 0.3)")
    p.add_argument("--heatmap-temperature", type=float, default=None,
                   help="CTL heatmap softmax temperature (default 0.1; 1 is the paper's)")
    p.add_argument("--heatmap-sigma", type=float, default=None,
                   help="CTL heatmap Gaussian sigma in feature cells (default 1)")
    p.add_argument("--part-reduce", choices=["sum", "mean"], default=None,
                   help="CTL: parts summed (the paper; default) or averaged in V_f^a")
    p.add_argument("--part-grad-scale", type=float, default=None,
                   help="CTL: factor on the part branch's gradient into the backbone "
                        "(0 detaches it; default 1)")
    p.add_argument("--normalize-parts", action=argparse.BooleanOptionalAction, default=None,
                   help="CTL: parts rescaled to the global feature's norm in the fusion")
    p.add_argument("--scale-cross-attention", action=argparse.BooleanOptionalAction,
                   default=None, help="CTL: 1/sqrt(d) in the cross-scale attention "
                                      "(default on; off is the paper's)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor argument of the model, repeatable (e.g. "
                        "--model-arg dropout=0.1 --model-arg hidden=512); VALUE is read as a "
                        "Python literal (number, True/False/None, list, quoted string), else "
                        "as a string; not with the argument's own flag (--tau and "
                        "--model-arg tau=3 is an error), and not for --backbone, --last-stride, "
                        "--pretrained, --seq-len, which the run uses too")


def add_embedding_args(p: argparse.ArgumentParser) -> None:
    """How tracklets are embedded: ``--eval-feature``, ``--pool``, ``--last-clip``,
    ``--test-batch``, ``--workers``, ``--device``, ``--no-progress``."""
    p.add_argument("--eval-feature", default=None, choices=["post-bnneck", "pre-bnneck"],
                   help="the feature ranked: the embedding after the BNNeck (default, Bag of "
                        "Tricks' test feature) or the branch features before it (the "
                        "triplet loss's)")
    p.add_argument("--pool", default="mean", choices=["mean", "max"],
                   help="pooling of clip features per tracklet")
    p.add_argument("--last-clip", default="overlap", choices=["overlap", "pad"],
                   help="a test tracklet's last clip when the clip length does not divide its "
                        "length: its last --seq-len frames (default), or its remaining frames "
                        "padded by repeating the last one (torchreid's dense sampling, which "
                        "gives that frame more weight)")
    p.add_argument("--test-batch", type=POSITIVE, default=32, help="clips per test batch")
    p.add_argument("--workers", type=NON_NEGATIVE, default=2,
                   help="data loader worker processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are shown only when stdout is a terminal; "
                        "the dataset summary and the epoch lines are always printed)")


def add_ranking_args(p: argparse.ArgumentParser) -> None:
    """How embeddings are ranked: ``--metric``, ``--protocol``, ``--rerank``."""
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"],
                   help="distance between tracklet features (default cosine: higher mAP "
                        "than euclidean in all 11 rows of docs/results.md's frozen table, "
                        "higher rank-1 in 9; fast-reid's test default, and Bag of Tricks "
                        "normalises the features before ranking)")
    p.add_argument("--protocol", default="torchreid", choices=list(RANK_PROTOCOLS),
                   help="evaluation protocol; for mars also which gallery is used")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """The evaluation of ``train``, ``evaluate`` and ``plot``: the embedding and ranking
    groups."""
    add_ranking_args(p)
    add_embedding_args(p)


def progress_bars(args: argparse.Namespace) -> bool:
    """Progress bars: not with ``--no-progress``, and only when stdout is a terminal (in a
    log file tqdm's redrawn lines would run into the epoch lines)."""
    return not args.no_progress and sys.stdout.isatty()
