"""The runner: every claim of ``analysis.outputs.CLAIMS``, in that order, each from its own module.

A claim module exposes ``compute(claim_id, inputs) -> Claim`` and ``report_sections(claim) ->
list[ReportSection]``; nothing else in the analysis knows which claims exist.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Sequence

import pandas as pd

from analysis.errors import AnalysisError
from analysis.claims.common import Claim, ReportSection, claim_inputs
from analysis.claims.context import CONTEXT_TOLERANCE
from analysis.claims.downstream import DOWNSTREAM_MARGIN
from analysis.fit import FitResult
from analysis.pooled import PooledFit
from analysis.outputs import CLAIMS


def claim_module(claim_id: str) -> ModuleType:
    """The module that holds claim ``claim_id``; an id not in ``analysis.outputs.CLAIMS`` is an error."""
    if claim_id not in CLAIMS:
        raise AnalysisError(f"unknown claim id {claim_id!r}; the claims are {list(CLAIMS)} (analysis/outputs.py)")
    module = importlib.import_module(f"analysis.claims.{CLAIMS[claim_id]}")
    for name in ("compute", "report_sections"):
        if not callable(getattr(module, name, None)):
            raise AnalysisError(f"claim module {module.__name__} (claim {claim_id!r}) lacks a function {name}()")
    return module


def compute_claims(df: pd.DataFrame, fits: dict[str, FitResult], tol: float = CONTEXT_TOLERANCE,
                   margin: float = DOWNSTREAM_MARGIN, pooled: dict[str, PooledFit] | None = None) -> list[Claim]:
    """Every claim, in the order of ``analysis.outputs.CLAIMS``."""
    inputs = claim_inputs(df, fits, context_tolerance=tol, downstream_margin=margin, pooled=pooled)
    return [claim_module(cid).compute(cid, inputs) for cid in CLAIMS]


def report_sections(claims: Sequence[Claim]) -> list[ReportSection]:
    """The per-claim tables the report shows under the claims table, claim by claim."""
    return [s for c in claims for s in claim_module(c.id).report_sections(c)]
