"""Seed noise: the spread of the validation loss between runs that differ only in their seed.

A seed group is a run of role ``seed`` together with every run of roles ``scaling`` / ``seed`` whose config is
identical except for the seed (and the run's name and role), at the same parameter count and token budget.
Per family, the noise is the pooled within-group standard deviation

    s^2 = sum_groups sum_i (y_i - mean_g)^2 / sum_groups (n_g - 1),   dof = sum_groups (n_g - 1),

of y = log(loss) (``sigma_log``, what the log-space fits see) and of the loss in nats (``sigma_nats``).
A family without seed runs borrows the pooled estimate of the families that have them (``source`` says so);
with none at all there is no estimate (``dof`` 0) and the pooled fits fall back to their residuals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from rom.io import as_float

SEED_ROLE = "seed"
GROUP_ROLES = ("scaling", "seed")
_IGNORED_CONFIG_KEYS = (("name",), ("role",), ("train", "seed"))


@dataclass(frozen=True)
class NoiseEstimate:
    family: str
    sigma_log: float  # std of log(loss) between seeds (nan when unknown)
    sigma_nats: float  # std of the loss in nats/token between seeds
    dof: int  # degrees of freedom of the estimate (0: none)
    source: str  # "seeds" | "seeds of <families>" | "fit residuals" | "none"
    groups: tuple[tuple[str, ...], ...] = ()  # run ids of each seed group used

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "NoiseEstimate":
        return NoiseEstimate(d["family"], as_float(d["sigma_log"]), as_float(d["sigma_nats"]), int(d["dof"]),
                             d["source"], tuple(tuple(g) for g in d.get("groups", ())))

    @staticmethod
    def none(family: str) -> "NoiseEstimate":
        return NoiseEstimate(family, math.nan, math.nan, 0, "none")


def config_key(config_json: str, also_ignore: tuple[tuple[str, ...], ...] = ()) -> str:
    """The run's configuration without its name, role and seed (and the key paths in ``also_ignore``): equal
    keys mean seed replicates (of one comparison, with ``also_ignore``)."""
    return _config_key(config_json, also_ignore)


def config_leaves(config_json: str) -> dict[str, Any]:
    """The same configuration flattened to dotted keys (to count how two runs differ)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = json.dumps(node, sort_keys=True)

    walk(json.loads(_config_key(config_json)), "")
    return out


def _config_key(config_json: str, also_ignore: tuple[tuple[str, ...], ...] = ()) -> str:
    try:
        cfg = json.loads(config_json) if isinstance(config_json, str) and config_json else {}
    except json.JSONDecodeError:
        cfg = {}
    for path in _IGNORED_CONFIG_KEYS + also_ignore:
        node = cfg
        for k in path[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return json.dumps(cfg, sort_keys=True)


def seed_groups(df: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
    """Per family, the seed groups (rows at the training length, >= 2 runs, at least one of role ``seed``)."""
    if "point" in df.columns:  # seed spread of the runs' own records; cooldown-branch points share their runs
        df = df[df["point"] == "main"]
    runs = df[df["at_train_length"] & df["role"].isin(GROUP_ROLES) & ~df["diverged"].astype(bool)]
    runs = runs.drop_duplicates("run_id")
    runs = runs[np.isfinite(runs["loss_nats"].astype(float)) & (runs["loss_nats"].astype(float) > 0)]
    if runs.empty:
        return {}
    keyed = runs.assign(_key=[_config_key(c) for c in runs.get("config_json", pd.Series([""] * len(runs)))])
    out: dict[str, list[pd.DataFrame]] = {}
    cols = ["family", "_key", "params_active_nonembedding", "train_tokens"]
    for (fam, *_), g in keyed.groupby(cols, sort=True):
        if len(g) >= 2 and (g["role"] == SEED_ROLE).any():
            out.setdefault(str(fam), []).append(g.sort_values("run_id"))
    return out


def _pooled(groups: Sequence[pd.DataFrame]) -> tuple[float, float, int]:
    ss_log = ss_nats = 0.0
    dof = 0
    for g in groups:
        y = g["loss_nats"].to_numpy(float)
        ss_log += float(np.sum((np.log(y) - np.log(y).mean()) ** 2))
        ss_nats += float(np.sum((y - y.mean()) ** 2))
        dof += len(y) - 1
    if dof == 0:
        return math.nan, math.nan, 0
    return math.sqrt(ss_log / dof), math.sqrt(ss_nats / dof), dof


def estimate_noise(df: pd.DataFrame, families: Sequence[str] | None = None,
                   groups: dict[str, list[pd.DataFrame]] | None = None) -> dict[str, NoiseEstimate]:
    """Per family (default: every family in the table) the seed noise, borrowed from other families when a
    family has no seed runs, or ``NoiseEstimate.none`` when no family has any. ``groups``: ``seed_groups(df)``
    where the caller has it already."""
    groups = seed_groups(df) if groups is None else groups
    families = sorted(df["family"].unique()) if families is None else list(families)
    own = {}
    for fam, gs in groups.items():
        s_log, s_nats, dof = _pooled(gs)
        own[fam] = NoiseEstimate(fam, s_log, s_nats, dof, "seeds",
                                 tuple(tuple(g["run_id"].astype(str)) for g in gs))
    out = {}
    for fam in families:
        if fam in own:
            out[fam] = own[fam]
        elif groups:
            borrowed = [g for f in sorted(groups) for g in groups[f]]
            s_log, s_nats, dof = _pooled(borrowed)
            out[fam] = NoiseEstimate(fam, s_log, s_nats, dof, f"seeds of {'+'.join(sorted(groups))}",
                                     tuple(tuple(g["run_id"].astype(str)) for g in borrowed))
        else:
            out[fam] = NoiseEstimate.none(fam)
    return out


def residual_noise(family: str, log_residuals: Sequence[float], dof: int, mean_loss: float) -> NoiseEstimate:
    """Noise from a fit's log residuals, sqrt(sum r^2 / dof) (includes any misfit of the form)."""
    r = np.asarray(log_residuals, float)
    if dof <= 0 or len(r) == 0:
        return NoiseEstimate.none(family)
    s = math.sqrt(float(r @ r) / dof)
    return NoiseEstimate(family, s, s * mean_loss, int(dof), "fit residuals")
