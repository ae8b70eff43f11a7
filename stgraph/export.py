"""Export a model's embedding to ONNX, and run it with onnxruntime.

The graph (TorchScript-based exporter, ``torch.onnx.export(..., dynamo=False)``: the
dynamo exporter needs the extra ``onnxscript`` package):

* inputs: ``clips`` :math:`(B, T, 3, H, W)` float32, normalised as
  :func:`~stgraph.data.transforms.load_clip` does, and for a model that takes keypoints
  (:func:`stgraph.models.base.takes_keypoints`, CTL) ``keypoints`` :math:`(B, T, 17, 3)`
  float32, rows ``(x, y, score)`` in pixels of the :math:`H \\times W` frames;
* output: ``embedding`` :math:`(B, D)` float32, the model's eval-mode ``"embedding"``;
* :math:`B` is dynamic (``dynamic_batch``); :math:`T`, :math:`H`, :math:`W` are fixed
  at export. Every model needs a fixed :math:`T` somewhere: STGCN's spatial branch
  concatenates the :math:`T` frames, RRU's recurrence and CTL's sliding windows are
  unrolled over them.

The graph layers run their dense path (``backend="torch"``): :func:`load_for_export`
rebuilds a checkpoint's model that way, and :func:`export_onnx` refuses a model built
with ``backend="pyg"`` or ``"triton"``.

Install the runtime with ``pip install 'stgraph[export]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stgraph.checkpoint import load_checkpoint
from stgraph.models.base import takes_keypoints

__all__ = ["EmbeddingGraph", "OnnxEmbedder", "check_onnx", "example_inputs", "export_onnx",
           "load_for_export", "onnx_session", "run_onnx"]

#: Input and output names of the exported graph.
INPUT_NAMES = ("clips", "keypoints")
OUTPUT_NAME = "embedding"


class EmbeddingGraph(nn.Module):
    """The eval-mode embedding of a model, the module :func:`export_onnx` traces.

    ``forward(clips)`` (or ``forward(clips, keypoints)`` for a model that takes
    keypoints) returns ``model(clips, ...)["embedding"]``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.keypoints = takes_keypoints(model)

    def forward(self, clips: Tensor, keypoints: Tensor | None = None) -> Tensor:
        if self.keypoints:
            return self.model(clips, keypoints=keypoints)["embedding"]
        return self.model(clips)["embedding"]


def _model_name(model: nn.Module) -> str:
    from stgraph.models import get_model_class, list_models

    for name in list_models():
        if type(model) is get_model_class(name):
            return f"{name} ({type(model).__name__})"
    return type(model).__name__


def _operator(err: Exception) -> str:
    """The operator an exporter error names (``aten::kron``), or ``"unknown"``."""
    text = str(err)
    for pattern in (r"operator '([\w:.]+)'", r"export of operator ([\w:.]+)",
                    r"operator ([\w:.]+)", r"(aten::\w+|prim::\w+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return "unknown"


def example_inputs(model: nn.Module, batch: int, *, seq_len: int, height: int, width: int,
                   seed: int = 0) -> tuple[Tensor, ...]:
    """Random inputs of the exported graph: ``(clips,)`` or ``(clips, keypoints)``, clips
    ``(batch, seq_len, 3, height, width)`` (the clip size keyword-only, in stgraph's one
    order).

    Clips are standard normal (the scale of normalised frames); keypoints are the prior
    pose of the frame (:func:`~stgraph.graph.prior_pose`) moved by up to 2 pixels.
    """
    from stgraph.graph.keypoints import prior_pose

    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, seq_len, 3, height, width, generator=g)
    if not takes_keypoints(model):
        return (clips,)
    kp = torch.from_numpy(prior_pose(height, width)).expand(batch, seq_len, 17, 3).clone()
    kp[..., :2] += 4 * torch.rand(batch, seq_len, 17, 2, generator=g) - 2
    return clips, kp


def export_onnx(model: nn.Module, path: str | os.PathLike, *, seq_len: int, height: int,
                width: int, opset: int = 17, dynamic_batch: bool = True) -> Path:
    r"""Write the eval-mode embedding of ``model`` as an ONNX graph.

    The model is copied to the CPU and traced (TorchScript-based exporter) on a batch of
    2 random clips; the model itself is not changed. See the module docstring for the
    graph's inputs and outputs. With the ``onnx`` package installed the graph records
    ``height``, ``width``, ``seq_len`` and the model's name in its metadata.

    Args:
        model (nn.Module): a registered stgraph model (any module whose output dict
            has ``"embedding"`` :math:`(B, D)`).
        path (str or Path): the ``.onnx`` file (its folder is created).
        height (int): frame height :math:`H` in pixels.
        width (int): frame width :math:`W` in pixels.
        seq_len (int): clip length :math:`T` (fixed in the graph).
        opset (int): ONNX opset version. (default: :obj:`17`)
        dynamic_batch (bool): a dynamic batch dimension; else :math:`B = 2` fixed.
            (default: :obj:`True`)

    Returns:
        Path: ``path``.

    Raises:
        ValueError: a size < 1; ``seq_len`` other than an STGCN's ``seq_len``; a model
            built with ``backend="pyg"`` or ``"triton"`` (rebuild it with
            ``backend="torch"`` and load the state dict, or use
            :func:`load_for_export`).
        RuntimeError: the exporter cannot export an operator of the model (the message
            names the model and the operator).
    """
    for name, value in (("height", height), ("width", width), ("seq_len", seq_len)):
        if int(value) != value or value < 1:
            raise ValueError(f"export_onnx: {name} must be an int >= 1, got {value!r}")
    label = _model_name(model)
    backend = getattr(model, "backend", None)
    if backend in ("pyg", "triton"):
        raise ValueError(f"export_onnx: model {label} uses backend={backend!r}; the export "
                         "takes the dense path: rebuild it with backend='torch' and load its "
                         "state dict (load_for_export does that for a checkpoint)")
    model_len = getattr(model, "seq_len", None)
    if model_len is not None and int(model_len) != int(seq_len):
        raise ValueError(f"export_onnx: model {label} was built for clips of "
                         f"seq_len={model_len} frames, got seq_len={seq_len}")
    graph = EmbeddingGraph(copy.deepcopy(model).cpu().float()).eval()
    args = example_inputs(model, 2, seq_len=seq_len, height=height, width=width)
    names = list(INPUT_NAMES[:len(args)])
    dynamic = ({n: {0: "batch"} for n in [*names, OUTPUT_NAME]} if dynamic_batch else None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values
            torch.onnx.export(graph, args, str(path), input_names=names,
                              output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                              opset_version=opset, dynamo=False)
    except (torch.onnx.errors.OnnxExporterError, torch.onnx.errors.SymbolicValueError,
            RuntimeError) as err:
        if isinstance(err, (torch.onnx.errors.UnsupportedOperatorError,
                            torch.onnx.errors.SymbolicValueError)) or "nsupported" in str(err):
            raise RuntimeError(f"cannot export model {label} to ONNX (opset {opset}): "
                               f"operator {_operator(err)} is not supported by the "
                               f"exporter: {str(err).splitlines()[0]}") from err
        raise
    _add_metadata(path, {"stgraph_model": label, "height": str(height), "width": str(width),
                         "seq_len": str(seq_len),
                         "keypoints": str(takes_keypoints(model)).lower()})
    return path


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        return
    m = onnx.load(str(path))
    for key, value in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(path))


def load_for_export(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """A checkpoint's model on the CPU with its graph layers on the dense path.

    :func:`stgraph.checkpoint.load_checkpoint`, then for a model trained with
    ``backend="pyg"`` / ``"triton"`` the same model rebuilt with ``backend="torch"``
    (the same parameters and numbers) and the checkpoint's weights loaded.

    Returns:
        ``(model, config)``, the model in eval mode.

    Raises:
        FileNotFoundError, ValueError: as :func:`~stgraph.checkpoint.load_checkpoint`.
    """
    from stgraph.models import create_model

    model, cfg = load_checkpoint(path, "cpu")
    if getattr(model, "backend", None) in ("pyg", "triton"):
        dense = create_model(cfg["model"], num_classes=cfg["num_classes"],
                             **{**cfg["model_kwargs"], "backend": "torch"})
        dense.load_state_dict(model.state_dict())
        model = dense.eval()
    return model, cfg


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` of an exported graph.

    Args:
        path (str or Path): the ``.onnx`` file.
        threads (int, optional): intra-op threads (default: onnxruntime's, all cores).

    Raises:
        ImportError: onnxruntime is not installed (``pip install 'stgraph[export]'``).
        FileNotFoundError: no file at ``path``.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("onnxruntime is not installed: pip install 'stgraph[export]' "
                          "(or pip install onnx onnxruntime)") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, clips: Tensor, keypoints: Tensor | None = None) -> Tensor:
    """The graph's ``embedding`` :math:`(B, D)` of ``clips`` :math:`(B, T, 3, H, W)` (and
    ``keypoints`` :math:`(B, T, 17, 3)` for a graph that takes them), as a tensor.

    Raises:
        ValueError: keypoints missing for a graph that takes them (or given to one that
            does not).
    """
    names = [i.name for i in session.get_inputs()]
    feeds = {names[0]: clips.detach().cpu().to(torch.float32).numpy()}
    if len(names) > 1:
        if keypoints is None:
            raise ValueError(f"the ONNX graph takes {names[1]!r} (B, T, 17, 3): pass keypoints")
        feeds[names[1]] = keypoints.detach().cpu().to(torch.float32).numpy()
    elif keypoints is not None:
        raise ValueError("the ONNX graph takes no keypoints")
    return torch.from_numpy(np.asarray(session.run([OUTPUT_NAME], feeds)[0]))


@torch.no_grad()
def check_onnx(model: nn.Module, path: str | os.PathLike, *, seq_len: int, height: int,
               width: int, batches: tuple[int, ...] = (2, 3), seed: int = 1) -> float:
    """The largest :math:`|\\text{onnx} - \\text{eager}|` of the embeddings of random
    inputs (:func:`example_inputs`) of each batch size in ``batches``.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    session = onnx_session(path)
    graph = EmbeddingGraph(copy.deepcopy(model).cpu().float()).eval()
    worst = 0.0
    for i, b in enumerate(batches):
        inputs = example_inputs(model, b, seq_len=seq_len, height=height, width=width,
                                seed=seed + i)
        eager = graph(*inputs)
        got = run_onnx(session, *inputs)
        if got.shape != eager.shape:
            raise ValueError(f"ONNX embedding of shape {tuple(got.shape)}, eager "
                             f"{tuple(eager.shape)} (batch {b})")
        worst = max(worst, float((got - eager).abs().max()))
    return worst


class OnnxEmbedder(nn.Module):
    """An onnxruntime session of an exported graph behind the model interface, so that
    :class:`stgraph.inference.FeatureExtractor` (and :func:`stgraph.eval.extract_features`)
    embed tracklets with it: ``forward(clips, keypoints=None)`` returns
    ``{"embedding": (B, D)}`` on the CPU.

    Args:
        session: an ``onnxruntime.InferenceSession`` (:func:`onnx_session`) or the path
            of an ``.onnx`` file.
        threads (int, optional): intra-op threads when ``session`` is a path.
    """

    def __init__(self, session, threads: int | None = None) -> None:
        super().__init__()
        if isinstance(session, (str, os.PathLike)):
            session = onnx_session(session, threads)
        self.session = session
        names = [i.name for i in session.get_inputs()]
        self.input_keys = tuple(names[1:2])  # ("keypoints",) for a graph that takes them

    def forward(self, clips: Tensor, keypoints: Tensor | None = None) -> dict[str, Tensor]:
        return {"embedding": run_onnx(self.session, clips, keypoints)}
