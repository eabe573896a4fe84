"""GPU fast paths for ``ssd_scan`` and ``gated_delta_rule`` through flash-linear-attention's Triton kernels
(PyPI ``fla-core``, imported as ``fla``; the ``fla`` extra of pyproject.toml pins the version tested).

* ``gated_delta_rule_fla``: ``fla.ops.gated_delta_rule``'s chunked kernels. Same layout as ours
  (q, k: (b, L, H, K); v: (b, L, H, V); g, beta: (b, L, H)), same recurrence
  S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T (scale q_t); g is the per-step
  log decay (fla cumsums it per chunk); q and k are taken as given (no in-kernel L2 norm), as ours.
* ``ssd_scan_fla``: Mamba-2's SSD is scalar-decay ("simple") gated linear attention per head:
  delta = softplus(dt + dt_bias) and D x are computed here in torch, then ``fla.ops.simple_gla`` runs
  S_t = exp(g_t) S_{t-1} + k_t v_t^T, y_t = S_t^T q_t with q = C and k = B (groups expanded to heads),
  v = x * delta, g = delta * A, scale 1. Gradients of dt, A, dt_bias, D, x, B, C flow through those torch ops.

Numerics: q/k/v run in the input's dtype (fp32, bf16 or fp16), the log decays g in fp32; the output is in the
reference's dtype (x's for ssd_scan, v's for gated_delta_rule). bf16 / fp16 inputs use 16-bit tensor-core dots.
fp32 inputs run fla's kernels with 3xTF32 dots (``_fp32_dots``): fla's decay gradient is a difference of large
terms (q . dq - k . dk), which magnifies plain TF32's ~1e-4 error in its inputs 100-1000 times (dA off by 5e-3 to
2.6e-2 against float64 on an H100; up to 0.46 in a CPU emulation of TF32, where 3xTF32 gave 1e-4). fla picks its
own chunk length (64), so ``chunk_size`` / ``chunk`` only matter to the reference.

Where fla cannot take the call, both functions fall back to the pure-torch reference, logging the reason once
per reason: float64 inputs (fla has no fp64 kernels), a non-CUDA tensor, or a key dimension above
``MAX_KEY_DIM`` (fla's state kernels hold a (K, BV) block per program). Head dims that are not multiples of 16
are zero-padded (zero key/query columns and value columns leave the recurrence and the kept outputs unchanged).

Hopper with Triton in [3.4.0, 3.7.1) (fla issue #640): fla's gated ``chunk_bwd_dqkwg`` is miscompiled when its
key block is 64 wide (key dims 33..64; 32 and 128 are right) and fla 0.6.0 refuses to run it there at all.
On such a machine the key dim is padded from 33..64 up to 128 (so the block is 128 wide), and fla's guard is
lifted only inside our own backward calls (``_fla_guard_lifted``), never for other users of fla in the
process. There, too, every head dim is padded to a whole number of fla's blocks (a power of two up to 128, a
multiple of 128 above): on an H100 (2026-12-08) the one bf16 case with a partly filled block (value dim 40,
padded to 48 in a 64-wide block) stopped with an illegal memory access inside ``chunk_bwd_kernel_dqkwg``, twice,
while the five bf16 cases whose dims filled their blocks passed (docs/gated_deltanet.md).
tests/gpu/test_fla_parity_gpu.py checks every gradient against the float64 reference, K = 64 included.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from rom.kernels.reference.gated_delta import CHUNK, check_gated_delta_inputs, gated_delta_rule_reference
from rom.kernels.reference.ssd import ssd_scan_reference

log = logging.getLogger(__name__)

MAX_KEY_DIM = 256  # fla 0.6.0 asserts K <= 256 in its delta-rule state kernels
FLA_CHUNK = 64  # fla's chunk length for both ops (its default; the gated delta rule accepts 16, 32 or 64)
_FLA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_GUARD_MODULE = "fla.ops.common.chunk_o"  # holds the #640 guard's flags


@functools.cache
def _warn_once(op: str, reason: str) -> None:
    log.warning("%s: fla cannot take this call (%s); using the pure-torch reference", op, reason)


def _unsupported(op: str, tensors: tuple[Tensor, ...], key_dim: int) -> str | None:
    """Why fla cannot run this call, or None."""
    t = tensors[0]
    if t.device.type != "cuda":
        return f"tensors on {t.device.type}, fla needs CUDA"
    dtypes = {x.dtype for x in tensors}
    if not dtypes <= set(_FLA_DTYPES):
        return f"dtype {sorted(str(d) for d in dtypes - set(_FLA_DTYPES))} (fla takes float32, bfloat16, float16)"
    if key_dim > MAX_KEY_DIM:
        return f"key dim {key_dim} > {MAX_KEY_DIM}"
    return None


@functools.cache
def _hopper_bk64_bug(device_index: int) -> bool:
    """fla issue #640: a Hopper GPU (sm_90) with Triton in [3.4.0, 3.7.1)."""
    import triton  # noqa: PLC0415 (only reached on CUDA, where fla imported)

    from packaging.version import Version  # noqa: PLC0415 (fla's own dependency)

    major, _ = torch.cuda.get_device_capability(device_index)
    return major == 9 and Version("3.4.0") <= Version(triton.__version__.split("+")[0]) < Version("3.7.1")


def _padded_dim(n: int, key: bool, device: torch.device) -> int:
    p = -(-n // 16) * 16
    if _hopper_bk64_bug(device.index if device.index is not None else 0):
        # fla's guard is lifted here (_fla_guard_lifted): keep every dim a whole number of fla's blocks
        # (min(next_power_of_2(d), 128) wide), the only dims seen to run right on such a machine (module docstring)
        p = 1 << (p - 1).bit_length() if p <= 128 else -(-p // 128) * 128
        if key and p == 64:
            p = 128  # key block 128 wide instead of the miscompiled 64 (fla #640)
    return p


def _pad_last(t: Tensor, size: int) -> Tensor:
    return t if t.shape[-1] == size else F.pad(t, (0, size - t.shape[-1]))


@contextlib.contextmanager
def _fla_guard_lifted(device: torch.device) -> Iterator[None]:
    """Let fla's gated chunk_bwd_dqkwg run on an affected Hopper machine for the duration of our backward; only
    safe because every call from this module pads the key dim away from the miscompiled 64-wide block."""
    if not _hopper_bk64_bug(device.index if device.index is not None else 0):
        yield
        return
    module = importlib.import_module(_GUARD_MODULE)
    saved = module.TRITON_ABOVE_3_7_1
    module.TRITON_ABOVE_3_7_1 = True
    try:
        yield
    finally:
        module.TRITON_ABOVE_3_7_1 = saved


FP32_DOT_PRECISION = "tf32x3"  # Triton's input precision for fla's fp32 x fp32 dots (see the module docstring)


def _fp32_dots(dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    """Kernels compiled inside compute their fp32 dots as 3xTF32 (Triton's ``TRITON_F32_DEFAULT`` knob, which
    fla's dots follow: they name no precision). Triton reads it while compiling and keys its on-disk cache on
    it; its in-process cache is not, so a kernel that something else in this process compiled first for the
    same fp32 specialization keeps that precision. Nothing changes for 16-bit inputs."""
    if dtype != torch.float32:
        return contextlib.nullcontext()
    import triton  # noqa: PLC0415 (fla needs it; only reached once fla imported)

    language = getattr(getattr(triton, "knobs", None), "language", None)
    if language is None or not hasattr(language, "scope"):
        _warn_once("fla fp32", f"triton {triton.__version__} has no knobs.language.scope(); fp32 dots stay TF32")
        return contextlib.nullcontext()
    return _knob_scope(language, "fp32_default", FP32_DOT_PRECISION)


@contextlib.contextmanager
def _knob_scope(knobs: Any, name: str, value: str) -> Iterator[None]:
    with knobs.scope():  # restores the knob and its environment variable on exit
        setattr(knobs, name, value)
        yield


class _SimpleGLA(torch.autograd.Function):
    """fla's ChunkSimpleGLAFunction run through its forward/backward, with our backward inside the guard scope
    and fp32 dots as 3xTF32 (``_fp32_dots``)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
        from fla.ops.simple_gla.chunk import ChunkSimpleGLAFunction  # noqa: PLC0415 (optional package)

        ctx.rom_dtype = q.dtype
        with _fp32_dots(q.dtype):
            o, _ = ChunkSimpleGLAFunction.forward(ctx, q, k, v, g, None, 1.0, None, False, False, None, None,
                                                  FLA_CHUNK)
        return o

    @staticmethod
    def backward(ctx: Any, do: Tensor) -> tuple[Tensor | None, ...]:
        from fla.ops.simple_gla.chunk import ChunkSimpleGLAFunction  # noqa: PLC0415

        with _fla_guard_lifted(do.device), _fp32_dots(ctx.rom_dtype):
            dq, dk, dv, dg, *_ = ChunkSimpleGLAFunction.backward(ctx, do.contiguous(), None)
        return dq, dk, dv, dg


class _GatedDelta(torch.autograd.Function):
    """fla's ChunkGatedDeltaRuleFunction, likewise."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float) -> Tensor:
        from fla.ops.gated_delta_rule.chunk import ChunkGatedDeltaRuleFunction  # noqa: PLC0415

        ctx.rom_dtype = q.dtype
        with _fp32_dots(q.dtype):
            o, _ = ChunkGatedDeltaRuleFunction.forward(
                ctx, q, k, v, g, beta, scale, None, False, False, None, None, None,
                False, False, None, None, False, False, None, FLA_CHUNK)
        return o

    @staticmethod
    def backward(ctx: Any, do: Tensor) -> tuple[Tensor | None, ...]:
        from fla.ops.gated_delta_rule.chunk import ChunkGatedDeltaRuleFunction  # noqa: PLC0415

        with _fla_guard_lifted(do.device), _fp32_dots(ctx.rom_dtype):
            dq, dk, dv, dg, db, *_ = ChunkGatedDeltaRuleFunction.backward(ctx, do.contiguous(), None)
        return dq, dk, dv, dg, db, None


def ssd_scan_fla(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                 dt_bias: Tensor | None, chunk_size: int) -> Tensor:
    """Same contract as rom.kernels.reference.ssd.ssd_scan_reference (``chunk_size`` is the reference's; fla
    uses ``FLA_CHUNK``)."""
    b, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if H % G:
        raise ValueError(f"ssd_scan: {H} heads are not divisible into {G} groups of B and C")
    why = _unsupported("ssd_scan", (x, B, C), N)
    if why is not None:
        _warn_once("ssd_scan", why)
        return ssd_scan_reference(x, dt, A, B, C, D, dt_bias, chunk_size)
    cdt = x.dtype
    delta = F.softplus(dt.float() + (dt_bias.float() if dt_bias is not None else 0.0))  # (b, L, H)
    g = delta * A.float()  # log decay per step and head
    Np, Pp = _padded_dim(N, True, x.device), _padded_dim(P, False, x.device)
    # heads h of group h // (H / G) share its B and C
    q = _pad_last(C.to(cdt).repeat_interleave(H // G, dim=2), Np)
    k = _pad_last(B.to(cdt).repeat_interleave(H // G, dim=2), Np)
    v = _pad_last((x.float() * delta.unsqueeze(-1)).to(cdt), Pp)
    y = _SimpleGLA.apply(q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous())[..., :P]
    if D is not None:
        y = y.float() + x.float() * D.float()[:, None]
    return y.to(x.dtype)


def gated_delta_rule_fla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None,
                         chunk: int = CHUNK) -> Tensor:
    """Same contract as rom.kernels.reference.gated_delta.gated_delta_rule_reference without an initial or a
    final state (``chunk`` is the reference's; fla uses ``FLA_CHUNK``)."""
    check_gated_delta_inputs(q, k, v, g, beta)
    K, V = q.shape[-1], v.shape[-1]
    why = _unsupported("gated_delta_rule", (q, k, v), K)
    if why is not None:
        _warn_once("gated_delta_rule", why)
        return gated_delta_rule_reference(q, k, v, g, beta, scale, chunk=chunk)
    scale = K**-0.5 if scale is None else scale  # from the unpadded K
    cdt = v.dtype
    Kp, Vp = _padded_dim(K, True, q.device), _padded_dim(V, False, q.device)
    o = _GatedDelta.apply(_pad_last(q.to(cdt), Kp).contiguous(), _pad_last(k.to(cdt), Kp).contiguous(),
                          _pad_last(v, Vp).contiguous(), g.float().contiguous(), beta.to(cdt).contiguous(),
                          float(scale))
    return o[..., :V].to(v.dtype)


__all__ = ["FLA_CHUNK", "FP32_DOT_PRECISION", "MAX_KEY_DIM", "gated_delta_rule_fla", "ssd_scan_fla"]
