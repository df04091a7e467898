"""The layout of a run folder, in one place: every reader and writer names files through it.

A run folder (``output.dir/output.name``, written by the trainer) holds::

    config.yaml            the resolved RunConfig
    train.log              the log of every (re)start
    metrics.jsonl          one record per write: losses, evaluations, pseudo-label diagnostics
    metrics.json           the final metrics, written when training finished
    checkpoints/last.pt    the state to resume from (and the weights ``load_run`` uses)
    checkpoints/best.pt    the best evaluation so far (model selection)
    tensorboard/           TensorBoard scalars (output.tensorboard)
    report.html            ``ulfine report``'s default output
    export/                ``ulfine export``'s default output

Its output folder ``output.dir`` also holds the shared feature cache (``.feature_cache``).
This module imports nothing from ulfine, so every layer (engine, api, reports, bench) may use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FEATURE_CACHE = ".feature_cache"  # in output.dir, shared by the runs there


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder; nothing is created or read here."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics_log(self) -> Path:
        """metrics.jsonl: the records written during training."""
        return self.path / "metrics.jsonl"

    @property
    def final_metrics(self) -> Path:
        """metrics.json: present once training finished."""
        return self.path / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        """checkpoints/<name>.pt (name: 'last' or 'best')."""
        return self.checkpoints / f"{name}.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint("last")

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint("best")

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def export(self) -> Path:
        return self.path / "export"

    def is_run(self) -> bool:
        """Whether the folder looks like a run folder (it has its config.yaml)."""
        return self.config.is_file()

    def is_finished(self) -> bool:
        return self.final_metrics.is_file()

    def __str__(self) -> str:
        return str(self.path)


def feature_cache_dir(output_dir: str | Path) -> Path:
    """The default feature cache of the runs in ``output_dir`` (``train.cache_dir`` replaces it)."""
    return Path(output_dir) / FEATURE_CACHE
