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

from ulfine.config import ConfigError, RunConfig, load_config
from ulfine.engine.distributed import shutdown
from ulfine.engine.trainer import NonFiniteLossError, Trainer
from ulfine.runfolder import RunFolder


def config_source(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """(YAML file, overrides); a run folder stands for its config.yaml plus output.resume=true."""
    if config is not None and Path(config).is_dir():
        return str(RunFolder(config).config), ["output.resume=true", *overrides]
    return config, overrides


def run_folder_of(config: str | None) -> Path | None:
    """The run folder ``--config`` names: a folder itself, or the folder of a run's config.yaml
    (one with a checkpoints/ folder beside it); None for an ordinary config file."""
    if config is None:
        return None
    path = Path(config)
    if path.is_dir():
        return path
    if path.name == RunFolder(path.parent).config.name and RunFolder(path.parent).checkpoints.is_dir():
        return path.parent
    return None


def pin_run_folder(cfg: RunConfig, run_dir: Path, overrides: list[str]) -> RunConfig:
    """The folder passed is the folder used: output.dir/name recorded in a copied or moved
    run's config.yaml still name the original, so they are replaced by where it now lives."""
    keys = {item.partition("=")[0].strip().removeprefix("--") for item in overrides}
    if keys & {"output.dir", "output.name"}:
        raise ConfigError(
            f"--config names the run folder '{run_dir}', which is the folder this run uses; drop the "
            "output.dir/output.name overrides (or pass a config file, not a run, to start a new run elsewhere)"
        )
    cfg.output.dir, cfg.output.name = str(run_dir.parent), run_dir.name
    return cfg


def abort_state(trainer: Trainer) -> str:
    """What an abort leaves: the checkpoint to resume from, or that there is none yet."""
    last = trainer.folder.last_checkpoint
    if last.is_file():
        return f"the checkpoint {last} is intact. Resume with: {resume_hint(trainer)}"
    return "no checkpoint was written yet; run the same command again to start over"


def resume_hint(trainer: Trainer) -> str:
    return f"ulfine train --config {trainer.folder.config} output.resume=true"


def run(args: argparse.Namespace) -> int:
    cfg = load_config(*config_source(args.config, args.overrides))
    run_dir = run_folder_of(args.config)
    if run_dir is not None:
        cfg = pin_run_folder(cfg, run_dir, args.overrides)
    trainer = Trainer(cfg)
    try:
        result = trainer.fit()
    except NonFiniteLossError as err:
        print(f"ulfine train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ulfine train: aborted; {abort_state(trainer)}", file=sys.stderr)
        return 128 + (trainer.stop_signal or signal.SIGINT)
    finally:
        shutdown()
    if trainer.stop_signal is not None:
        print(f"ulfine train: {signal.Signals(trainer.stop_signal).name} received: stopped at iteration "
              f"{trainer.state.iteration} of {cfg.optim.iterations} with a checkpoint in "
              f"{trainer.folder.last_checkpoint}. Resume with: {resume_hint(trainer)}",
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
