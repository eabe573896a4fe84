"""Per-device dense bf16 peak FLOP/s, used for model FLOPs utilisation (MFU).

Numbers are the vendors' dense (no sparsity) bf16 tensor-core peaks per GPU. A CPU or an unknown GPU has no
entry: MFU is then reported as null rather than guessed.
"""

from __future__ import annotations

# Matched in order against the lower-cased device name; the first substring that occurs wins.
BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("h200", 989e12),
    ("gh200", 989e12),
    ("h100 pcie", 756e12),
    ("h100", 989e12),  # SXM / NVL
    ("h800", 989e12),
    ("b200", 2250e12),
    ("b100", 1750e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("a6000", 155e12),
    ("l40s", 362e12),
    ("l40", 181e12),
    ("l4", 121e12),
    ("a10g", 125e12),
    ("a10", 125e12),
    ("rtx 4090", 165e12),
    ("rtx 3090", 71e12),
    ("v100", 125e12),  # fp16 tensor cores; V100 has no bf16
    ("mi300x", 1307e12),
    ("mi250x", 383e12),
)


def peak_flops(device_name: str | None) -> float | None:
    """bf16 peak FLOP/s of one device named ``device_name`` (e.g. torch.cuda.get_device_name()), or None."""
    if not device_name:
        return None
    name = device_name.lower()
    for key, value in BF16_PEAK_FLOPS:
        if key in name:
            return value
    return None


def mfu(flops_per_token: float | None, tokens_per_s: float, peak_per_device: float | None, world_size: int) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of all devices; None when unknown."""
    if not flops_per_token or not peak_per_device or tokens_per_s <= 0:
        return None
    return flops_per_token * tokens_per_s / (peak_per_device * world_size)
