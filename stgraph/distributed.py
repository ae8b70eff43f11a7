r"""Multi-process training with ``torchrun`` (torch DDP): the process group, the batch the
losses see, synchronised batch norm on any backend, gathering evaluation features.

``torchrun --nproc_per_node N -m stgraph train ...`` starts N processes ("ranks"); each
gets ``P x K / N`` clips of every global ``P x K`` batch (:class:`~stgraph.data.PKSampler`
with ``num_replicas`` / ``rank``) and the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients over
the ranks. The losses are arranged so that this average equals the gradient of
single-process training on the global batch:

* cross-entropy (and every other per-clip mean, e.g. CTL's diversity loss): each rank's
  mean over its :math:`B/N` clips; :math:`\frac1N \sum_r \nabla \frac{N}{B} \sum_{i \in r}
  \ell_i = \nabla \frac1B \sum_i \ell_i`, nothing to scale;
* batch-hard triplet: every rank gathers the embeddings of the whole global batch
  (:func:`gather_batch`), so mining sees all :math:`B` clips, and computes the global
  loss :math:`L` (its value is the single-process value on every rank). Only the local
  slice carries a gradient, multiplied by :math:`N` (:func:`scale_grad`): rank
  :math:`r`'s parameters receive :math:`N\, \partial L/\partial x_r`, and the average
  over ranks is :math:`\sum_r \partial L/\partial x_r = \nabla L`;
* batch norm with ``--sync-bn``: statistics over the global batch; on CUDA
  :class:`torch.nn.SyncBatchNorm`, elsewhere (torch's needs a GPU) :class:`SyncBatchNorm`
  here, which all-reduces the sums with a differentiable all-reduce (gloo on the CPU).
  Without it every rank normalises with its own clips' statistics (as DDP does by
  default), which is not the single-process computation.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

from stgraph.errors import SettingError

__all__ = [
    "SyncBatchNorm",
    "all_gather_rows",
    "convert_sync_batchnorm",
    "gather_batch",
    "init_from_env",
    "is_distributed",
    "launched_by_torchrun",
    "rank",
    "scale_grad",
    "world_size",
]


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its env vars ``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` are set) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_distributed() -> bool:
    """A process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment: ``nccl`` for a
    CUDA ``device``, ``gloo`` otherwise; on CUDA each process takes ``cuda:LOCAL_RANK``.

    Returns:
        torch.device: this process's device.

    Raises:
        ValueError: a CUDA device with an index (``--device cuda:1``; under torchrun each
            process uses ``cuda:LOCAL_RANK``), or fewer GPUs than local processes.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index not in (None, local) and int(os.environ["WORLD_SIZE"]) > 1:
            raise SettingError("{device} {d}: under torchrun every process uses "
                               "cuda:LOCAL_RANK; give {device} cuda (or auto)", d=device)
        if local >= torch.cuda.device_count():
            raise ValueError(f"torchrun: local rank {local} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


# --------------------------------------------------------------------------------------------
# The global batch the losses see
# --------------------------------------------------------------------------------------------


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """``x`` unchanged, its gradient multiplied by ``factor`` on the way back (the same
    operation as :func:`~stgraph.models.scale_gradient`, which it calls)."""
    from stgraph.models.base import scale_gradient

    return scale_gradient(x, factor)


def all_gather_rows(x: Tensor) -> Tensor:
    """The rows of every rank's ``x`` ``(n_r, ...)`` concatenated in rank order (``n_r`` may
    differ between ranks); no gradient. Without a process group, ``x`` itself."""
    if not is_distributed():
        return x
    n = torch.tensor([x.size(0)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    top = max(sizes)
    padded = x.new_zeros((top, *x.shape[1:]))
    padded[: x.size(0)] = x.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def gather_batch(x: Tensor) -> Tensor:
    r"""Every rank's ``x`` ``(b, ...)`` (one share of a global batch, the same ``b`` on
    every rank) concatenated in rank order, ``(N b, ...)``: the global batch.

    Only this rank's slice is attached to the graph, with its gradient multiplied by the
    number of processes :math:`N`, so that DDP's average of the gradients over the ranks
    is the gradient of a loss computed once on the global batch (see the module's
    docstring). The other slices are constants here (each rank differentiates its own).
    Without a process group, ``x`` itself.
    """
    if not is_distributed():
        return x
    n = world_size()
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = scale_grad(x, float(n)) if x.requires_grad else x
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# Batch norm over the global batch, on any backend
# --------------------------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)  # every rank's sum fed every rank's loss
        return grad


def _all_reduce(x: Tensor) -> Tensor:
    """A differentiable sum over the ranks (its backward sums the gradients too)."""
    return _AllReduceSum.apply(x)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""Batch norm whose training statistics are those of the global batch, on any
    backend (gloo on the CPU as well; :class:`torch.nn.SyncBatchNorm` takes GPU inputs only).

    In training mode with a process group of more than one process, the per-channel mean
    and the biased variance are computed over every rank's inputs: two differentiable
    all-reduces (the sums and counts, then the squared deviations from the global mean:
    the two-pass variance, no :math:`E[x^2] - E[x]^2` cancellation), so the gradient
    flows through the statistics to every rank's inputs as in one process. The running
    statistics get the unbiased global variance, as :class:`~torch.nn.BatchNorm2d`. In
    eval mode, or without a process group, it is the plain batch norm. Same parameters,
    buffers and ``state_dict`` keys as the batch norm it replaces
    (:func:`convert_sync_batchnorm`). Inputs ``(B, C, *)``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        C = x.size(1)
        dims = [0, *range(2, x.dim())]
        shape = (1, C) + (1,) * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays float64
        local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // C])])
        total = _all_reduce(local)
        count = total[C]
        mean = total[:C] / count
        sq = _all_reduce(((xf - mean.view(shape)) ** 2).sum(dims))
        var = sq / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype),
                                                  alpha=m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Every batch norm of ``module`` synchronised over the ranks (``--sync-bn``):
    :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` on CUDA, :class:`SyncBatchNorm`
    elsewhere; parameters (with their ``requires_grad``) and buffers carried over. Returns
    the converted module (the same object unless ``module`` itself is a batch norm)."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, (SyncBatchNorm, nn.SyncBatchNorm)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, device=None)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out

