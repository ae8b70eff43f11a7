"""Get the graphs a model builds out of it, without editing the model: forward hooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from stgraph.nn import DenseAffinityGCN, DenseCrossScaleGCN, DenseSlidingWindowGCN

__all__ = ["GRAPH_LAYERS", "models_with_graphs", "record_graphs"]

#: Dense graph layers whose graphs :func:`record_graphs` records, with the keyword that makes
#: each return its graph: the normalised affinity adjacency :math:`\hat{A}` ``(B, N, N)``
#: (STGCN), the normalised window adjacencies ``(B, T, tau*N, tau*N)`` (CTL 3D-GCL), the
#: cross-scale attention ``(B, T, N_coarse, N_fine)`` (CTL CS-GCL).
GRAPH_LAYERS: dict[type[nn.Module], str] = {
    DenseAffinityGCN: "return_adjacency",
    DenseSlidingWindowGCN: "return_adjacency",
    DenseCrossScaleGCN: "return_attention",
}


def models_with_graphs() -> list[str]:
    """Registered model names that build graphs (sorted): those whose constructor takes a
    graph ``backend`` (dense or PyG layers), e.g. ``["ctl", "stgcn"]``; the models
    :func:`record_graphs` and ``stgraph plot --what adjacency|temporal|skeleton|cross-scale``
    work on."""
    import inspect

    from stgraph.models.registry import get_model_class, list_models

    return [name for name in list_models()
            if "backend" in inspect.signature(get_model_class(name)).parameters]


@contextmanager
def record_graphs(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record the graph of every dense graph layer of ``model`` during the forward passes.

    Inside the ``with`` block each forward of a layer listed in :data:`GRAPH_LAYERS`
    adds its graph, per clip, to the yielded dict under the layer's qualified name
    (``model.named_modules()``, e.g. ``"temporal.convs.0"`` for STGCN,
    ``"gcls.s1.0"`` and ``"cs_gcls.s1"`` for CTL); several forward passes are
    concatenated along the clip dimension. The model itself is not edited: a forward
    hook calls the layer once more on the same inputs with its ``return_adjacency`` /
    ``return_attention`` flag, without gradients, and restores the layer's buffers
    (batch-norm statistics) afterwards, so the recorded graph is exactly the one of
    the forward pass and nothing else changes. That second call costs one more
    forward of each graph layer while recording. Hooks are removed on exit.

    Sparse (PyG) layers build no dense graph and are not recorded: build the model
    with a dense backend to plot its graphs.

    Args:
        model (nn.Module): any module holding stgraph graph layers.

    Yields:
        dict[str, Tensor]: layer name -> graph, filled as the model runs (detached).

    Raises:
        ValueError: the model holds no dense graph layer (the message says why).

    Examples:
        >>> from stgraph.models import create_model
        >>> model = create_model("stgcn", num_classes=4, backbone="resnet18", seq_len=2,
        ...                      num_patches=2).eval()
        >>> with record_graphs(model) as graphs:
        ...     _ = model(torch.randn(3, 2, 3, 64, 32))
        >>> tuple(graphs["temporal.convs.0"].shape)   # 3 clips, T * P = 4 nodes
        (3, 4, 4)
    """
    graphs: dict[str, Tensor] = {}
    layers = [(name, m) for name, m in model.named_modules() if type(m) in GRAPH_LAYERS]
    if not layers and not any(isinstance(m, MessagePassing) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} builds no graph; the models that do: "
                         f"{', '.join(models_with_graphs())}")
    if not layers:
        raise ValueError(
            f"{type(model).__name__} holds no dense graph layer "
            f"({', '.join(t.__name__ for t in GRAPH_LAYERS)}); a model built with "
            "backend='pyg' has only sparse layers: rebuild it with a dense backend"
        )
    busy: set[str] = set()

    def hook(name: str, flag: str):
        def record(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            if name in busy:  # the second call below runs the hook again
                return
            busy.add(name)
            saved = [b.detach().clone() for b in module.buffers()]
            try:
                with torch.no_grad():
                    graph = module(*args, **{**kwargs, flag: True})[1].detach()
            finally:
                with torch.no_grad():
                    for buf, old in zip(module.buffers(), saved, strict=True):
                        buf.copy_(old)
                busy.discard(name)
            old = graphs.get(name)
            graphs[name] = graph if old is None else torch.cat([old, graph])

        return record

    handles = [m.register_forward_hook(hook(name, GRAPH_LAYERS[type(m)]), with_kwargs=True)
               for name, m in layers]
    try:
        yield graphs
    finally:
        for h in handles:
            h.remove()
