"""`ulfine train --config FILE [key=value ...]`: one strategy x method run (torchrun-compatible).

``--config RUN_DIR`` (a run folder) continues that run: its config.yaml with output.resume=true.
Exit codes: 0 done; 2 a clear error (bad config, data or model; non-finite loss); 128 + signal
(130 SIGINT, 143 SIGTERM) when a signal stopped training after writing a checkpoint.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ulfine.config import load_config
from ulfine.engine.distributed import shutdown
from ulfine.engine.trainer import NonFiniteLossError, Trainer


def config_source(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """(YAML file, overrides); a run folder stands for its config.yaml plus output.resume=true."""
    if config is not None and Path(config).is_dir():
        return str(Path(config) / "config.yaml"), ["output.resume=true", *overrides]
    return config, overrides


def resume_hint(trainer: Trainer) -> str:
    return f"ulfine train --config {trainer.run_dir / 'config.yaml'} output.resume=true"


def run(args: argparse.Namespace) -> int:
    cfg = load_config(*config_source(args.config, args.overrides))
    trainer = Trainer(cfg)
    try:
        result = trainer.fit()
    except NonFiniteLossError as err:
        print(f"ulfine train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ulfine train: aborted; checkpoints already in {trainer.run_dir / 'checkpoints'} are intact. "
              f"Resume with: {resume_hint(trainer)}", file=sys.stderr)
        return 128 + (trainer.stop_signal or signal.SIGINT)
    finally:
        shutdown()
    if trainer.stop_signal is not None:
        print(f"ulfine train: {signal.Signals(trainer.stop_signal).name} received: stopped at iteration "
              f"{trainer.state.iteration} of {cfg.optim.iterations} with a checkpoint in "
              f"{trainer.run_dir / 'checkpoints' / 'last.pt'}. Resume with: {resume_hint(trainer)}",
              file=sys.stderr)
        return 128 + trainer.stop_signal
    if result and trainer.dist.is_main:
        summary = {k: result[k] for k in ("top1", "head", "medium", "tail", "train_seconds", "selected")
                   if k in result}
        print(json.dumps({"run_dir": str(trainer.run_dir), **summary}, indent=2))
        print(next_steps(trainer.run_dir))
    return 0


def next_steps(run_dir: Path) -> str:
    """What to run on a finished run."""
    commands = [
        (f"ulfine report {run_dir}", "HTML report (RUN/report.html)"),
        (f"ulfine analyze {run_dir} --out {run_dir / 'analysis'}", "pseudo-label and calibration figures"),
        (f"ulfine predict --run {run_dir} --images DIR --output predictions.csv", "classify your images"),
    ]
    return "next:\n" + "\n".join(f"  {why}:\n    {c}" for c, why in commands)
