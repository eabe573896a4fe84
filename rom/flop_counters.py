"""Measured FLOP counts that cross-check rom.accounting: torch's FlopCounterMode and fvcore.

Both count weight matmuls the same way the analytic accounting does (fvcore counts multiply-adds, so its
figure is doubled here). The grouped GEMM of the expert banks is invisible to both unless told: we register a
FlopCounterMode formula for the op and give fvcore a handle for it. The selective scan and the causal conv are
wrapped in leaf modules (``SelectiveScan``, ``CausalConv1d``), so their cost is read per module and separated
from the matmul total; attention scores are separated likewise (the two tools count the full L x L product).
Only weight-matmul ops are summed. Where the grouped GEMM zero-pads a dimension for alignment (see
rom.kernels.experts), the counters see, and count, the padded shape.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from rom import kernels
from rom.config import ModelConfig

_REGISTERED = False


def _grouped_mm_flops(a_shape, b_shape, *args, **kwargs) -> int:
    """mat_a (M, K) x mat_b (E, K, N) with group offsets: each row meets one expert: 2*M*K*N."""
    m, k = a_shape[-2], a_shape[-1]
    n = b_shape[-1]
    return 2 * m * k * n


def register_grouped_mm_formula() -> None:
    """Teach FlopCounterMode the grouped GEMM op (it counts 0 otherwise). Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    from torch.utils.flop_counter import register_flop_formula

    op = kernels.grouped_mm_op()
    if op is not None:
        try:
            register_flop_formula(op, get_raw=False)(_grouped_mm_flops)
        except RuntimeError:  # already registered by someone else
            pass
    _REGISTERED = True


# Ops that multiply activations by weights. bmm is one: the mixers' projections are batched GEMMs that write
# channels-first layouts (kernels.linear_channels); the scan's own ops are excluded by module below.
TORCH_WEIGHT_OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten._grouped_mm", "aten.grouped_mm")
FVCORE_WEIGHT_OPS = ("linear", "matmul", "mm", "addmm", "bmm", "_grouped_mm", "grouped_mm", "PythonOp._GroupedMM",
                     "PythonOp._LinearChannels")


def _is_excluded(module_name: str) -> bool:
    leaf = module_name.rsplit(".", 1)[-1]
    return leaf in ("scan", "conv1d") or module_name.endswith("ssm.scan")


def _attention_module_keys(model: torch.nn.Module) -> list[str]:
    """FlopCounterMode's names ("<RootClass>.<path>") of the attention modules in ``model``."""
    from rom.layers.attention import SlidingWindowAttention

    root = type(model).__name__
    return [f"{root}.{n}" for n, m in model.named_modules() if isinstance(m, SlidingWindowAttention)]


def torch_counter(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    register_grouped_mm_formula()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(input_ids)
    counts = counter.get_flop_counts()
    total = sum(counts.get("Global", {}).values())
    weight_ops = sum(v for op, v in counts.get("Global", {}).items() if str(op) in TORCH_WEIGHT_OPS)
    excluded = excluded_weight_ops = 0
    for name, ops in counts.items():
        if name != "Global" and _is_excluded(name):
            excluded += sum(ops.values())
            excluded_weight_ops += sum(v for op, v in ops.items() if str(op) in TORCH_WEIGHT_OPS)
    # where SDPA decomposes (the meta device, some CPU paths) its score and value products are bmm: those
    # are attention FLOPs, not weight matmuls
    for name in _attention_module_keys(model):
        excluded_weight_ops += counts.get(name, {}).get(torch.ops.aten.bmm, 0)
    sdpa = sum(v for op, v in counts.get("Global", {}).items() if "attention" in str(op))
    tokens = input_ids.numel()
    matmul = weight_ops - excluded_weight_ops
    return {
        "total": total,
        "scan_and_conv": excluded,
        "attention_scores": sdpa,
        "matmul": matmul,
        "matmul_per_token": matmul / tokens,
        "by_op": {str(op): int(v) for op, v in counts.get("Global", {}).items()},
    }


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids).logits


def _fvcore_grouped_mm_handle(inputs, outputs) -> int:
    """fvcore handle: multiply-adds of a grouped GEMM (M*K*N)."""
    from fvcore.nn.jit_handles import get_shape

    a, b = get_shape(inputs[0]), get_shape(inputs[1])
    return int(a[-2] * a[-1] * b[-1])


def _fvcore_linear_channels_handle(inputs, outputs) -> int:
    """fvcore handle: multiply-adds of kernels.linear_channels, x (b, d_in, L) and weight (d_out, d_in)."""
    from fvcore.nn.jit_handles import get_shape

    x, w = get_shape(inputs[0]), get_shape(inputs[1])
    return int(x[0] * x[2] * w[0] * w[1])


def fvcore_counter(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, Any]:
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError as e:
        return {"error": f"fvcore not installed ({e}); pip install fvcore"}
    wrapped = _LogitsOnly(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(wrapped, (input_ids,))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        analysis.set_op_handle("aten::_grouped_mm", _fvcore_grouped_mm_handle)
        analysis.set_op_handle("aten::grouped_mm", _fvcore_grouped_mm_handle)
        # the grouped GEMM runs inside an autograd.Function, which the JIT trace records as a PythonOp
        analysis.set_op_handle("prim::PythonOp._GroupedMM", _fvcore_grouped_mm_handle)
        analysis.set_op_handle("prim::PythonOp._LinearChannels", _fvcore_linear_channels_handle)
        by_module_op = analysis.by_module_and_operator()
        total = analysis.total()
        by_op = analysis.by_operator()

    def weight_macs(ops: dict) -> int:
        return sum(v for op, v in ops.items() if op in FVCORE_WEIGHT_OPS)

    excluded = sum(weight_macs(ops) for name, ops in by_module_op.items() if name and _is_excluded(name))
    tokens = input_ids.numel()
    matmul_macs = weight_macs(by_op) - excluded
    return {
        "total_macs": int(total),
        "matmul": 2 * matmul_macs,
        "matmul_per_token": 2 * matmul_macs / tokens,
        "by_op_macs": {k: int(v) for k, v in by_op.items()},
        "unsupported_ops": {k: int(v) for k, v in analysis.unsupported_ops().items()},
    }


# fvcore traces a real CPU model (fp32: 4 bytes a parameter); past this size it is skipped, and said so.
FVCORE_MAX_PARAMS = 500_000_000


def measure(cfg: ModelConfig, seq_len: int, batch: int = 1, seed: int = 0) -> dict[str, Any]:
    """Count one forward pass (reference kernels) with both tools.

    FlopCounterMode runs on the meta device: the model's own code dispatches every op, but no tensor is
    allocated, so even the 9.8B-parameter paper model is counted in seconds without its 39 GB of weights (bf16
    there only because the grouped GEMM's meta kernel accepts nothing else; FLOPs do not depend on the dtype).
    fvcore traces a real CPU model, up to FVCORE_MAX_PARAMS parameters.
    """
    from rom.accounting import count_flops, count_params
    from rom.models import build_model

    analytic = count_flops(cfg, seq_len).matmul_fwd
    out: dict[str, Any] = {"seq_len": seq_len, "batch": batch, "analytic_matmul_per_token": analytic}
    with torch.device("meta"):
        meta_model = build_model(cfg, backend="reference").eval().to(torch.bfloat16)
        meta_ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    out["torch"] = {**torch_counter(meta_model, meta_ids), "device": "meta"}
    del meta_model

    n_params = count_params(cfg).total
    if n_params > FVCORE_MAX_PARAMS:
        out["fvcore"] = {"skipped": f"{n_params:,} parameters: more than the {FVCORE_MAX_PARAMS:,} that a real "
                                    f"CPU trace is given (FVCORE_MAX_PARAMS)"}
    else:
        torch.manual_seed(seed)
        model = build_model(cfg, backend="reference").eval()
        ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))
        try:
            out["fvcore"] = fvcore_counter(model, ids)
        except Exception as e:  # noqa: BLE001 - tracing failures are reported, not fatal
            out["fvcore"] = {"error": f"{type(e).__name__}: {e}"}
    for tool in ("torch", "fvcore"):
        got = out[tool].get("matmul_per_token")
        out[tool]["rel_diff_vs_analytic"] = None if got is None else (got - analytic) / analytic
    if not math.isfinite(analytic):
        raise ValueError("analytic FLOPs are not finite")
    return out
