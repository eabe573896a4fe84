"""The paper's claims, computed from the collected table and the fits, each with a verdict by a stated rule.

One module per claim (``analysis.outputs.CLAIMS`` lists them with their ids): ``equivalence`` (a),
``saving`` (b), ``context`` (c), ``downstream`` (d); ``common`` holds what they share and ``registry`` runs
them. This package file only re-exports.
"""

from analysis.claims.common import (CLAIMS_SCHEMA, Claim, ClaimInputs, ReadOff, ReportSection, Verdict,
                                    claim_inputs, claims_document, interval_verdict, load_claims, percentile_ci)
from analysis.claims.context import CONTEXT_TOLERANCE, context_ratios
from analysis.claims.downstream import DOWNSTREAM_COLUMNS, DOWNSTREAM_MARGIN, downstream_table
from analysis.claims.equivalence import PAPER_EQUIVALENCE, equivalence_ratio
from analysis.claims.registry import claim_module, compute_claims, report_sections
from analysis.claims.saving import PAPER_SAVING, flops_saving

__all__ = [
    "CLAIMS_SCHEMA", "CONTEXT_TOLERANCE", "DOWNSTREAM_COLUMNS", "DOWNSTREAM_MARGIN", "PAPER_EQUIVALENCE",
    "PAPER_SAVING", "Claim", "ClaimInputs", "ReadOff", "ReportSection", "Verdict", "claim_inputs", "claim_module",
    "claims_document", "compute_claims", "context_ratios", "downstream_table", "equivalence_ratio",
    "flops_saving", "interval_verdict", "load_claims", "percentile_ci", "report_sections",
]
