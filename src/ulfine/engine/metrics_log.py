"""Metric values go to a JSONL file (one record per write) and TensorBoard scalars."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ulfine.runfolder import RunFolder


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), sub, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


class MetricsLog:
    """Append-only metrics.jsonl + TensorBoard; a no-op on non-main DDP ranks."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 purge_step: int | None = None) -> None:
        """``purge_step``: TensorBoard hides every earlier point at this step or later (a resumed
        run passes the step after its checkpoint, so a killed run's points do not stay beside
        the redone ones)."""
        self.enabled = enabled
        self.path = RunFolder(run_dir).metrics_log
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(RunFolder(run_dir).tensorboard), purge_step=purge_step)

    def write(self, iteration: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, "time": time.time(), **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            scalars: dict[str, float] = {}
            _flatten("", values, scalars)
            for key, value in scalars.items():
                if "per_class" not in key:
                    self.writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = RunFolder(run_dir).metrics_log
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and _iteration_of(lines[-1]) is None:  # cut off by a kill mid-write
        lines.pop()
    return [json.loads(line) for line in lines]


def count_records(run_dir: str | Path) -> int:
    """Complete records in metrics.jsonl now (a checkpoint stores it, to rewind to exactly there)."""
    path = RunFolder(run_dir).metrics_log
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if _iteration_of(line) is not None)


def rewind_metrics_log(run_dir: str | Path, iteration: int, records: int | None = None) -> int:
    """Drop what a resumed run logs again: every record after the first ``records`` (the count
    when the checkpoint was written; records of the checkpoint's own iteration written after it,
    such as the final evaluation, are redone too), or without that count every record after
    ``iteration``; a line cut short by a kill always goes. Returns how many lines were dropped."""
    path = RunFolder(run_dir).metrics_log
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    complete = [line for line in lines if _iteration_of(line) is not None]
    if records is not None:
        kept = complete[:records]
    else:
        kept = [line for line in complete if _iteration_of(line) <= iteration]
    if len(kept) < len(lines):
        path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _iteration_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["iteration"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
