"""`ulfine analyze RUN_DIR [RUN_DIR ...] --out DIR`: the paper's analysis (ULFINE.md section 5).

Writes DIR/analysis.md (summary table: accuracy overall/head/medium/tail, ECE, pseudo-label
accuracy, mask rate, confidence of wrong pseudo-labels, train minutes) and the PNG figures it
references, comparing the given runs side by side (e.g. LP vs LFT vs ULFine).
"""
from __future__ import annotations

import argparse

from ulfine.reports.analysis import load_run, write_analysis


def run(args: argparse.Namespace) -> int:
    """``args``: runs (run folders), out (output folder)."""
    runs = [load_run(path) for path in args.runs]
    path = write_analysis(runs, args.out)
    print(path)
    return 0
