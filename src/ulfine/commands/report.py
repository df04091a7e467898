"""`ulfine report RUN [--out FILE]`: a self-contained HTML report of a run folder.

The run's files give the summary, config, per-class accuracy, learning curves and pseudo-label
diagnostics; the confusion matrix (and the reliability diagram of runs without calibration
bins) needs the test predictions, recomputed here with ``load_run`` on the run's test split.
When the model or data cannot be found, those sections say so and the rest is still written.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ulfine.api import load_run
from ulfine.data import DatasetError, build_ltssl_data
from ulfine.engine.evaluate import eval_loader, predict_logits
from ulfine.reports.html import TestPredictions, read_inputs, write_report
from ulfine.runfolder import RunFolder

logger = logging.getLogger(__name__)


def test_predictions(run_dir: str | Path, device: str = "auto", num_workers: int = 0) -> TestPredictions:
    """The run's model (checkpoints/last.pt) on the test split of its own data config."""
    predictor = load_run(run_dir, device=device)
    cfg = predictor.cfg
    test = build_ltssl_data(cfg.data, predictor.foundation.preprocess_cfg).test
    loader = eval_loader(test, cfg.data.eval_batch_size, num_workers)
    logits, targets = predict_logits(predictor.learner.predict, loader, predictor.device, predictor.precision,
                                     desc="test predictions")
    return TestPredictions(logits, targets, predictor.class_names)


def build_report(run_dir: str | Path, out: str | Path | None = None, device: str = "auto",
                 num_workers: int = 0) -> Path:
    """Write the report (default ``run_dir/report.html``) and return its path."""
    predictions, note = None, ""
    try:
        predictions = test_predictions(run_dir, device, num_workers)
    except (DatasetError, FileNotFoundError) as err:
        note = f"the test predictions could not be computed: {err}"
        logger.warning(note)
    inputs = read_inputs(run_dir, predictions, note)
    return write_report(inputs, out or RunFolder(run_dir).report)


def run(args: argparse.Namespace) -> int:
    path = build_report(args.run, args.out, args.device, args.workers)
    print(f"wrote {path}")
    return 0
