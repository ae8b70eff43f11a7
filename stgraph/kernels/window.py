r"""Sliding-window graph propagation of CTL's 3D graph convolution, fused (Triton).

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.3, eq. (3)-(4); the layer is
:class:`~stgraph.nn.DenseSlidingWindowGCN`.

Window ``t`` of a clip holds frames ``t - p, ..., t - p + tau - 1`` with
``p = (tau - 1) // 2`` (zero outside the clip; see :func:`sliding_windows`),
its ``tau * N`` nodes frame-major. With :math:`\hat{A}_t` the normalised window
adjacency, :math:`X` the node features (already multiplied by :math:`W`),
:math:`b` the bias and :math:`c` the depthwise collapse weights:

.. math::
    Y_{t,n} = \sum_{k=0}^{\tau-1} c_{:,k} \odot \mathrm{ReLU}\Big(
    \sum_{k'=0}^{\tau-1} \sum_{m} (\hat{A}_t)_{kN+n,\,k'N+m}\, X_{t+k'-p,\,m} + b\Big).

The plain PyTorch path (:func:`window_propagate_reference`) builds the ``tau``-times
copy of the features, ``(B, T, tau*N, C)``, and the ``(B, T, tau*N, C)`` activations
before the collapse. The Triton kernel reads each window's nodes straight from
``X`` ``(B, T, N, C)`` and fuses the propagation, bias, ReLU and collapse, so only
``(B, T, N, C)`` is written. Its backward recomputes in plain PyTorch from the saved
inputs (the ``tau``-times copy exists only transiently, inside the backward).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stgraph.kernels.backend import resolve_backend

try:  # Triton is the optional ``stgraph[triton]`` extra
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without Triton
    triton = None
    tl = None

__all__ = ["sliding_windows", "window_propagate", "window_propagate_reference"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _left(tau: int) -> int:
    """Frames of a window before its own frame (as :func:`sliding_windows`)."""
    return (tau - 1) // 2


def _check(a_hat: Tensor, xw: Tensor, tau: int, bias: Tensor | None,
           collapse: Tensor | None) -> None:
    if not isinstance(tau, int) or tau < 1:
        raise ValueError(f"tau must be an int >= 1, got {tau!r}")
    if xw.dim() != 4:
        raise ValueError(f"expected node features of shape (B, T, N, C), got {tuple(xw.shape)}")
    B, T, N, C = xw.shape
    S = tau * N
    if a_hat.shape != (B, T, S, S):
        raise ValueError(f"expected window adjacencies of shape (B, T, tau*N, tau*N) = "
                         f"{(B, T, S, S)}, got {tuple(a_hat.shape)}")
    if bias is not None and bias.shape != (C,):
        raise ValueError(f"expected a bias of shape ({C},), got {tuple(bias.shape)}")
    if collapse is not None and collapse.shape != (C, tau):
        raise ValueError(f"expected collapse weights of shape (C, tau) = {(C, tau)}, "
                         f"got {tuple(collapse.shape)}")
    if collapse is None and bias is not None:
        raise ValueError("bias is applied with the collapse only; with collapse=None the "
                         "result is the bare propagation (add a bias to it yourself)")
    for name, t in (("a_hat", a_hat), ("bias", bias), ("collapse", collapse)):
        if t is not None and t.device != xw.device:
            raise ValueError(f"{name} is on {t.device}, the node features on {xw.device}")


def sliding_windows(x: Tensor, tau: int) -> Tensor:
    r"""Temporal sliding windows with zero padding at both ends (CTL sec. 3.3).

    Window ``t`` holds frames ``t - p, ..., t - p + tau - 1`` with
    ``p = (tau - 1) // 2`` (centred for odd ``tau``; for even ``tau`` one more
    frame after ``t`` than before), zeros where a frame falls outside the clip,
    so ``T`` frames give ``T`` windows.

    Args:
        x (Tensor): ``(B, T, *rest)``.
        tau (int): window size.

    Returns:
        Tensor ``(B, T, tau, *rest)`` (a view of a padded copy).

    Examples:
        >>> sliding_windows(torch.tensor([[1.0, 2.0, 3.0]]), 3)
        tensor([[[0., 1., 2.],
                 [1., 2., 3.],
                 [2., 3., 0.]]])
    """
    if tau < 1:
        raise ValueError(f"tau must be >= 1, got {tau}")
    if x.dim() < 2:
        raise ValueError(f"expected a tensor of shape (B, T, ...), got {tuple(x.shape)}")
    left = (tau - 1) // 2
    right = tau - 1 - left
    B, T, *rest = x.shape
    padded = torch.cat([x.new_zeros(B, left, *rest), x, x.new_zeros(B, right, *rest)], dim=1)
    if torch.onnx.is_in_onnx_export():  # the exporter's Unfold needs a static T: slices
        return torch.stack([padded[:, k:k + T] for k in range(tau)], dim=2)
    return padded.unfold(1, tau, 1).movedim(-1, 2)  # (B, T, tau, *rest)


def _windows(xw: Tensor, tau: int) -> Tensor:
    """The ``tau``-times copy ``(B, T, tau*N, C)`` of :func:`sliding_windows`."""
    B, T, N, C = xw.shape
    return sliding_windows(xw, tau).reshape(B, T, tau * N, C)


def window_propagate_reference(a_hat: Tensor, xw: Tensor, tau: int, bias: Tensor | None = None,
                               collapse: Tensor | None = None) -> Tensor:
    r"""Sliding-window propagation of the 3D-GCL in plain PyTorch (CTL, eq. 3-4).

    With ``collapse`` (the layer's path): :math:`Y_{t,n} = \sum_k c_{:,k} \odot
    \mathrm{ReLU}\big([\hat{A}_t X^{(\tau)}_t]_{kN+n} + b\big)`, exactly the sequence of
    :class:`~stgraph.nn.DenseSlidingWindowGCN` (windows, batched matmul, bias, ReLU,
    depthwise collapse; BN, ReLU and the shortcut are the layer's). Without
    ``collapse``: the bare propagation :math:`\hat{A}_t X^{(\tau)}_t`, un-collapsed,
    without bias or ReLU.

    Args:
        a_hat (Tensor): normalised window adjacencies :math:`(B, T, \tau N, \tau N)`,
            window nodes frame-major (node ``k * N + n`` is node ``n`` of window frame ``k``).
        xw (Tensor): node features :math:`(B, T, N, C)` (after the linear map :math:`W`).
        tau (int): window size; window ``t`` holds frames ``t - (tau - 1) // 2`` onwards,
            zero outside the clip (:func:`sliding_windows`).
        bias (Tensor, optional): :math:`(C,)`, added before the ReLU; only with ``collapse``.
        collapse (Tensor, optional): depthwise collapse weights :math:`(C, \tau)`,
            ``collapse[c, k]`` for channel ``c`` of window frame ``k`` (the layer's
            ``collapse.weight[:, 0, :]``).

    Returns:
        Tensor :math:`(B, T, N, C)` with ``collapse``, else :math:`(B, T, \tau N, C)`.

    Raises:
        ValueError: mis-shaped inputs, ``tau < 1``, inputs on different devices, or a
            ``bias`` without ``collapse``.

    Examples:
        >>> a = torch.eye(4).expand(1, 3, 4, 4)  # tau = 2, N = 2: each node keeps its value
        >>> x = torch.arange(6.0).view(1, 3, 2, 1)
        >>> window_propagate_reference(a, x, 2, collapse=torch.tensor([[1.0, 10.0]]))[0, :, :, 0]
        tensor([[20., 31.],
                [42., 53.],
                [ 4.,  5.]])
    """
    _check(a_hat, xw, tau, bias, collapse)
    B, T, N, C = xw.shape
    h = torch.matmul(a_hat, _windows(xw, tau))  # (B, T, tau*N, C), eq. (4)
    if collapse is None:
        return h
    if bias is not None:
        h = h + bias
    h = torch.relu(h).view(B, T, tau, N, C)
    # depthwise collapse of the window, sum_k c_k * [H_t]_k (a broadcast multiply-sum is
    # cheaper than the einsum, which becomes a bmm batched over channels)
    c = collapse.t().reshape(1, 1, tau, 1, C)
    return (h * c).sum(dim=2)  # (B, T, N, C)


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _window_fwd_kernel(a_ptr, x_ptr, bias_ptr, w_ptr, out_ptr, T, C, N: tl.constexpr,
                           TAU: tl.constexpr, LEFT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           COLLAPSE: tl.constexpr, IEEE: tl.constexpr, F64: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_C: tl.constexpr):
        """One program per window ``g = b * T + t`` and block of channels.

        For each window frame ``k``: ``P_k = A[g, k*N:(k+1)*N, :] @ X_win`` as a matmul
        over the ``S = tau*N`` window nodes in chunks of ``BLOCK_K``, the chunk's rows of
        ``X_win`` gathered from ``xw`` (zero outside the clip); then bias, ReLU and
        ``c[:, k]`` into the output block, or ``P_k`` stored as is without the collapse.
        ``N`` and ``TAU`` are compile-time constants (a few skeleton scales; the loops
        unroll and the frame / node split of ``j`` divides by a constant).
        """
        S: tl.constexpr = TAU * N
        g = tl.program_id(0).to(tl.int64)
        pid_c = tl.program_id(1)
        t = g % T
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        offs_n = tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        offs_k = tl.arange(0, BLOCK_K)
        if F64:
            acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float64)
        else:
            acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_c, mask=c_ok, other=0.0).to(acc.dtype)
        out_mask = n_ok[:, None] & c_ok[None, :]
        for k in tl.static_range(TAU):
            a_rows = g * S + k * N + offs_n  # rows of a_hat viewed as (B*T*S, S)
            p = tl.zeros((BLOCK_N, BLOCK_C), dtype=acc.dtype)
            for j0 in range(0, S, BLOCK_K):
                j = j0 + offs_k  # window nodes j = frame * N + node
                j_ok = j < S
                frame = j // N
                src_t = t + frame - LEFT
                x_ok = j_ok & (src_t >= 0) & (src_t < T)
                x_rows = (g + frame - LEFT) * N + j % N  # rows of xw viewed as (B*T*N, C)
                # half inputs are widened to float32 and multiplied as TF32, which holds
                # float16 / bfloat16 values exactly: the tensor-core product of the half
                # dot (and the interpreter, whose half dot is wrong, gets the same numbers)
                x = tl.load(x_ptr + x_rows[:, None] * C + offs_c[None, :],
                            mask=x_ok[:, None] & c_ok[None, :], other=0.0).to(acc.dtype)
                a = tl.load(a_ptr + a_rows[:, None] * S + j[None, :],
                            mask=n_ok[:, None] & j_ok[None, :], other=0.0).to(acc.dtype)
                if IEEE:
                    p += tl.dot(a, x, input_precision="ieee")
                else:
                    p += tl.dot(a, x, input_precision="tf32")
            if COLLAPSE:
                if HAS_BIAS:
                    p = p + bias[None, :]
                p = tl.maximum(p, 0.0)
                wk = tl.load(w_ptr + offs_c * TAU + k, mask=c_ok, other=0.0).to(acc.dtype)
                acc += p * wk[None, :]
            else:
                tl.store(out_ptr + a_rows[:, None] * C + offs_c[None, :],
                         p.to(out_ptr.dtype.element_ty), mask=out_mask)
        if COLLAPSE:
            rows = g * N + offs_n
            tl.store(out_ptr + rows[:, None] * C + offs_c[None, :],
                     acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


def _triton_forward(a_hat: Tensor, xw: Tensor, tau: int, bias: Tensor | None,
                    collapse: Tensor | None) -> Tensor:
    """Launch the kernel; inputs contiguous, ``a_hat`` of ``xw``'s dtype."""
    B, T, N, C = xw.shape
    S = tau * N
    if collapse is None:
        out = xw.new_empty(B, T, S, C)
    else:
        dtype = xw.dtype
        for t in (bias, collapse):
            if t is not None:
                dtype = torch.promote_types(dtype, t.dtype)
        out = torch.empty(B, T, N, C, dtype=dtype, device=xw.device)
    if out.numel() == 0:
        return out
    # sizes checked spill-free for sm_90 (ptxas): float32 (FMA) and half (MMA) dots
    BLOCK_N, BLOCK_C = _pow2(N), min(64, _pow2(C))
    grid = (B * T, triton.cdiv(C, BLOCK_C))
    _window_fwd_kernel[grid](
        a_hat, xw, bias if bias is not None else xw, collapse if collapse is not None else xw,
        out, T, C, N=N,
        TAU=tau, LEFT=_left(tau), HAS_BIAS=bias is not None, COLLAPSE=collapse is not None,
        IEEE=xw.dtype in (torch.float32, torch.float64), F64=xw.dtype == torch.float64,
        BLOCK_N=BLOCK_N, BLOCK_K=16, BLOCK_C=BLOCK_C, num_warps=4 if BLOCK_N <= 16 else 8,
    )
    return out


def _fold_windows(d_win: Tensor, tau: int) -> Tensor:
    """Adjoint of the windowing: ``(B, T, tau*N, C)`` gradients back onto ``(B, T, N, C)``."""
    B, T, S, C = d_win.shape
    N, left = S // tau, _left(tau)
    d_win = d_win.view(B, T, tau, N, C)
    d_pad = d_win.new_zeros(B, T + tau - 1, N, C)  # frames -left .. T - 1 + right
    for k in range(tau):
        d_pad[:, k:k + T] += d_win[:, :, k]  # window t, frame k reads padded frame t + k
    return d_pad[:, left:left + T]


class _WindowPropagate(torch.autograd.Function):
    """Triton forward; backward recomputed in plain PyTorch from the saved inputs."""

    @staticmethod
    def forward(ctx, a_hat: Tensor, xw: Tensor, tau: int, bias: Tensor | None,
                collapse: Tensor | None) -> Tensor:
        ctx.tau = tau
        ctx.save_for_backward(a_hat, xw, bias, collapse)
        return _triton_forward(a_hat, xw, tau, bias, collapse)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a_hat, xw, bias, collapse = ctx.saved_tensors
        tau = ctx.tau
        B, T, N, C = xw.shape
        # half precision: compute the gradients in float32, cast back at the end
        dtype = torch.promote_types(xw.dtype, torch.float32)
        a = a_hat.to(dtype)
        x_win = _windows(xw.to(dtype), tau)  # (B, T, S, C), transient
        grad = grad.to(dtype)
        d_bias = d_collapse = None
        if collapse is None:
            dz = grad  # (B, T, S, C)
        else:
            z = torch.matmul(a, x_win)
            if bias is not None:
                z = z + bias.to(dtype)
            c = collapse.to(dtype).t().reshape(1, 1, tau, 1, C)
            g = grad.unsqueeze(2)  # (B, T, 1, N, C)
            if ctx.needs_input_grad[4]:
                r = torch.relu(z).view(B, T, tau, N, C)
                d_collapse = (g * r).sum(dim=(0, 1, 3)).t().to(collapse.dtype)  # (C, tau)
            dz = (g * c).masked_fill(z.view(B, T, tau, N, C) <= 0, 0).view(B, T, tau * N, C)
            if bias is not None and ctx.needs_input_grad[3]:
                d_bias = dz.sum(dim=(0, 1, 2)).to(bias.dtype)
        d_a = d_x = None
        if ctx.needs_input_grad[0]:
            d_a = torch.matmul(dz, x_win.transpose(-1, -2)).to(a_hat.dtype)
        if ctx.needs_input_grad[1]:
            d_x = _fold_windows(torch.matmul(a.transpose(-1, -2), dz), tau).to(xw.dtype)
        return d_a, d_x, None, d_bias, d_collapse


def window_propagate(a_hat: Tensor, xw: Tensor, tau: int, bias: Tensor | None = None,
                     collapse: Tensor | None = None, backend: str = "auto") -> Tensor:
    r"""Sliding-window propagation of the 3D-GCL (CTL, eq. 3-4), fused where possible.

    Same function, arguments and result as :func:`window_propagate_reference`;
    ``backend`` picks the implementation (:func:`~stgraph.kernels.resolve_backend`):

    * ``"torch"``: :func:`window_propagate_reference` (the ``tau``-times copy, batched
      matmul);
    * ``"triton"``: one fused kernel reading the windows straight from ``xw``, one
      program per window and block of 64 channels, compiled per ``(N, tau)``;
      propagation, bias, ReLU and collapse in registers, only the result written.
      Arithmetic in float32 (float64 for float64 inputs); float32 products in full
      precision, not TF32 (as PyTorch's default matmul); float16 / bfloat16 inputs
      widened and multiplied as TF32, which holds their values exactly. The backward
      recomputes in plain PyTorch from the saved inputs (in float32 for half inputs),
      so only the inputs are kept for it. ``a_hat`` is cast to ``xw``'s dtype (as
      autocast does for the matmul); with ``collapse`` the result has the promoted
      dtype of ``xw``, ``bias`` and ``collapse`` (as the PyTorch path);
    * ``"auto"``: ``"triton"`` for CUDA tensors when Triton is installed, else ``"torch"``.

    Args:
        a_hat (Tensor): :math:`(B, T, \tau N, \tau N)`.
        xw (Tensor): :math:`(B, T, N, C)`, float16, bfloat16, float32 or float64.
        tau (int): window size.
        bias (Tensor, optional): :math:`(C,)`; only with ``collapse``.
        collapse (Tensor, optional): :math:`(C, \tau)`.
        backend (str): ``"auto"``, ``"torch"`` or ``"triton"``. (default: ``"auto"``)

    Returns:
        Tensor :math:`(B, T, N, C)` with ``collapse``, else :math:`(B, T, \tau N, C)`.

    Raises:
        ValueError: as :func:`window_propagate_reference`, an unknown backend, or
            (Triton) a non-floating dtype.
        RuntimeError: ``"triton"`` where it cannot run (see
            :func:`~stgraph.kernels.resolve_backend`).

    Examples:
        >>> a = torch.eye(4).expand(1, 3, 4, 4)
        >>> x = torch.arange(6.0).view(1, 3, 2, 1)
        >>> window_propagate(a, x, 2, collapse=torch.ones(1, 2), backend="torch")[0, :, :, 0]
        tensor([[2., 4.],
                [6., 8.],
                [4., 5.]])
    """
    if resolve_backend(backend, xw.device) == "torch":
        return window_propagate_reference(a_hat, xw, tau, bias, collapse)
    _check(a_hat, xw, tau, bias, collapse)
    for name, t in (("xw", xw), ("a_hat", a_hat), ("bias", bias), ("collapse", collapse)):
        if t is not None and t.dtype not in _FLOATS:
            raise ValueError(f"the Triton kernel takes floating tensors, got {name} of {t.dtype}")
    a_hat = a_hat.to(xw.dtype).contiguous()
    xw = xw.contiguous()
    bias = bias.contiguous() if bias is not None else None
    collapse = collapse.contiguous() if collapse is not None else None
    return _WindowPropagate.apply(a_hat, xw, tau, bias, collapse)
