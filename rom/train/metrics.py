"""Step metrics as JSON lines (``metrics.jsonl``), one object per logged step, namespaced keys.

Keys: ``step``, ``tokens``, ``lr``, ``grad_norm``, ``train/loss`` (CE + aux, mean over the steps since the
last line), ``train/ce``, ``train/aux_loss``, ``perf/*`` (tokens_per_s, step_time_s, data_time_frac: the share of wall
time spent in the batch loader, the host-to-device copy excluded since 2026-12-07 (records before then include
it and with it the GPU's backlog), mfu),
``val/loss``, ``aux/load_balance``, ``aux/z_loss`` (raw, unweighted, summed over routers) and per router
``router/layer{i}/load_min|load_max|load_cv|entropy`` where load is the share of routed token-slots each
expert received (sums to 1 over experts; balanced = 1/E) and cv = std/mean of the per-expert counts.
A layer holding several routers (independent routing, FFN-MoE) gets ``router/layer{i}.{name}/...``.

Cooldown branches (train.cooldown_branches) write their own lines, ``{"step": S, "branch": {...}}`` where S is
the main-run step the branch was taken at and the nested object holds ``fraction``, the branch's own ``step``
and ``tokens``, ``train/loss``, ``train/ce``, ``train/aux_loss``, ``grad_norm``, ``lr`` and, at its end,
``val/loss``. Readers of the main run's curve skip lines with a ``branch`` key.

A resumed run's file reads as one uninterrupted run: lines after the checkpoint's step are dropped on resume,
and a signal's checkpoint carries the steps not yet in a line (the trainer's ``pending_rows``), so no line is
written at the signal's step and the next line averages the same steps as without the interruption.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from rom.io import atomic_write_text


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null-safe strings would break readers, so use None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends lines to ``path``; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int, finished_branches: Iterable[float] = ()) -> None:
        """On resume: drop lines logged after the checkpointed ``step`` so the file reads as one run, and the
        lines of any cooldown branch not in ``finished_branches`` (one cut short by a kill is run again)."""
        if not self.enabled or not self.path.exists():
            return
        done = {float(f) for f in finished_branches}
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and _step_of(line) <= step and _branch_kept(line, done)]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def reset(self) -> None:
        if self.enabled and self.path.exists():
            self.path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a killed run: drop it


def _branch_kept(line: str, finished: set[float]) -> bool:
    try:
        branch = json.loads(line).get("branch")
    except (json.JSONDecodeError, AttributeError):
        return False
    return branch is None or float(branch.get("fraction", -1)) in finished


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _f(value: Any) -> float:
    return float(value.detach()) if hasattr(value, "detach") else float(value)


def router_metrics(stats: Iterable[Any]) -> dict[str, float]:
    """Aggregate RouterStats of one or more forward passes per (layer, router name) into metric keys."""
    counts: dict[tuple[int, str], Any] = {}
    entropy: dict[tuple[int, str], list[float]] = {}
    lb: list[float] = []
    z: list[float] = []
    for s in stats:
        key = (int(s.layer), str(s.name))
        tpe = s.tokens_per_expert.detach().float().cpu()
        counts[key] = tpe if key not in counts else counts[key] + tpe
        entropy.setdefault(key, []).append(_f(s.entropy))
        lb.append(_f(s.load_balance_loss))
        z.append(_f(s.z_loss))
    out: dict[str, float] = {}
    names_per_layer: dict[int, set[str]] = {}
    for layer, name in counts:
        names_per_layer.setdefault(layer, set()).add(name)
    for (layer, name), c in sorted(counts.items()):
        prefix = f"router/layer{layer}" if len(names_per_layer[layer]) == 1 else f"router/layer{layer}.{name}"
        total = float(c.sum())
        share = c / total if total > 0 else c
        mean = float(c.mean())
        out[f"{prefix}/load_min"] = float(share.min())
        out[f"{prefix}/load_max"] = float(share.max())
        out[f"{prefix}/load_cv"] = float(c.std(unbiased=False)) / mean if mean > 0 else 0.0
        out[f"{prefix}/entropy"] = sum(entropy[(layer, name)]) / len(entropy[(layer, name)])
    if counts:
        # Each forward pass contributes one value per router; report the per-pass sum, averaged over passes.
        passes = max(len(v) for v in entropy.values())
        out["aux/load_balance"] = sum(lb) / passes
        out["aux/z_loss"] = sum(z) / passes
    return out
