r"""Affinity propagation of STGCN's graph convolution, fused (Triton).

Yang et al., "Spatial-Temporal Graph Convolutional Network for Video-based
Person Re-identification", CVPR 2020, sec. 3.2, eq. (1)-(4); the layer is
:class:`~stgraph.nn.DenseAffinityGCN`.

With :math:`h = \phi(X)` ``(B, N, d)``, :math:`XW` ``(B, N, C)`` and the node mask
:math:`m` (0 on padding nodes):

.. math::
    E_{ij} = m_i m_j (h_i^\top h_j)^2, \quad s_i = \sum_j E_{ij}, \quad
    A_{ij} = \frac{E_{ij}}{\max(s_i, \epsilon)}, \quad
    \hat{A} = \tilde{D}^{-1/2} (A + \mathrm{diag}(m)) \tilde{D}^{-1/2}, \quad
    Y = \hat{A}\, XW.

The plain PyTorch path (:func:`affinity_propagate_reference`) writes :math:`e`,
:math:`A` and :math:`\hat{A}` ``(B, N, N)`` to memory, a dozen kernels. The Triton
kernel keeps the ``N x N`` tile in registers: it accumulates the Gram matrix
:math:`h h^\top` over blocks of ``d``, normalises it, and multiplies with blocks of
:math:`XW`; only ``(B, N, C)`` is written. The degrees need no second pass over
:math:`A`: a row of :math:`A` sums to :math:`s_i / \max(s_i, \epsilon)`, i.e. 1 (so
:math:`\tilde{D}_{ii} = 2`) unless the row's squared affinities sum below
:math:`\epsilon`, so :math:`\tilde{D}_{ii} = m_i + s_i / \max(s_i, \epsilon)`
(1 for a node whose affinities are all zero, 0 for padding). The backward is a
Triton kernel too: it recomputes the ``N x N`` matrices from the saved inputs.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from stgraph.kernels.backend import resolve_backend

try:  # Triton is the optional ``stgraph[triton]`` extra
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without Triton
    triton = None
    tl = None

__all__ = [
    "EPS",
    "MAX_NODES",
    "AffinityPropagate",
    "affinity_propagate",
    "affinity_adjacency",
    "affinity_propagate_reference",
]

#: Most nodes per graph the Triton kernel takes (its ``N x N`` tile lives in registers);
#: ``backend="auto"`` falls back to the plain path for larger graphs.
MAX_NODES = 128

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Most programs sharing one graph: each recomputes the graph's Gram matrix and
#: propagates its share of the channels.
_MAX_SPLITS = 8


#: Floor of the squared-affinity row sums and of the degrees, so that a node whose
#: affinities are all zero gets a zero row instead of NaN (the clamp of
#: :class:`~stgraph.nn.AffinityGCNConv` and of this module's paths).
EPS = 1e-12


def affinity_adjacency(h: Tensor, mask: Tensor | None = None, adj: Tensor | None = None) -> Tensor:
    r"""Normalised affinity adjacency :math:`\hat{A}` of STGCN (eq. 1-3), dense.

    :math:`e = h h^\top`, :math:`A = e^2` row-normalised over the allowed
    neighbours, :math:`\tilde{A} = A + I`,
    :math:`\hat{A} = \tilde{D}^{-1/2}\tilde{A}\tilde{D}^{-1/2}`.

    Args:
        h (Tensor): embedded node features :math:`\phi(X)`, ``(B, N, d)``.
        mask (BoolTensor, optional): ``(B, N)``, :obj:`False` marks padding
            nodes: they have no edges, and their rows and columns are zero.
        adj (Tensor, optional): ``(B, N, N)`` or ``(N, N)`` 0/1 matrix of the
            edges allowed (row ``i`` = the neighbours node ``i`` aggregates
            from); :obj:`None` means the complete graph with self-loops.

    Returns:
        Tensor of shape ``(B, N, N)``.
    """
    e2 = torch.matmul(h, h.transpose(-1, -2)).square()  # (B, N, N)
    if adj is not None:
        e2 = e2 * adj
    if mask is not None:
        m = mask.to(e2.dtype)
        e2 = e2 * m.unsqueeze(-1) * m.unsqueeze(-2)
    a = e2 / e2.sum(dim=-1, keepdim=True).clamp_min(EPS)  # row-normalised A
    eye = torch.eye(a.size(-1), dtype=a.dtype, device=a.device)
    if mask is not None:
        eye = eye * m.unsqueeze(-1)  # (B, N, N): no self-loop on padding nodes
    a = a + eye  # A + I
    deg_inv_sqrt = a.sum(dim=-1).clamp_min(EPS).rsqrt()  # (B, N)
    return deg_inv_sqrt.unsqueeze(-1) * a * deg_inv_sqrt.unsqueeze(-2)


def _check(h: Tensor, xw: Tensor, mask: Tensor | None) -> None:
    if h.dim() != 3:
        raise ValueError(f"expected embedded features h of shape (B, N, d), got {tuple(h.shape)}")
    if xw.dim() != 3 or xw.shape[:2] != h.shape[:2]:
        raise ValueError(f"expected node features xw of shape (B, N, C) = "
                         f"{tuple(h.shape[:2]) + ('C',)}, got {tuple(xw.shape)}")
    if not h.is_floating_point() or h.dtype != xw.dtype:
        raise ValueError(f"h and xw must have one floating dtype, got {h.dtype} and {xw.dtype}")
    if h.device != xw.device:
        raise ValueError(f"h is on {h.device}, xw on {xw.device}")
    if mask is not None:
        if mask.shape != h.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"expected a bool mask of shape (B, N) = {tuple(h.shape[:2])}, "
                             f"got {mask.dtype} of shape {tuple(mask.shape)}")
        if mask.device != h.device:
            raise ValueError(f"mask is on {mask.device}, h on {h.device}")


def affinity_propagate_reference(h: Tensor, xw: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Affinity propagation :math:`\hat{A} XW` in plain PyTorch (STGCN, eq. 1-4).

    Exactly the propagation of :class:`~stgraph.nn.DenseAffinityGCN`:
    ``affinity_adjacency(h, mask) @ xw`` (:func:`affinity_adjacency`).

    Args:
        h (Tensor): embedded node features :math:`\phi(X)`, :math:`(B, N, d)`.
        xw (Tensor): node features after the linear map, :math:`XW`, :math:`(B, N, C)`,
            of ``h``'s dtype.
        mask (BoolTensor, optional): :math:`(B, N)`, :obj:`False` on padding nodes: no
            edges, no self-loop, zero rows in the result.

    Returns:
        Tensor :math:`(B, N, C)`.

    Raises:
        ValueError: mis-shaped inputs, ``h`` and ``xw`` of different dtypes or devices,
            or a mask that is not a ``(B, N)`` bool tensor.

    Examples:
        >>> h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # e^2 rows sum 2, 2, 6
        >>> affinity_propagate_reference(h, torch.tensor([[[2.0], [0.0], [6.0]]]))
        tensor([[[3.0000],
                 [1.5000],
                 [5.1667]]])
    """
    _check(h, xw, mask)
    return torch.matmul(affinity_adjacency(h, mask=mask), xw)  # (B, N, C)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
# The loops run to constexpr trip counts (D_STEPS, C_STEPS, ...): Triton's interpreter cannot
# loop to a runtime bound under NumPy >= 2.4 (triton-lang/triton#9171). On the GPU this only
# compiles one variant per layer shape; the loops stay loops (not unrolled).

if triton is not None:

    @triton.jit
    def _gram(h_ptr, rows, node_ok, D, stride_hn, stride_hd,
              F64: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D_STEPS: tl.constexpr):
        """:math:`e = h h^\\top` ``(BLOCK_N, BLOCK_N)`` of one graph, zero on padding nodes."""
        e = tl.zeros((BLOCK_N, BLOCK_N), dtype=tl.float32)
        if F64:
            e = e.to(tl.float64)
        for i in range(D_STEPS):
            offs_d = i * BLOCK_D + tl.arange(0, BLOCK_D)
            hb = tl.load(h_ptr + rows[:, None] * stride_hn + offs_d[None, :] * stride_hd,
                         mask=node_ok[:, None] & (offs_d[None, :] < D), other=0.0)
            e += tl.dot(hb, tl.trans(hb), input_precision=PRECISION).to(e.dtype)
        return e

    @triton.jit
    def _normalise(e, rows, node_ok, eps):
        """Row sums ``s``, row-normalised ``A``, ``A + diag(m)``, degrees and ``D^-1/2``."""
        e2 = e * e
        s = tl.sum(e2, axis=1)  # (BLOCK_N,)
        s_clamped = tl.maximum(s, eps)
        a = e2 / s_clamped[:, None]
        diag = (rows[:, None] == rows[None, :]) & node_ok[:, None]
        a_tilde = a + tl.where(diag, 1.0, 0.0).to(e.dtype)
        deg = node_ok.to(e.dtype) + s / s_clamped  # row sums of A + diag(m), no second pass
        g = 1.0 / tl.sqrt(tl.maximum(deg, eps))
        return s, s_clamped, a, a_tilde, deg, g

    @triton.jit
    def _propagate_chunk(mat, src_ptr, dst_ptr, rows, node_ok, row_ok, p, per, total,
                         stride_sn, stride_sc, stride_dn, stride_dc,
                         PRECISION: tl.constexpr, BLOCK: tl.constexpr, STEPS: tl.constexpr):
        """``dst[:, cols] = mat @ src[:, cols]`` of one graph for channel chunk ``p``
        (``cols`` = ``p * per`` .. ``min((p + 1) * per, total) - 1``, ``STEPS`` blocks of
        ``BLOCK``): source rows of masked or padding nodes read as 0, padding rows not
        stored."""
        lo = p * per
        hi = tl.minimum(lo + per, total)
        for i in range(STEPS):
            offs = lo + i * BLOCK + tl.arange(0, BLOCK)
            col_ok = offs < hi
            src = tl.load(src_ptr + rows[:, None] * stride_sn + offs[None, :] * stride_sc,
                          mask=node_ok[:, None] & col_ok[None, :], other=0.0)
            out = tl.dot(mat.to(src.dtype), src, input_precision=PRECISION)
            tl.store(dst_ptr + rows[:, None] * stride_dn + offs[None, :] * stride_dc,
                     out.to(dst_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _affinity_fwd_kernel(h_ptr, x_ptr, mask_ptr, out_ptr, N, D, C, c_per, eps,
                             stride_hb, stride_hn, stride_hd,
                             stride_xb, stride_xn, stride_xc,
                             stride_mb, stride_mn,
                             stride_ob, stride_on, stride_oc,
                             HAS_MASK: tl.constexpr, F64: tl.constexpr,
                             PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
                             D_STEPS: tl.constexpr, C_STEPS: tl.constexpr):
        """Program ``(b, p)``: graph ``b``, channels ``p * c_per`` .. ``(p + 1) * c_per - 1``
        (``c_per = C_STEPS * BLOCK_C``)."""
        b = tl.program_id(0).to(tl.int64)
        p = tl.program_id(1)
        rows = tl.arange(0, BLOCK_N)
        row_ok = rows < N
        node_ok = row_ok
        if HAS_MASK:
            m = tl.load(mask_ptr + b * stride_mb + rows * stride_mn, mask=row_ok, other=0)
            node_ok = row_ok & (m != 0)
        e = _gram(h_ptr + b * stride_hb, rows, node_ok, D, stride_hn, stride_hd,
                  F64, PRECISION, BLOCK_N, BLOCK_D, D_STEPS)
        s, s_clamped, a, a_tilde, deg, g = _normalise(e, rows, node_ok, eps)
        a_hat = g[:, None] * a_tilde * g[None, :]  # (BLOCK_N, BLOCK_N), rows/cols 0 on padding
        _propagate_chunk(a_hat, x_ptr + b * stride_xb, out_ptr + b * stride_ob, rows,
                         node_ok, row_ok, p, c_per, C, stride_xn, stride_xc,
                         stride_on, stride_oc, PRECISION, BLOCK_C, C_STEPS)

    @triton.jit
    def _affinity_bwd_kernel(h_ptr, x_ptr, mask_ptr, gy_ptr, dh_ptr, dx_ptr,
                             N, D, C, c_per, d_per, eps,
                             stride_hb, stride_hn, stride_hd,
                             stride_xb, stride_xn, stride_xc,
                             stride_mb, stride_mn,
                             stride_gb, stride_gn, stride_gc,
                             stride_dhb, stride_dhn, stride_dhd,
                             stride_dxb, stride_dxn, stride_dxc,
                             HAS_MASK: tl.constexpr, NEED_DH: tl.constexpr,
                             NEED_DX: tl.constexpr, F64: tl.constexpr,
                             PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
                             D_STEPS: tl.constexpr, C_STEPS: tl.constexpr,
                             D_STEPS_PER: tl.constexpr, C_STEPS_PER: tl.constexpr):
        """Program ``(b, p)``: graph ``b``; ``d(XW)`` on channels ``p * c_per`` onwards and
        ``dh`` on embedding channels ``p * d_per`` onwards (``c_per = C_STEPS_PER * BLOCK_C``
        and ``d_per = D_STEPS_PER * BLOCK_D`` of them)."""
        b = tl.program_id(0).to(tl.int64)
        p = tl.program_id(1)
        rows = tl.arange(0, BLOCK_N)
        row_ok = rows < N
        node_ok = row_ok
        if HAS_MASK:
            m = tl.load(mask_ptr + b * stride_mb + rows * stride_mn, mask=row_ok, other=0)
            node_ok = row_ok & (m != 0)
        h_base = h_ptr + b * stride_hb
        x_base = x_ptr + b * stride_xb
        gy_base = gy_ptr + b * stride_gb
        e = _gram(h_base, rows, node_ok, D, stride_hn, stride_hd,
                  F64, PRECISION, BLOCK_N, BLOCK_D, D_STEPS)
        s, s_clamped, a, a_tilde, deg, g = _normalise(e, rows, node_ok, eps)
        if NEED_DX:
            # d(XW) = A^T dY, A^ = D^-1/2 (A + diag(m)) D^-1/2
            a_hat_t = tl.trans(g[:, None] * a_tilde * g[None, :])
            _propagate_chunk(a_hat_t, gy_base, dx_ptr + b * stride_dxb, rows, node_ok, row_ok,
                             p, c_per, C, stride_gn, stride_gc, stride_dxn, stride_dxc,
                             PRECISION, BLOCK_C, C_STEPS_PER)
        if NEED_DH:
            # dA^_ij = dY_i . XW_j over all channels
            dah = tl.zeros((BLOCK_N, BLOCK_N), dtype=tl.float32)
            if F64:
                dah = dah.to(tl.float64)
            for i in range(C_STEPS):
                offs_c = i * BLOCK_C + tl.arange(0, BLOCK_C)
                tile_ok = node_ok[:, None] & (offs_c[None, :] < C)
                gy = tl.load(gy_base + rows[:, None] * stride_gn + offs_c[None, :] * stride_gc,
                             mask=tile_ok, other=0.0)
                x = tl.load(x_base + rows[:, None] * stride_xn + offs_c[None, :] * stride_xc,
                            mask=tile_ok, other=0.0)
                dah += tl.dot(gy, tl.trans(x.to(gy.dtype)),
                              input_precision=PRECISION).to(dah.dtype)
            gi = g[:, None]
            gj = g[None, :]
            # through D^-1/2: dg_i = sum_j dA^_ij At_ij g_j + sum_j dA^_ji At_ji g_j
            q = dah * a_tilde
            dg = tl.sum(q * gj, axis=1) + tl.sum(q * gi, axis=0)
            ddeg = tl.where(deg >= eps, -0.5 * g * g * g * dg, 0.0)
            # deg_i = m_i + s_i / max(s_i, eps): constant unless s_i < eps
            da = gi * dah * gj  # dA = d(A + diag(m))
            ds = tl.where(s >= eps, -tl.sum(da * a, axis=1) / s_clamped, ddeg / eps)
            de = 2.0 * e * (da / s_clamped[:, None] + ds[:, None])  # E = e^2
            de_sym = de + tl.trans(de)  # e = h h^T
            _propagate_chunk(de_sym, h_base, dh_ptr + b * stride_dhb, rows, node_ok, row_ok,
                             p, d_per, D, stride_hn, stride_hd, stride_dhn, stride_dhd,
                             PRECISION, BLOCK_D, D_STEPS_PER)


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


def _config(h: Tensor, xw: Tensor) -> dict:
    """Block sizes and launch options for one ``(B, N, d)``, ``(B, N, C)`` problem."""
    N, D, C = h.size(1), h.size(2), xw.size(2)
    block_n = _pow2(N)
    wide = block_n >= 64 or h.dtype == torch.float64
    return dict(
        F64=h.dtype == torch.float64,
        # float32 products as torch's matmuls: full precision unless TF32 is allowed
        # (torch.set_float32_matmul_precision); the setting only concerns float32
        PRECISION="ieee" if h.dtype == torch.float32 and
        torch.get_float32_matmul_precision() == "highest" else "tf32",
        BLOCK_N=block_n,
        BLOCK_D=min(32 if wide else 64, _pow2(D)),
        BLOCK_C=min(32 if block_n >= 128 else 64, _pow2(C)),
        num_warps=4 if block_n <= 32 else 8,
    )


def _splits(batch: int, blocks: int, device: torch.device) -> int:
    """Programs per graph: enough to fill the GPU, at most one per block of channels."""
    if device.type != "cuda":
        return 1  # the interpreter runs programs one after the other
    return max(1, min(_MAX_SPLITS, blocks, triton.cdiv(_num_sms(device.index), batch)))


@functools.cache
def _num_sms(index: int | None) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _mask_args(mask: Tensor | None, like: Tensor) -> tuple[Tensor, int, int]:
    if mask is None:
        return like, 0, 0
    # int32, not the bool bytes: an 8-bit load feeding the dot operands' masks makes Triton
    # pick 8-bit operand packing for them, which it cannot lower for float64 (sm_90)
    mask = mask.to(torch.int32)
    return mask, mask.stride(0), mask.stride(1)


def _triton_forward(h: Tensor, xw: Tensor, mask: Tensor | None, splits: int | None = None,
                    blocks: dict | None = None) -> Tensor:
    """Launch the forward kernel: ``splits`` programs per graph (default: ``_splits``),
    ``blocks`` overriding entries of ``_config`` (the tests use both)."""
    B, N, D = h.shape
    C = xw.size(2)
    out = torch.empty(B, N, C, dtype=xw.dtype, device=xw.device)
    if out.numel() == 0:
        return out
    cfg = {**_config(h, xw), **(blocks or {})}
    c_blocks = triton.cdiv(C, cfg["BLOCK_C"])
    splits = min(c_blocks, splits or _splits(B, c_blocks, h.device))
    c_steps = triton.cdiv(c_blocks, splits)
    c_per = c_steps * cfg["BLOCK_C"]
    m, smb, smn = _mask_args(mask, h)
    _affinity_fwd_kernel[(B, triton.cdiv(C, c_per))](
        h, xw, m, out, N, D, C, c_per, EPS,
        *h.stride(), *xw.stride(), smb, smn, *out.stride(),
        HAS_MASK=mask is not None, D_STEPS=triton.cdiv(D, cfg["BLOCK_D"]), C_STEPS=c_steps,
        **cfg,
    )
    return out


def _triton_backward(h: Tensor, xw: Tensor, mask: Tensor | None, grad: Tensor, need_h: bool,
                     need_xw: bool, splits: int | None = None,
                     blocks: dict | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Launch the backward kernel: ``(dh, d_xw)``, :obj:`None` where not needed
    (``splits`` and ``blocks`` as :func:`_triton_forward`)."""
    B, N, D = h.shape
    C = xw.size(2)
    # every element is written by the kernel
    dh = torch.empty(h.shape, dtype=h.dtype, device=h.device) if need_h else None
    dx = torch.empty(xw.shape, dtype=xw.dtype, device=xw.device) if need_xw else None
    if B * N == 0 or not (need_h or need_xw):
        return dh, dx
    cfg = {**_config(h, xw), **(blocks or {})}
    c_blocks = triton.cdiv(C, cfg["BLOCK_C"]) if need_xw else 0
    d_blocks = triton.cdiv(D, cfg["BLOCK_D"]) if need_h else 0
    n_blocks = max(c_blocks, d_blocks, 1)
    splits = min(n_blocks, splits or _splits(B, n_blocks, h.device))
    c_steps, d_steps = triton.cdiv(c_blocks, splits), triton.cdiv(d_blocks, splits)
    m, smb, smn = _mask_args(mask, h)
    dh_arg = dh if dh is not None else h
    dx_arg = dx if dx is not None else xw
    _affinity_bwd_kernel[(B, splits)](
        h, xw, m, grad, dh_arg, dx_arg, N, D, C, c_steps * cfg["BLOCK_C"],
        d_steps * cfg["BLOCK_D"], EPS,
        *h.stride(), *xw.stride(), smb, smn, *grad.stride(), *dh_arg.stride(),
        *dx_arg.stride(),
        HAS_MASK=mask is not None, NEED_DH=need_h, NEED_DX=need_xw,
        D_STEPS=triton.cdiv(D, cfg["BLOCK_D"]), C_STEPS=triton.cdiv(C, cfg["BLOCK_C"]),
        D_STEPS_PER=d_steps, C_STEPS_PER=c_steps, **cfg,
    )
    return dh, dx


class AffinityPropagate(torch.autograd.Function):
    r"""The fused affinity propagation :math:`\hat{A}(h)\, XW` as an autograd function.

    ``AffinityPropagate.apply(h, xw, mask)`` with ``h`` :math:`(B, N, d)`, ``xw``
    :math:`(B, N, C)`, ``mask`` a :math:`(B, N)` bool tensor or :obj:`None`; returns
    :math:`(B, N, C)`. Forward and backward are Triton kernels (CUDA tensors, or CPU
    tensors under ``TRITON_INTERPRET=1``); the backward recomputes the ``N x N``
    matrices from the saved ``h``, ``xw`` and ``mask``, nothing ``N x N`` is saved.
    Once differentiable. Prefer :func:`affinity_propagate`, which validates the inputs
    and picks the backend.
    """

    @staticmethod
    def forward(ctx, h: Tensor, xw: Tensor, mask: Tensor | None) -> Tensor:
        ctx.save_for_backward(h, xw, mask)
        return _triton_forward(h, xw, mask)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        h, xw, mask = ctx.saved_tensors
        dh, dx = _triton_backward(h, xw, mask, grad, ctx.needs_input_grad[0],
                                  ctx.needs_input_grad[1])
        return dh, dx, None


def affinity_propagate(h: Tensor, xw: Tensor, mask: Tensor | None = None,
                       backend: str = "auto") -> Tensor:
    r"""Affinity propagation :math:`\hat{A} XW` of STGCN (eq. 1-4), fused where possible.

    Same function, arguments and result as :func:`affinity_propagate_reference`;
    ``backend`` picks the implementation (:func:`~stgraph.kernels.resolve_backend`):

    * ``"torch"``: :func:`affinity_propagate_reference` (the ``(B, N, N)`` matrices in
      memory, batched matmul);
    * ``"triton"``: one fused kernel, one or more programs per graph (each takes a share
      of the ``C`` channels and recomputes the graph's ``N x N`` tile in registers), only
      ``(B, N, C)`` written; the backward is a fused kernel too, recomputing the tile
      from the saved inputs. Accumulated in float32 (float64 for float64 inputs), the
      float32 products in full precision unless TF32 is allowed
      (``torch.set_float32_matmul_precision("high")``); half inputs multiply in their dtype
      on the tensor cores (the normalised tile is cast to it, as the PyTorch path holds
      it). At most :data:`MAX_NODES` nodes per graph;
    * ``"auto"``: ``"triton"`` for CUDA tensors when Triton is installed and
      ``N <= MAX_NODES``, else ``"torch"``.

    Args:
        h (Tensor): :math:`\phi(X)`, :math:`(B, N, d)`; float16, bfloat16, float32 or
            float64.
        xw (Tensor): :math:`XW`, :math:`(B, N, C)`, of ``h``'s dtype.
        mask (BoolTensor, optional): :math:`(B, N)`, :obj:`False` on padding nodes.
        backend (str): ``"auto"``, ``"torch"`` or ``"triton"``. (default: ``"auto"``)

    Returns:
        Tensor :math:`(B, N, C)`, zero rows on padding nodes.

    Raises:
        ValueError: as :func:`affinity_propagate_reference`, an unknown backend, or
            ``"triton"`` with more than :data:`MAX_NODES` nodes per graph.
        RuntimeError: ``"triton"`` where it cannot run (see
            :func:`~stgraph.kernels.resolve_backend`).

    Examples:
        >>> h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
        >>> affinity_propagate(h, torch.tensor([[[2.0], [0.0], [6.0]]]), backend="torch")
        tensor([[[3.0000],
                 [1.5000],
                 [5.1667]]])
    """
    resolved = resolve_backend(backend, h.device)
    _check(h, xw, mask)
    if resolved == "triton" and h.size(1) > MAX_NODES:
        if backend == "triton":
            raise ValueError(f"the Triton kernel takes graphs of at most {MAX_NODES} nodes, got "
                             f"{h.size(1)}; use backend='torch' (or 'auto')")
        resolved = "torch"
    if resolved == "torch":
        return affinity_propagate_reference(h, xw, mask)
    if h.dtype not in _FLOATS:
        raise ValueError(f"the Triton kernel takes float16, bfloat16, float32 or float64, got "
                         f"{h.dtype}")
    return AffinityPropagate.apply(h, xw, mask)
