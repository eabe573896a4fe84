"""What ``rom env`` reports: python / torch / CUDA versions, optional kernel backends, and the backend each op
resolves to. Outside ``rom.kernels`` so that importing it does not import torch (``collect`` does)."""

from __future__ import annotations

import platform
from typing import Any


def collect() -> dict[str, Any]:
    """Everything `rom env` reports, as plain data."""
    import torch

    from rom.kernels.experts import grouped_mm_available
    from rom.kernels.registry import describe

    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_threads": torch.get_num_threads(),
        "grouped_mm": grouped_mm_available(),
    }
    info.update(describe(("cpu", "cuda")))
    return info


def format_table(info: dict[str, Any]) -> str:
    lines = [
        f"python        {info['python']}  ({info['platform']})",
        f"torch         {info['torch']}  (CUDA build: {info['torch_cuda_build'] or 'none'})",
        f"CUDA          {'available' if info['cuda_available'] else 'not available'}",
        f"GPU           {info['gpu'] or '-'}" + (f" x{info['gpu_count']}" if info["gpu_count"] > 1 else ""),
        f"CPU threads   {info['cpu_threads']}",
        f"grouped_mm    {'yes' if info['grouped_mm'] else 'no (expert_matmul uses the per-expert loop)'}",
        "",
        "optional backends:",
    ]
    for name, status in info["backends"].items():
        mark = "yes" if status["available"] else "no "
        lines.append(f"  {name:<24} {mark}  {status['reason']}")
    lines += ["", "backend 'auto' resolves to:"]
    devices = list(info["auto"])
    lines.append(f"  {'op':<16}" + "".join(f"{d:<12}" for d in devices))
    for op in info["auto"][devices[0]]:
        lines.append(f"  {op:<16}" + "".join(f"{info['auto'][d][op]:<12}" for d in devices))
    return "\n".join(lines)


def package_versions() -> dict[str, str]:
    """The installed versions of the packages a run's numbers depend on (those present): a record's provenance,
    for the host that trained it and, in the eval part, the host that scored it."""
    from importlib import metadata

    versions = {}
    for name in ("torch", "numpy", "tokenizers", "rom-toolkit", "triton", "mamba-ssm", "fla-core"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
