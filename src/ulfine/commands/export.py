"""`ulfine export RUN [--out DIR]`: the fine-tuned part of a run alone, to share or deploy.

Writes ``weights.safetensors`` (PEFT weights + method state: heads, prototypes, priors) and
``export.json`` (class names, preprocessing, base model identifier and the sha256 of its image
tower, the run config). ``ulfine predict --run DIR`` and ``ulfine.api.load_run(DIR)`` rebuild
the model on the base weights; for LP and LFT the export is a small fraction of the base model.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ulfine.api import EXPORT_JSON, EXPORT_WEIGHTS, check_base_model, read_run, refuse_scratch, write_export
from ulfine.models.foundation import load_foundation
from ulfine.runfolder import RunFolder

logger = logging.getLogger(__name__)


def export_run(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Export ``run_dir`` (its checkpoints/last.pt) to ``out_dir`` (default ``run_dir/export``)."""
    state = read_run(run_dir)
    refuse_scratch(state)
    foundation = load_foundation(state.cfg.model)
    check_base_model(foundation, state)
    return write_export(state, foundation, out_dir or RunFolder(run_dir).export)


def run(args: argparse.Namespace) -> int:
    out_dir = export_run(args.run, args.out)
    size = (out_dir / EXPORT_WEIGHTS).stat().st_size + (out_dir / EXPORT_JSON).stat().st_size
    print(f"exported {args.run} to {out_dir} ({size / 1e6:.2f} MB)")
    return 0
