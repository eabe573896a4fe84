"""The Triton kernels run in Triton's CPU interpreter against float64 references (a worker, not a test module).

``tests/test_triton_interpreter.py`` starts this in a subprocess, because ``TRITON_INTERPRET=1`` must be set
before the kernels are defined and the rest of the suite imports them compiled. The interpreter executes each
program instance with numpy, so what it checks is the kernels' algorithm: indexing, masks, the chunked
recurrence and its adjoint, segment carries, the per-chunk dB / dC tiles, every block shape. It does not check
what only a GPU can: layouts, shuffles, the inline-PTX fast math (``fast_math()`` is off here) or speed; the
GPU suite (``tests/gpu``) does that.

    TRITON_INTERPRET=1 python tests/triton_interpreter_cases.py scan|conv|layout|cast|routing|inner

Prints one JSON line per case and exits 1 if any case is out of tolerance.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("tests/triton_interpreter_cases.py: set TRITON_INTERPRET=1 (the kernels must be defined interpreted)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.runtime.interpreter as interpreter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rom.kernels import (  # noqa: E402
    inner_path, mamba_inner_reference, triton_adamw, triton_cast, triton_combine, triton_conv, triton_dispatch,
    triton_gather, triton_router, triton_scan)
from rom.kernels.reference import experts  # noqa: E402
from rom.kernels.reference.routing import (  # noqa: E402
    route_top1_reference, router_inputs_backward_reference, router_inputs_reference)
from rom.kernels.reference.adamw import adamw_step_reference  # noqa: E402
from rom.kernels.reference.conv import causal_conv1d_reference  # noqa: E402
from rom.kernels.reference.scan import selective_scan_reference  # noqa: E402

TOL_OUT, TOL_GRAD = 1e-5, 1e-4   # fp32 kernels (interpreted in numpy fp32) against float64


def _numpy2_index_fix() -> None:
    """Triton 3.6's interpreter converts scalars with int(array) on 1-element arrays, which NumPy >= 2.4 refuses
    (a loop bound derived from program_id then fails); convert through .item() instead."""
    try:
        int(np.ones(1))
        return
    except TypeError:
        pass
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return (a - b).norm().item() / max(b.norm().item(), 1e-300)


def _compare(fn: Callable, ref_fn: Callable, inputs: list[torch.Tensor | None]) -> dict[str, float]:
    """Output and every input gradient of fn (fp32) against ref_fn on float64 copies, same output gradient."""
    ours = [t.clone().requires_grad_(True) if t is not None else None for t in inputs]
    ref = [t.detach().double().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*ours)
    out_ref = ref_fn(*ref)
    dout = torch.randn_like(out)
    out.backward(dout)
    out_ref.backward(dout.double())
    errors = {"out": _rel(out, out_ref)}
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a is not None and a.grad is not None:
            errors[f"grad{i}"] = _rel(a.grad, b.grad)
    return errors


def _scan_inputs(batch: int, d: int, L: int, n: int, full: bool) -> list[torch.Tensor | None]:
    return [torch.randn(batch, d, L), torch.randn(batch, d, L) * 0.5, -torch.exp(torch.randn(d, n) * 0.5),
            torch.randn(batch, n, L), torch.randn(batch, n, L),
            torch.randn(d) if full else None, torch.randn(batch, d, L) if full else None,
            torch.rand(d) * -3.0 - 1.0 if full else None]


# (batch, d_inner, L, d_state, fwd_config, bwd_config, z / D / bias / softplus): lengths that are no multiple of the
# chunk, channels no multiple of the block, the automatic plan, every backward block shape, forced segments
SCAN_CASES = [
    (2, 20, 37, 16, None, None, True),
    (2, 20, 37, 16, None, (8, 1, 1), True),
    (2, 20, 37, 16, (16, 1, 1), (16, 1, 1), False),
    (1, 24, 300, 16, (32, 1, 3), (8, 1, 3), True),
    (1, 10, 130, 64, (8, 1, 2), (4, 1, 2), True),
    (1, 12, 45, 64, None, (2, 1, 1), False),
]


def run_scan() -> list[dict]:
    rows = []
    for batch, d, L, n, fwd_cfg, bwd_cfg, full in SCAN_CASES:
        def ours(u, delta, A, B, C, D, z, bias, impl="v2"):
            return triton_scan.selective_scan_triton(u, delta, A, B, C, D, z, bias, delta_softplus=full,
                                                     fwd_config=fwd_cfg, bwd_config=bwd_cfg, impl=impl)

        def ref(u, delta, A, B, C, D, z, bias):
            return selective_scan_reference(u, delta, A, B, C, D, z, bias, delta_softplus=full)

        inputs = _scan_inputs(batch, d, L, n, full)
        name = f"{batch}x{d}x{L} N{n} fwd {fwd_cfg} bwd {bwd_cfg} full={full}"
        rows.append({"case": f"scan {name}", "errors": _compare(ours, ref, inputs)})
        with torch.no_grad():   # the forward without checkpoints (its own B / C lookahead)
            out = ours(*inputs)
            rows.append({"case": f"scan no-grad forward {name}",
                         "errors": {"out": _rel(out, ref(*[t.double() if t is not None else None for t in inputs]))}})
    # v1, the chunked associative scan kept for comparison
    rows.append({"case": "scan v1 2x20x37 N16 full=True",
                 "errors": _compare(lambda *x: triton_scan.selective_scan_triton(*x, delta_softplus=True, impl="v1"),
                                    lambda *x: selective_scan_reference(*x, delta_softplus=True),
                                    _scan_inputs(2, 20, 37, 16, True))})
    return rows


def run_conv() -> list[dict]:
    """The conv through autograd (lengths spanning several of the backward's overlapping windows), and the
    backward launcher with a second output gradient and dx written into a half of a wider, poisoned buffer."""
    rows = []
    for batch, d, L, width, bias, silu in [(2, 7, 33, 4, True, True), (1, 5, 17, 3, False, False),
                                           (1, 6, 300, 4, True, True), (1, 16, 400, 4, True, True)]:
        act = "silu" if silu else None
        inputs = [torch.randn(batch, d, L), torch.randn(d, width), torch.randn(d) if bias else None]
        errors = _compare(lambda x, w, b: triton_conv.causal_conv1d_triton(x, w, b, activation=act),
                          lambda x, w, b: causal_conv1d_reference(x, w, b, activation=act), inputs)
        rows.append({"case": f"conv {batch}x{d}x{L} width {width} bias={bias} silu={silu}", "errors": errors})
    for batch, d, L, width in [(2, 5, 251, 4), (1, 18, 130, 3), (1, 32, 384, 4)]:
        xz = torch.randn(batch, 2 * d, L)
        w, b = torch.randn(d, width), torch.randn(d)
        dy, dy_extra = torch.randn(batch, d, L), torch.randn(batch, d, L)
        buffer = torch.full((batch, 2 * d, L), float("nan"))
        _, dw, db = triton_conv.conv_backward(xz[:, :d], w, b, dy, True, dx_out=buffer[:, :d], dy_extra=dy_extra)
        ref = [xz[:, :d].double().requires_grad_(True), w.double().requires_grad_(True), b.double().requires_grad_(True)]
        causal_conv1d_reference(*ref, activation="silu").backward((dy + dy_extra).double())
        rows.append({"case": f"conv backward {batch}x{d}x{L} width {width} + dy_extra, dx into a half buffer",
                     "errors": {"grad0": _rel(buffer[:, :d], ref[0].grad), "grad1": _rel(dw, ref[1].grad),
                                "grad2": _rel(db, ref[2].grad),
                                "untouched_half_still_poisoned": 0.0 if bool(buffer[:, d:].isnan().all()) else 1.0}})
    return rows


def run_layout() -> list[dict]:
    """The two layout kernels, forward only: each one's backward is the other (tests/test_kernels_layout.py)."""
    rows = []
    for batch, L, n_ch, top_k, scale in [(2, 37, 20, 1, 1.0), (1, 19, 9, 2, 0.5)]:
        slots = batch * L * top_k
        inverse = torch.randperm(slots)
        src = torch.randn(slots, n_ch)
        out = triton_gather.rows_to_channels_triton(src, inverse, top_k, batch, L, scale)
        ref = experts.rows_to_channels_reference(src.double(), inverse, top_k, batch, L, scale)
        rows.append({"case": f"rows_to_channels {batch}x{L} C{n_ch} k{top_k}", "errors": {"out": _rel(out, ref)}})
        chans = torch.randn(batch, L, n_ch).transpose(1, 2)   # the layer's strided channels-first view
        out = triton_gather.channels_to_rows_triton(chans, inverse, top_k, scale)
        ref = experts.channels_to_rows_reference(chans.double(), inverse, top_k, scale)
        rows.append({"case": f"channels_to_rows {batch}x{L} C{n_ch} k{top_k}", "errors": {"out": _rel(out, ref)}})
    return rows


def run_cast() -> list[dict]:
    """The widening cast over sizes that end inside a block (exact: the error must be 0)."""
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for n in (1, 4095, 4097, 3 * 4096 + 5):
            src = torch.randn(n).to(dtype)
            out = triton_cast.upcast_triton(src, torch.float32)
            rows.append({"case": f"upcast {str(dtype)[6:]} n={n}",
                         "errors": {"out": 0.0 if torch.equal(out, src.float()) else _rel(out, src.float()) + 1.0}})
            acc = torch.randn(n)
            want = acc + src.float()
            triton_cast.upcast_add_triton(acc, src)
            rows.append({"case": f"upcast_add {str(dtype)[6:]} n={n}",
                         "errors": {"out": 0.0 if torch.equal(acc, want) else _rel(acc, want) + 1.0}})
    src = torch.randn(3, 37, 20).to(torch.bfloat16).transpose(1, 2)  # dense but not contiguous
    out = triton_cast.upcast_triton(src, torch.float32)
    ok = torch.equal(out, src.float()) and out.stride() == src.stride()
    rows.append({"case": "upcast transposed", "errors": {"out": 0.0 if ok else 1.0}})
    return rows


def run_routing() -> list[dict]:
    """The weighted un-permutation (forward and both gradients) against float64, and the counting-sort
    dispatch against torch's stable sort (exact: positions must be equal)."""
    rows = []
    for n_tok, d, top_k, weighted in [(37, 20, 1, True), (70, 131, 2, True), (33, 129, 2, False), (1, 3, 1, True)]:
        inverse = torch.randperm(n_tok * top_k)
        src, grad = torch.randn(n_tok * top_k, d), torch.randn(n_tok, d)
        w = torch.rand(n_tok, top_k) if weighted else None
        out = triton_combine.combine_rows_triton(src, inverse, w, top_k)
        ref = experts.combine_rows_reference(src.double(), inverse, w.double() if weighted else None, top_k)
        g_rows, g_w = triton_combine.combine_rows_backward_triton(grad, src, inverse, w, top_k, True, True)
        r_rows, r_w = experts.combine_rows_backward_reference(grad.double(), src.double(), inverse,
                                                             w.double() if weighted else None, top_k, True, True)
        errors = {"out": _rel(out, ref), "grad_rows": _rel(g_rows, r_rows)}
        if weighted:
            errors["grad_weights"] = _rel(g_w, r_w)
        rows.append({"case": f"combine_rows T{n_tok} d{d} k{top_k} weighted={weighted}", "errors": errors})
    for n, n_experts in [(1, 1), (37, 3), (3000, 8), (700, 64), (5000, 5)]:
        ids = torch.randint(0, n_experts, (n,))
        ids[: n // 3] = 0  # skewed, and some experts empty
        ours = triton_dispatch.expert_positions_triton(ids, n_experts)
        ref = experts.expert_positions_reference(ids, n_experts)
        same = all(torch.equal(a.long(), b.long()) for a, b in zip(ours, ref))
        rows.append({"case": f"dispatch n{n} E{n_experts}", "errors": {"out": 0.0 if same else 1.0}})
    for n_tok, d, n_experts, with_gh in [(70, 131, 8, True), (5, 20, 3, False), (129, 256, 20, True)]:
        x, w = torch.randn(n_tok, d), torch.randn(n_experts, d)
        gh, gl = torch.randn(n_tok, d) if with_gh else None, torch.randn(n_tok, n_experts)
        h, logits = triton_router.router_inputs_triton(x, w)
        h_ref, logits_ref = router_inputs_reference(x.double(), w.double())
        dx = triton_router.router_inputs_backward_triton(gh, gl, w, torch.float32, x)
        dx_ref = router_inputs_backward_reference(gh.double() if with_gh else None, gl.double(),
                                                                w.double(), torch.float64, x)
        rows.append({"case": f"router_inputs T{n_tok} d{d} E{n_experts} dh={with_gh}",
                     "errors": {"out": max(_rel(h, h_ref), _rel(logits, logits_ref)), "grad_x": _rel(dx, dx_ref)}})
    for n_tok, n_experts in [(1, 2), (300, 8), (77, 5), (130, 64)]:
        logits = torch.randn(n_tok, n_experts) * 2
        ours_in, ref_in = logits.clone().requires_grad_(True), logits.double().requires_grad_(True)
        w, idx, mean = triton_router.route_top1_triton(ours_in)
        w_ref, idx_ref, mean_ref = route_top1_reference(ref_in)
        dw, dmean = torch.randn(n_tok, 1), torch.randn(n_experts)
        torch.autograd.backward((w, mean), (dw, dmean))
        torch.autograd.backward((w_ref, mean_ref), (dw.double(), dmean.double()))
        errors = {"out": max(_rel(w, w_ref), _rel(mean, mean_ref), 0.0 if torch.equal(idx, idx_ref) else 1.0),
                  "grad_logits": _rel(ours_in.grad, ref_in.grad)}
        rows.append({"case": f"route_top1 T{n_tok} E{n_experts}", "errors": errors})
    return rows


# (batch, d_inner, L, d_state, forward / backward scan config): the mixer's inner path on one xz tensor
INNER_CASES = [
    (2, 12, 37, 16, None, None),
    (1, 8, 150, 16, (8, 1, 3), (4, 1, 3)),   # several segments
    (2, 6, 19, 64, None, (2, 1, 1)),
]


def run_inner() -> list[dict]:
    """``inner_path.mamba_inner_triton`` (the conv's and the scan's gradients written into the halves of one
    d xz buffer) against the composed float64 reference, forward and every gradient."""
    rows = []
    fwd, bwd = inner_path.scan_forward_v2, inner_path.scan_backward_v2
    for batch, d, L, n, fwd_cfg, bwd_cfg in INNER_CASES:
        r = 3

        def inner(fn, xz, conv_w, conv_b, A, D, w_x, w_dt, dt_bias, backend):
            def project(x):
                dt, B, C = torch.einsum("od,bdl->bol", w_x, x).split([r, n, n], dim=1)
                return torch.einsum("do,bol->bdl", w_dt, dt), B, C, dt_bias
            return fn(xz, conv_w, conv_b, A, D, project, *([] if backend is None else [backend]))

        inputs = [torch.randn(batch, 2 * d, L), torch.randn(d, 4) * 0.5, torch.randn(d),
                  -torch.exp(torch.randn(d, n) * 0.5), torch.randn(d), torch.randn(r + 2 * n, d) * d**-0.5,
                  torch.randn(d, r) * r**-0.5, torch.rand(d) * -3.0 - 1.0]
        inner_path.scan_forward_v2 = lambda *a, **k: fwd(*a, config=fwd_cfg, **k)
        inner_path.scan_backward_v2 = lambda *a, **k: bwd(*a, config=bwd_cfg, **k)
        try:
            errors = _compare(lambda *x: inner(inner_path.mamba_inner_triton, *x, None),
                              lambda *x: inner(mamba_inner_reference, *x, "reference"), inputs)
        finally:
            inner_path.scan_forward_v2, inner_path.scan_backward_v2 = fwd, bwd
        rows.append({"case": f"inner {batch}x{d}x{L} N{n} fwd {fwd_cfg} bwd {bwd_cfg}", "errors": errors})
    return rows


def run_adamw() -> list[dict]:
    """The master-weight AdamW update (fp32 master and moments, bf16 working copy) of several weights in one
    call (sizes ending inside a block; bf16 and fp32 gradients, which launch separately; a weight of 2^20 + 5
    elements, which launches alone; a transposed weight, which goes to the reference), three steps, against
    float64 copies."""
    rows = []
    for wd in (0.0, 0.1):
        sizes = (1, 2047, 4 * 2048 + 3, 3 * 4 * 2048, (1 << 20) + 5)  # the last one gets a launch of its own
        grad_dtypes = (torch.bfloat16, torch.float32, torch.bfloat16, torch.bfloat16, torch.bfloat16)
        masters = [torch.randn(n) for n in sizes] + [torch.randn(6, 40).t()]  # the last one not contiguous
        grad_dtypes += (torch.bfloat16,)
        ms = [torch.zeros_like(p) for p in masters]
        vs = [torch.zeros_like(p) for p in masters]
        works = [torch.full_like(p, float("nan"), dtype=torch.bfloat16) for p in masters]
        ref = [[t.double() for t in ts] for ts in (masters, ms, vs)]
        ref_works = [torch.empty_like(p, dtype=torch.float64) for p in masters]
        for step in (1, 2, 3):
            grads = [torch.randn(p.shape).to(dt) for p, dt in zip(masters, grad_dtypes)]
            args = (3e-3, wd, 0.9, 0.95, 1e-8, step)
            triton_adamw.adamw_step_triton(masters, grads, ms, vs, works, *args)
            adamw_step_reference(ref[0], grads, ref[1], ref[2], ref_works, *args)
        for i, p in enumerate(masters):
            # the interpreter's fp32 -> bf16 conversion truncates (the GPU's rounds to nearest, checked exactly in
            # tests/gpu/test_master_weights_gpu.py): the working copy must lie within one bf16 step of the master
            within = bool(((works[i].float() - p).abs() <= p.abs() * 2.0**-7).all())
            rows.append({"case": f"adamw wd={wd} weight {i} {tuple(p.shape)} grad {str(grad_dtypes[i])[6:]}",
                         "errors": {"out": _rel(p, ref[0][i]), "grad_exp_avg": _rel(ms[i], ref[1][i]),
                                    "grad_exp_avg_sq": _rel(vs[i], ref[2][i]),
                                    "grad_working_within_one_bf16_step": 0.0 if within else 1.0}})
    return rows


GROUPS = {"scan": run_scan, "conv": run_conv, "layout": run_layout, "cast": run_cast, "routing": run_routing,
          "inner": run_inner, "adamw": run_adamw}


def main() -> int:
    group = sys.argv[1] if len(sys.argv) > 1 else ""
    if group not in GROUPS:
        print(f"usage: triton_interpreter_cases.py {'|'.join(GROUPS)}", file=sys.stderr)
        return 2
    _numpy2_index_fix()
    torch.manual_seed(0)
    failed = 0
    start = time.time()
    for row in GROUPS[group]():
        bad = {k: e for k, e in row["errors"].items() if not e < (TOL_OUT if k == "out" else TOL_GRAD)}
        row.update(ok=not bad, triton=triton.__version__, seconds=round(time.time() - start, 1))
        failed += bool(bad)
        print(json.dumps(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
