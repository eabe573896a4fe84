"""FLOP and parameter conventions beside the fits' defaults, and the measured wall-clock cost.

* ``flops_without_head``: training FLOPs without the LM head (the output projection to the vocabulary). The
  embedding lookup has no FLOPs in the accounting, so this is also "without head and embedding". At a small
  width the head dominates the forward FLOPs (58% at d_model 128, about 5% at the paper's 1.3B), so counting
  it shrinks the relative FLOPs difference between RoM and dense and understates a saving; the saving is
  reported with and without it.
* Parameters with embeddings (``ParamConvention.ACTIVE`` / ``TOTAL``) are the paper's convention; the fits'
  default excludes them (Kaplan et al.).
* ``wall_time_s``: the measured training time, so a wall-clock saving can be read off beside the FLOPs saving.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

HEAD_COLUMN = "flops_per_token_fwd_head"


def head_share(points: pd.DataFrame) -> np.ndarray:
    """Share of the forward FLOPs per token spent in the LM head, per row."""
    if HEAD_COLUMN not in points.columns:
        raise AnalysisError(f"the table has no column {HEAD_COLUMN!r} (collect it again with this version)")
    head = points[HEAD_COLUMN].to_numpy(float)
    return head / points["flops_per_token_fwd"].to_numpy(float)


def flops_without_head(points: pd.DataFrame) -> np.ndarray:
    """Training FLOPs without the LM head (and the FLOP-free embedding lookup): train_total * (1 - head share)."""
    return points["flops_train_total"].to_numpy(float) * (1.0 - head_share(points))
