"""Torch-free analysis of RoM run records: collect -> fit -> claims -> figures -> tables -> report.

Run ``python -m analysis --help``. Reads only final run records (``rom.records``); imports nothing else
from ``rom`` and never torch. Modules: collect, fit, claims, figures, tables, report, synthetic, cli.
"""

__all__ = ["collect", "fit", "claims", "figures", "tables", "report", "synthetic", "cli"]
