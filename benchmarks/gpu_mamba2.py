"""Mamba-2 and Gated DeltaNet layers (fwd+bwd) on one GPU beside mamba-ssm's ``Mamba2``, all in one run (issue 27).

Per d_model (default 768, 1024, 2048; batch 8 x 2048 tokens; Mamba-2: headdim 64, d_state 128, expand 2,
chunk 256; Gated DeltaNet: the presets' 6 heads of 0.75 d_model / 6 channels, expand_v 2, chunk 64), bf16
autocast over fp32 parameters as the trainer runs on CUDA (rom.models.precision), eager, each layer timed
forward and forward+backward (``triton.testing.do_bench`` medians after a warm-up call, which also takes any
autotuning):

  mamba2 dense, ours (reference | triton)          rom.layers.mamba2.Mamba2Mixer, built through the mixer map
  mamba2 dense, mamba-ssm Mamba2                   mamba_ssm.modules.mamba2.Mamba2, use_mem_eff_path=False:
                                                   torch conv1d + its Triton SSD (mamba_chunk_scan_combined) +
                                                   its Triton gated RMSNorm (no causal-conv1d needed)
  mamba2 dense, mamba-ssm Mamba2 fused             its default path (mamba_split_conv1d_scan_combined), with
                                                   our Triton conv standing in for causal-conv1d's CUDA conv
  mamba2 RoM e8 top-1 comprehensive | selective    rom.layers.rom_mamba2.RoMMamba2Mixer (triton; comprehensive
                                                   also on reference)
  gdn dense / RoM e8 comprehensive                 rom.layers.gated_deltanet (triton and reference)
  scan only: ssd_scan (triton | reference) and mamba_chunk_scan_combined on identical bf16 inputs

"triton" is the model's backend switch: our Triton conv / routing / expert kernels, and for the recurrences the
ops' "triton" entries (fla-core, rom/kernels/registry.py). Where an op's triton entry is missing or its package
does not import, the row is skipped with the reason (``--keep-fallback-rows`` times it anyway on the reference
recurrence). Rows needing mamba-ssm are skipped with the reason where it does not import.

Once, untimed: our dense Mamba-2 layer and mamba-ssm's Mamba2 with our weights copied across
(``mamba_ssm_state_dict``), each against our layer in float64 (the reference backend; its own float64 parity
against a per-step recurrence is in the tests), in fp32 and under bf16 autocast: output, input and parameter
gradients, relative errors.

Prints the rows, then the ratios (ours(triton) / mamba-ssm, RoM / dense per architecture, triton / reference)
as a table last; writes JSON to --out (default benchmarks/results/gpu_mamba2.json).

    python benchmarks/gpu_mamba2.py [--d-models 768,1024,2048] [--batch 8] [--seq-len 2048] [--out PATH]
                                    [--time-budget SECONDS]   # under a hard limit: stop starting rows
    python benchmarks/gpu_mamba2.py --device cpu --smoke      # tiny shapes, reference rows only, no timing claims

mamba-ssm needs no CUDA build here: a pure-python wheel (MAMBA_SKIP_CUDA_BUILD) gives its Triton SSD, Triton
norm and the Mamba2 module (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rom.config import (Expertization, GatedDeltaNetConfig, Mamba2Config, Mixer, ModelConfig,  # noqa: E402
                        RoMConfig, SsmKind)
from rom.io import atomic_write_json  # noqa: E402
from rom.layers.mixers import mixer_spec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------- mamba-ssm


def import_mamba_ssm() -> tuple[types.ModuleType, type]:
    """(mamba_ssm.ops.triton.ssd_combined, mamba_ssm.modules.mamba2.Mamba2) without running mamba_ssm/__init__.py.

    mamba_ssm/__init__.py imports selective_scan_interface (which imports the CUDA extension selective_scan_cuda
    unguarded) and mamba3 (tilelang, quack): neither exists in a pure-python build (MAMBA_SKIP_CUDA_BUILD), and
    Mamba2 needs neither. So the package is registered as a bare module whose __path__ is the installed
    directory, and only the submodules Mamba2 needs are imported: ops.triton.ssd_combined (the Triton SSD),
    ops.triton.layernorm_gated (RMSNormGated), distributed.* (plain torch); causal_conv1d is optional there.
    """
    if "mamba_ssm" not in sys.modules:
        spec = importlib.util.find_spec("mamba_ssm")  # finds the top-level package without executing it
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("mamba_ssm is not installed")
        pkg = types.ModuleType("mamba_ssm")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        pkg.__file__ = spec.origin
        sys.modules["mamba_ssm"] = pkg
    try:
        importlib.import_module("huggingface_hub")
    except ImportError:  # Mamba2 only inherits PyTorchModelHubMixin (hub upload/download): an empty stand-in
        hub = types.ModuleType("huggingface_hub")
        hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        sys.modules["huggingface_hub"] = hub
    ssd = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    mamba2 = importlib.import_module("mamba_ssm.modules.mamba2")
    return ssd, mamba2.Mamba2


def patch_conv_into_mamba_ssm(ssd: types.ModuleType) -> str:
    """Let mamba-ssm's fused path (mamba_split_conv1d_scan_combined) run without causal-conv1d: our Triton conv
    takes the place of causal-conv1d's CUDA fwd/bwd functions (same arguments; seq_idx / states unused here).
    A real causal-conv1d install is left alone."""
    if getattr(ssd, "causal_conv1d_fwd_function", None) is not None:
        return "causal-conv1d (CUDA)"
    from rom.kernels.triton_conv import conv_backward, conv_forward

    def fwd(x, weight, bias, seq_idx, initial_states, final_states_out, silu_activation):
        return conv_forward(x, weight, bias, bool(silu_activation))

    def bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, return_dfinal_states, silu):
        gx, gw, gb = conv_backward(x, weight, bias, dout, bool(silu))
        return gx, gw, gb, None  # mamba-ssm copies gx into its dx buffer where the strides differ

    ssd.causal_conv1d_fwd_function, ssd.causal_conv1d_bwd_function = fwd, bwd
    return "our Triton conv in causal-conv1d's place"


def mamba_ssm_state_dict(ours: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our dense Mamba-2 mixer's parameters under mamba_ssm Mamba2's names and layouts (load_state_dict-ready).

    in_proj: same fused [z | x | B | C | dt] rows, copied as is; conv1d: ours (C, w) -> nn.Conv1d's (C, 1, w);
    dt_bias, A_log, D (per head): same; norm: our gated RMSNorm gain -> RMSNormGated.weight (both norm(y * SiLU(z))
    over groups of d_inner / ngroups, norm_before_gate=False); out_proj: same. Biases where the config has them.
    """
    core = ours.core
    sd = {"in_proj.weight": ours.in_proj.weight, "conv1d.weight": core.conv1d.weight.unsqueeze(1),
          "dt_bias": core.dt_bias, "A_log": core.A_log, "D": core.D, "norm.weight": core.norm.weight,
          "out_proj.weight": ours.out_proj.weight}
    if core.conv1d.bias is not None:
        sd["conv1d.bias"] = core.conv1d.bias
    if ours.in_proj.bias is not None:
        sd["in_proj.bias"] = ours.in_proj.bias
    if ours.out_proj.bias is not None:
        sd["out_proj.bias"] = ours.out_proj.bias
    return {k: v.detach().clone() for k, v in sd.items()}


def _their_grads(theirs: torch.nn.Module) -> dict[str, torch.Tensor]:
    """mamba-ssm's parameter gradients in our names and layouts (the inverse of mamba_ssm_state_dict)."""
    g = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    out = {"in_proj.weight": g.get("in_proj.weight"), "core.conv1d.weight": g["conv1d.weight"].squeeze(1),
           "core.conv1d.bias": g.get("conv1d.bias"), "core.dt_bias": g.get("dt_bias"), "core.A_log": g.get("A_log"),
           "core.D": g.get("D"), "core.norm.weight": g.get("norm.weight"), "out_proj.weight": g.get("out_proj.weight")}
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------------------------- shapes


def mamba2_config(args: argparse.Namespace) -> Mamba2Config:
    return Mamba2Config(d_state=args.d_state, headdim=args.headdim, expand=args.expand, chunk_size=args.chunk)


def gdn_config(d_model: int, args: argparse.Namespace) -> GatedDeltaNetConfig:
    """The presets' rule (rom/models/presets.yaml): key_dim = 0.75 d_model over 6 heads (768: 6 x 96, 1024: 6 x
    128, 2048: 6 x 256), expand_v 2; --gdn-heads / --gdn-head-dim override."""
    heads = args.gdn_heads
    head_dim = args.gdn_head_dim or max(8, (3 * d_model // 4) // heads)
    return GatedDeltaNetConfig(num_heads=heads, head_dim=head_dim, norm_eps=1e-6,
                               **({"chunk_size": args.gdn_chunk} if args.gdn_chunk else {}))


def build_layer(arch: str, d_model: int, args: argparse.Namespace, backend: str,
                expertization: Expertization | None) -> torch.nn.Module:
    """A mixer through the mixer map (rom.layers.mixers), as the block builder makes it."""
    ssm = SsmKind.MAMBA2 if arch == "mamba2" else SsmKind.GATED_DELTANET
    rom = RoMConfig(num_experts=args.experts, top_k=1, expertization=expertization or Expertization.CUSTOM)
    cfg = ModelConfig(d_model=d_model, ssm=ssm, mamba2=mamba2_config(args), gated_deltanet=gdn_config(d_model, args),
                      rom=rom if expertization else RoMConfig())
    dense, routed = {"mamba2": (Mixer.MAMBA2, Mixer.ROM_MAMBA2),
                     "gdn": (Mixer.GATED_DELTANET, Mixer.ROM_GATED_DELTANET)}[arch]
    return mixer_spec(routed if expertization else dense).build(cfg, backend)


def op_impl(op: str, backend: str, device: str) -> tuple[str, str]:
    """(the implementation ``op`` resolves to for ``backend`` on ``device``, why when it is not that backend)."""
    from rom.kernels.backends import PACKAGE_PROBES, BackendUnavailableError
    from rom.kernels.registry import IMPLS, Impl, resolve

    try:
        name = resolve(op, backend, device)
    except BackendUnavailableError as err:
        return "unavailable", str(err)
    if name == backend:
        return name, "ok"
    entry = IMPLS[op].get(backend)
    if entry is None:
        return name, f"rom/kernels/registry.py has no {backend!r} entry for {op}"
    if isinstance(entry, Impl):
        probe = PACKAGE_PROBES.get(entry.package)
        return name, f"{op}'s {backend} entry needs {entry.package}: {probe().reason if probe else 'no probe'}"
    return name, "falls back"


# --------------------------------------------------------------------------------------------- timing


def _out_of_time(args: argparse.Namespace) -> str | None:
    """The note of a row not started because --time-budget was spent (None while time is left): a command with
    a hard limit then still ends by itself, with its JSON and the ratio table of the rows it has."""
    deadline = getattr(args, "deadline", math.inf)
    if time.perf_counter() < deadline:
        return None
    return f"skipped: the --time-budget of {args.time_budget:g} s was spent before this row started"


def _timer(device: str) -> Callable[[Callable[[], Any]], float]:
    if device == "cuda":
        from gpu_common import bench_ms

        return bench_ms

    def wall_ms(fn: Callable[[], Any]) -> float:  # smoke only: one call, claims nothing
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return wall_ms


def time_layer(layer: torch.nn.Module, xs: list[torch.Tensor], unpack: bool, device: str) -> dict[str, float]:
    """fwd (no grad) and fwd+bwd medians in ms; grads set to None each step as a training step's zero_grad."""
    grad = torch.randn_like(xs[0])
    params = [p for p in layer.parameters() if p.requires_grad]
    i = [0]
    bench = _timer(device)

    def run():
        x = xs[i[0] % len(xs)]
        i[0] += 1
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = layer(x)
        return out[0] if unpack else out

    def fwd():
        with torch.no_grad():
            run()

    def fwd_bwd():
        for p in params:
            p.grad = None
        out = run()
        out.backward(grad.to(out.dtype))

    if device != "cuda":  # the smoke: one fwd+bwd call, the path kept alive, no timing claims
        return {"fwd_bwd_ms": bench(fwd_bwd)}
    fwd_bwd()  # warm-up: compiles and autotunes outside the timing
    fwd()
    torch.cuda.synchronize()
    return {"fwd_ms": bench(fwd), "fwd_bwd_ms": bench(fwd_bwd)}


# --------------------------------------------------------------------------------------------- parity


def _rel(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    a64, b64 = a.double(), b.double()
    if not torch.isfinite(a64).all():
        return float("inf")
    return ((a64 - b64).norm() / b64.norm().clamp_min(1e-30)).item()


def parity_check(args: argparse.Namespace, device: str, mamba_ssm: tuple | None) -> dict[str, Any]:
    """Our dense Mamba-2 (reference, triton) and mamba-ssm's Mamba2 (plain, fused) with the same weights, each
    against our layer in float64: output, d input and parameter gradients, in fp32 and under bf16 autocast."""
    torch.manual_seed(0)
    b, L, dm = (2, 64, 64) if args.smoke else (2, 512, 256)
    small = argparse.Namespace(**{**vars(args), "chunk": min(args.chunk, L // 2)})  # > 1 chunk: the carried state
    ours64 = build_layer("mamba2", dm, small, "reference", None).to(device).double()
    x = torch.randn(b, L, dm, device=device, dtype=torch.float64)
    gy = torch.randn(b, L, dm, device=device, dtype=torch.float64)
    result: dict[str, Any] = {"shape": {"batch": b, "seq_len": L, "d_model": dm, "chunk": small.chunk,
                                        "headdim": args.headdim, "d_state": args.d_state},
                              "mapping": mamba_ssm_state_dict.__doc__.split("\n\n")[1].strip()}

    def run(layer, dtype, autocast, unpack):
        xi = x.to(dtype).detach().requires_grad_(True)
        for p in layer.parameters():
            p.grad = None
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = layer(xi)
        out = out[0] if unpack else out
        out.backward(gy.to(out.dtype))
        return out.detach(), xi.grad

    y64, dx64 = run(ours64, torch.float64, False, True)
    g64 = {n: p.grad.clone() for n, p in ours64.named_parameters()}
    sd = mamba_ssm_state_dict(ours64)
    result["state_dict_shapes"] = {k: list(v.shape) for k, v in sd.items()}

    variants: dict[str, Callable[[], tuple[torch.nn.Module, bool]]] = {}
    for backend in ("reference", "triton"):
        impl, why = op_impl("ssd_scan", backend, device)
        if backend == "triton" and impl != "triton":
            result[f"ours ({backend})"] = f"skipped: ssd_scan -> {impl} ({why})"
            continue

        def make(backend=backend):
            layer = build_layer("mamba2", dm, small, backend, None).to(device)
            layer.load_state_dict({k: v.float() for k, v in ours64.state_dict().items()})
            return layer, True

        variants[f"ours ({backend})"] = make
    if mamba_ssm is None:
        result["mamba-ssm"] = "skipped: mamba_ssm does not import"
    elif device != "cuda":
        result["mamba-ssm"] = "skipped: its Triton kernels need CUDA"
    else:
        ssd, Mamba2 = mamba_ssm

        def make_theirs(fused: bool):
            if fused:
                patch_conv_into_mamba_ssm(ssd)
            layer = Mamba2(d_model=dm, d_state=args.d_state, d_conv=4, expand=args.expand, headdim=args.headdim,
                           chunk_size=small.chunk, use_mem_eff_path=fused).to(device)
            missing = layer.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
            assert not missing.missing_keys and not missing.unexpected_keys, missing
            return layer, False

        variants["mamba-ssm Mamba2"] = lambda: make_theirs(False)
        variants["mamba-ssm Mamba2 fused"] = lambda: make_theirs(True)

    outs: dict[tuple[str, str], torch.Tensor] = {}
    t0 = time.perf_counter()
    for name, make in variants.items():
        for mode, autocast in (("fp32", False), ("bf16 autocast", True)):
            if autocast and device != "cuda":
                continue
            # progress with the time so far: first calls autotune and compile (fla's and mamba-ssm's Triton
            # kernels, per dtype); on an H100 this check alone outlasted a 200 s limit once
            if time.perf_counter() >= getattr(args, "parity_deadline", math.inf):
                result[f"{name}, {mode}"] = (f"skipped: half of the --time-budget of {args.time_budget:g} s was "
                                             "spent; the timing rows get the rest")
                continue
            print(f"[parity {time.perf_counter() - t0:.0f} s] {name}, {mode}", flush=True)
            try:
                layer, unpack = make()
                y, dx = run(layer, torch.float32, autocast, unpack)
                grads = _their_grads(layer) if "mamba-ssm" in name else {
                    n: p.grad for n, p in layer.named_parameters() if p.grad is not None}
                result[f"{name}, {mode}"] = {
                    "out": _rel(y, y64), "d_input": _rel(dx, dx64),
                    "d_params": {n: _rel(g, g64[n]) for n, g in grads.items()}}
                outs[(name, mode)] = y
            except Exception as err:  # noqa: BLE001 - reported, the timing rows still run
                result[f"{name}, {mode}"] = f"failed: {type(err).__name__}: {str(err)[:300]}"
    for (name, mode), y in outs.items():  # directly: each of ours against each of mamba-ssm's, same mode
        for (other, mode2), y2 in outs.items():
            if name.startswith("ours") and other.startswith("mamba-ssm") and mode == mode2:
                result.setdefault("direct_out_rel_err", {})[f"{name} vs {other}, {mode}"] = _rel(y, y2)
    return result


# --------------------------------------------------------------------------------------------- rows


def layer_rows(d_model: int, args: argparse.Namespace, device: str, mamba_ssm: tuple | None,
               mamba_ssm_why: str) -> list[dict[str, Any]]:
    E = args.experts
    comp, sel = Expertization.COMPREHENSIVE, Expertization.SELECTIVE
    # (label, arch, builder kind, backend, expertization)
    plan: list[tuple[str, str, str, str, Expertization | None]] = [
        ("mamba2 dense, ours (reference)", "mamba2", "ours", "reference", None),
        ("mamba2 dense, ours (triton)", "mamba2", "ours", "triton", None),
        ("mamba2 dense, mamba-ssm Mamba2", "mamba2", "mamba_ssm", "", None),
        ("mamba2 dense, mamba-ssm Mamba2 fused", "mamba2", "mamba_ssm_fused", "", None),
        (f"mamba2 RoM e{E} comprehensive (triton)", "mamba2", "ours", "triton", comp),
        (f"mamba2 RoM e{E} selective (triton)", "mamba2", "ours", "triton", sel),
        (f"mamba2 RoM e{E} comprehensive (reference)", "mamba2", "ours", "reference", comp),
        ("gdn dense (reference)", "gdn", "ours", "reference", None),
        ("gdn dense (triton)", "gdn", "ours", "triton", None),
        (f"gdn RoM e{E} comprehensive (triton)", "gdn", "ours", "triton", comp),
        (f"gdn RoM e{E} comprehensive (reference)", "gdn", "ours", "reference", comp),
    ]
    b, L = args.batch, args.seq_len
    xs = [torch.randn(b, L, d_model, device=device, requires_grad=True) for _ in range(2)]
    rows = []
    for label, arch, kind, backend, expertization in plan:
        row: dict[str, Any] = {"d_model": d_model, "layer": label, "arch": arch, "backend": backend or "mamba_ssm",
                               "expertization": expertization.value if expertization else "dense"}
        if args.no_reference and backend == "reference":
            continue
        if device != "cuda" and (kind != "ours" or backend != "reference"):
            continue  # the CPU smoke runs the reference rows only
        if over := _out_of_time(args):
            row["note"] = over
            print(f"[d_model {d_model}] {label}: {over}", flush=True)
            rows.append(row)
            continue
        op = "ssd_scan" if arch == "mamba2" else "gated_delta_rule"
        if kind == "ours":
            impl, why = op_impl(op, backend, device)
            row["recurrence"] = f"{op} -> {impl}"
            if impl != backend:
                row["recurrence_note"] = why
                if not args.keep_fallback_rows:
                    row["note"] = f"skipped: {op} resolves to {impl} for backend {backend} ({why})"
                    print(f"[d_model {d_model}] {label}: {row['note']}", flush=True)
                    rows.append(row)
                    continue
        elif mamba_ssm is None:
            row["note"] = f"skipped: mamba_ssm does not import ({mamba_ssm_why})"
            print(f"[d_model {d_model}] {label}: {row['note']}", flush=True)
            rows.append(row)
            continue
        torch.manual_seed(0)
        layer = None
        # a line as each row starts: its first call compiles and autotunes (minutes on a cold Triton cache), so a
        # run cut by a hard limit still shows which row took the time
        row_start = time.perf_counter()
        print(f"[d_model {d_model}, {row_start - args.t_start:.0f} s] {label}: started",
              flush=True)
        try:
            if kind == "ours":
                layer = build_layer(arch, d_model, args, backend, expertization).to(device)
            else:
                ssd, Mamba2 = mamba_ssm
                fused = kind == "mamba_ssm_fused"
                row["recurrence"] = "mamba_split_conv1d_scan_combined" if fused else "mamba_chunk_scan_combined"
                if fused:
                    row["conv"] = patch_conv_into_mamba_ssm(ssd)
                layer = Mamba2(d_model=d_model, d_state=args.d_state, d_conv=4, expand=args.expand,
                               headdim=args.headdim, chunk_size=args.chunk, use_mem_eff_path=fused).to(device)
            row.update(time_layer(layer, xs, unpack=kind == "ours", device=device))
            row["Mtok_per_s_fwd_bwd"] = b * L / row["fwd_bwd_ms"] / 1e3
            row["params_M"] = sum(p.numel() for p in layer.parameters()) / 1e6
        except Exception as err:  # noqa: BLE001 - keep the other rows (e.g. OOM on a reference path)
            row["note"] = f"failed: {type(err).__name__}: {str(err)[:300]}"
        row["row_wall_s"] = time.perf_counter() - row_start  # build, compile, autotune and timing together
        print(f"[d_model {d_model}] {label}: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            if k not in ("d_model", "layer", "arch")), flush=True)
        rows.append(row)
        layer = None
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def scan_rows(d_model: int, args: argparse.Namespace, device: str, mamba_ssm: tuple | None,
              mamba_ssm_why: str) -> list[dict[str, Any]]:
    """ssd_scan (triton, reference) and mamba_chunk_scan_combined on the same inputs, as the layer feeds them
    under autocast: x, dt, B, C bf16; A, D, dt_bias fp32. fwd+bwd; outputs compared with each other."""
    from rom.kernels.ssd_ops import ssd_scan

    b, L = args.batch, args.seq_len
    H = args.expand * d_model // args.headdim
    P, N = args.headdim, args.d_state
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    x = rnd(b, L, H, P).to(dtype).requires_grad_(True)
    dt = rnd(b, L, H, scale=0.5).to(dtype).requires_grad_(True)
    B = rnd(b, L, 1, N).to(dtype).requires_grad_(True)
    C = rnd(b, L, 1, N).to(dtype).requires_grad_(True)
    A = (-torch.empty(H).uniform_(1, 16, generator=g)).to(device).requires_grad_(True)
    D = torch.ones(H, device=device).requires_grad_(True)
    dt_bias = (torch.rand(H, generator=g) * 2 - 4).to(device).requires_grad_(True)  # softplus -> ~0.02 .. 0.13
    inputs = [x, dt, A, B, C, D, dt_bias]
    gy = rnd(b, L, H, P).to(dtype)

    fns: dict[str, Callable[[], torch.Tensor] | str] = {}
    for backend in ("reference", "triton"):
        if device != "cuda" and backend != "reference" or args.no_reference and backend == "reference":
            continue
        impl, why = op_impl("ssd_scan", backend, device)
        if impl != backend:
            fns[f"ssd_scan ours ({backend})"] = f"skipped: ssd_scan resolves to {impl} ({why})"
        else:
            fns[f"ssd_scan ours ({backend})"] = (
                lambda backend=backend: ssd_scan(x, dt, A, B, C, D, dt_bias, args.chunk, backend))
    if device == "cuda":
        if mamba_ssm is None:
            fns["mamba_chunk_scan_combined"] = f"skipped: mamba_ssm does not import ({mamba_ssm_why})"
        else:
            ssd = mamba_ssm[0]
            fns["mamba_chunk_scan_combined"] = lambda: ssd.mamba_chunk_scan_combined(
                x, dt, A, B, C, args.chunk, D=D, dt_bias=dt_bias, dt_softplus=True)
    rows, outs = [], {}
    bench = _timer(device)
    for label, fn in fns.items():
        row: dict[str, Any] = {"d_model": d_model, "layer": f"scan only: {label}", "arch": "mamba2-scan"}
        if not isinstance(fn, str) and (over := _out_of_time(args)):
            fn = over
        if isinstance(fn, str):
            row["note"] = fn
            print(f"[d_model {d_model}] {row['layer']}: {fn}", flush=True)
            rows.append(row)
            continue

        def fwd_bwd(fn=fn):
            for t in inputs:
                t.grad = None
            fn().backward(gy)

        def fwd(fn=fn):
            with torch.no_grad():
                fn()

        try:
            with torch.no_grad():
                outs[label] = fn().float()
            if device == "cuda":
                fwd_bwd()  # warm-up (autotuning)
                row["fwd_ms"] = bench(fwd)
            row["fwd_bwd_ms"] = bench(fwd_bwd)
            row["Mtok_per_s_fwd_bwd"] = b * L / row["fwd_bwd_ms"] / 1e3
        except Exception as err:  # noqa: BLE001
            row["note"] = f"failed: {type(err).__name__}: {str(err)[:300]}"
        print(f"[d_model {d_model}] {row['layer']}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)) + (f" {row.get('note', '')}"), flush=True)
        rows.append(row)
        if device == "cuda":
            torch.cuda.empty_cache()
    names = list(outs)
    for i, a in enumerate(names):  # the same inputs: every pair of outputs compared
        for c in names[i + 1:]:
            rows[0].setdefault("output_rel_err", {})[f"{a} vs {c}"] = _rel(outs[a], outs[c])
    return rows


# --------------------------------------------------------------------------------------------- ratios


def ratios(rows: list[dict[str, Any]], E: int) -> list[dict[str, Any]]:
    """Per d_model, fwd+bwd time ratios of the named rows (a missing row leaves its ratio out)."""
    out = []
    for dm in sorted({r["d_model"] for r in rows}):
        t = {r["layer"]: r["fwd_bwd_ms"] for r in rows if r["d_model"] == dm and "fwd_bwd_ms" in r}

        def q(num: str, den: str) -> float | None:
            return t[num] / t[den] if num in t and den in t else None

        out.append({
            "d_model": dm,
            "m2 ours(triton)/mamba-ssm": q("mamba2 dense, ours (triton)", "mamba2 dense, mamba-ssm Mamba2"),
            "m2 ours(triton)/mamba-ssm fused": q("mamba2 dense, ours (triton)", "mamba2 dense, mamba-ssm Mamba2 fused"),
            "m2 RoM comp/dense": q(f"mamba2 RoM e{E} comprehensive (triton)", "mamba2 dense, ours (triton)"),
            "m2 RoM sel/dense": q(f"mamba2 RoM e{E} selective (triton)", "mamba2 dense, ours (triton)"),
            "m2 RoM comp/dense (ref)": q(f"mamba2 RoM e{E} comprehensive (reference)",
                                        "mamba2 dense, ours (reference)"),
            "gdn RoM comp/dense": q(f"gdn RoM e{E} comprehensive (triton)", "gdn dense (triton)"),
            "gdn RoM comp/dense (ref)": q(f"gdn RoM e{E} comprehensive (reference)", "gdn dense (reference)"),
            "m2 dense triton/ref": q("mamba2 dense, ours (triton)", "mamba2 dense, ours (reference)"),
            "m2 RoM triton/ref": q(f"mamba2 RoM e{E} comprehensive (triton)",
                                   f"mamba2 RoM e{E} comprehensive (reference)"),
            "gdn dense triton/ref": q("gdn dense (triton)", "gdn dense (reference)"),
            "gdn RoM triton/ref": q(f"gdn RoM e{E} comprehensive (triton)", f"gdn RoM e{E} comprehensive (reference)"),
            "scan ours(triton)/mamba-ssm": q("scan only: ssd_scan ours (triton)",
                                             "scan only: mamba_chunk_scan_combined"),
        })
    return out


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (the CPU test); no timing claims")
    ap.add_argument("--d-models", default="768,1024,2048")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--headdim", type=int, default=64)
    ap.add_argument("--d-state", type=int, default=128)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--gdn-heads", type=int, default=6)
    ap.add_argument("--gdn-head-dim", type=int, default=0, help="0: 0.75 d_model / heads (the presets' rule)")
    ap.add_argument("--gdn-chunk", type=int, default=0, help="0: the config's default (64)")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--no-reference", action="store_true", help="skip the pure-torch reference rows")
    ap.add_argument("--no-parity", action="store_true", help="skip the untimed mamba-ssm weight-copy check")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds (0: none): start no new row after this long, so a command with a hard limit "
                         "still writes its JSON and tables (rows not started say so in 'note')")
    ap.add_argument("--keep-fallback-rows", action="store_true",
                    help="time triton rows whose recurrence falls back to the reference instead of skipping them")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_mamba2.json; "
                                                "--smoke writes only where --out says)")
    ap.add_argument("--out-dir", default=None, help="also write gpu_mamba2.json into this folder (the GPU suite)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.d_models, args.batch, args.seq_len = "32", 2, 48
        args.headdim, args.d_state, args.chunk, args.experts = 16, 8, 16, 4
        args.gdn_heads, args.gdn_head_dim, args.gdn_chunk = 2, 8, 16
    return args


def _facts(device: str) -> dict[str, Any]:
    if device == "cuda":
        from gpu_common import device_facts

        facts = device_facts()
    else:
        import platform

        facts = {"device": "cpu", "torch": torch.__version__, "python": platform.python_version()}
    for pkg in ("mamba_ssm", "fla", "einops"):
        try:
            from importlib.metadata import version

            facts[pkg] = version({"mamba_ssm": "mamba-ssm", "fla": "fla-core"}.get(pkg, pkg))
        except Exception:  # noqa: BLE001 - informative only
            facts[pkg] = None
    return facts


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))

    widths = [max([len(c)] + [len(fmt(r.get(c))) for r in rows]) for c in columns]  # no rows: the header
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_mamba2.py: --device cuda but CUDA is not available (use --device cpu --smoke)")
    t_start = time.perf_counter()
    if args.time_budget < 0:
        raise SystemExit(f"gpu_mamba2.py: --time-budget must be >= 0 seconds, got {args.time_budget}")
    args.t_start = t_start
    args.deadline = t_start + args.time_budget if args.time_budget > 0 else math.inf
    # the untimed parity check starts no variant after half the budget: the timing rows are what this script is
    # for (sitting 3 of the mamba2 study spent a whole 200 s budget compiling the check's fp32 kernels)
    args.parity_deadline = t_start + args.time_budget / 2 if args.time_budget > 0 else math.inf
    facts = _facts(device)
    try:
        mamba_ssm: tuple | None = import_mamba_ssm()
        mamba_ssm_why = "ok"
    except Exception as err:  # noqa: BLE001 - optional comparison
        mamba_ssm, mamba_ssm_why = None, f"{type(err).__name__}: {err}"
        print(f"mamba-ssm rows skipped: {mamba_ssm_why}")
    facts["recurrences"] = {f"{op}/{be}": "{} ({})".format(*op_impl(op, be, device))
                            for op in ("ssd_scan", "gated_delta_rule") for be in ("triton", "reference")}
    print("recurrences:", facts["recurrences"], flush=True)

    parity = None if args.no_parity else parity_check(args, device, mamba_ssm)
    if parity:
        print("parity (rel. error against our layer in float64):")
        for k, v in parity.items():
            if isinstance(v, dict) and "out" in v:
                worst = max((e for e in v["d_params"].values() if e is not None), default=None)
                print(f"  {k:38s} out {v['out']:.3g}  d_input {v['d_input']:.3g}  worst d_param "
                      f"{worst if worst is None else f'{worst:.3g}'}")
            elif isinstance(v, str):
                print(f"  {k}: {v}")

    rows: list[dict[str, Any]] = []
    for dm in (int(s) for s in args.d_models.split(",")):
        rows += layer_rows(dm, args, device, mamba_ssm, mamba_ssm_why)
        rows += scan_rows(dm, args, device, mamba_ssm, mamba_ssm_why)
    table = ratios(rows, args.experts)
    payload = {"benchmark": "mamba2_gdn_layers", "smoke": args.smoke, "device": facts,
               "shape": {"batch": args.batch, "seq_len": args.seq_len, "d_models": args.d_models,
                         "mamba2": {"headdim": args.headdim, "d_state": args.d_state, "expand": args.expand,
                                    "chunk": args.chunk, "ngroups": 1},
                         "gdn": {dm: vars(gdn_config(int(dm), args)) for dm in args.d_models.split(",")},
                         "experts": args.experts, "top_k": 1, "autocast": "bf16" if device == "cuda" else "none",
                         "params": "fp32", "timing": "eager, do_bench median" if device == "cuda" else
                         "wall clock (smoke, no claims)"},
               "time_budget_s": args.time_budget or None,
               "parity": parity, "results": rows, "ratios_fwd_bwd": table,
               "wall_s": time.perf_counter() - t_start}
    out = Path(args.out) if args.out else (None if args.smoke else RESULTS / "gpu_mamba2.json")
    for path in [p for p in (out, Path(args.out_dir) / "gpu_mamba2.json" if args.out_dir else None) if p]:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, _finite(payload))
        print(f"wrote {path}")
    print(f"\n{facts.get('gpu', device)}  torch {facts['torch']}  triton {facts.get('triton')}  mamba-ssm "
          f"{facts['mamba_ssm']}  fla-core {facts['fla']}  ({payload['wall_s']:.0f} s)")
    _print_table([r for r in rows if "fwd_bwd_ms" in r],
                 ["d_model", "layer", "fwd_ms", "fwd_bwd_ms", "Mtok_per_s_fwd_bwd", "params_M"])
    skipped = [r for r in rows if "fwd_bwd_ms" not in r]
    if skipped:
        print(f"({len(skipped)} rows skipped or failed: see the lines above / 'note' in the JSON)")
    print("\nfwd+bwd time ratios (lower = first faster):")
    cols = [c for c in table[0] if any(r[c] is not None for r in table)] if table else []
    _print_table(table, cols)
    return payload


def _finite(obj: Any) -> Any:
    """inf / nan (a non-finite error) as strings: strict JSON."""
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
