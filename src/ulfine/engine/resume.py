"""Whether a run folder starts a new run or resumes one, and what a resume may change."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ulfine.config import ConfigError, RunConfig, to_dict, upgrade
from ulfine.engine import checkpoint as ckpt
from ulfine.engine.metrics_log import rewind_metrics_log
from ulfine.runfolder import RunFolder

logger = logging.getLogger(__name__)

# Config keys a resumed run may change: they steer logging, evaluation and I/O, not the
# training trajectory (augmentation is seeded per sample, so the worker count does not matter;
# output.dir/name change when a run folder is moved or copied).
RESUME_MAY_CHANGE = frozenset({
    "output.dir", "output.name", "output.resume", "output.tensorboard", "train.eval_every", "train.log_every",
    "train.checkpoint_every", "train.device", "train.compile", "data.num_workers",
    "data.eval_batch_size", "model.cache_dir", "train.cache_fingerprint",
})


def should_resume(folder: RunFolder, resume: bool) -> bool:
    """Whether to resume from checkpoints/last.pt (output.resume and it exists); never silently
    start over in a folder that already holds a checkpoint."""
    last = folder.last_checkpoint
    if folder.final_metrics.is_file() and last.is_file() and not resume:
        raise ConfigError(
            f"run folder '{folder.path}' holds a finished run (metrics.json); see it with "
            f"`ulfine report {folder.path}`, or choose another output.name (or delete the folder) to train again"
        )
    if last.is_file() and not resume:
        raise ConfigError(
            f"run folder '{folder.path}' already holds {last}; set output.resume=true to continue it, "
            "or choose another output.name (or delete the folder) to start over"
        )
    return last.is_file()


def clear_partial_writes(folder: RunFolder) -> None:
    """Before loading checkpoints/last.pt: remove the temp files a killed checkpoint write left."""
    if ckpt.remove_stale_temps(folder.last_checkpoint.parent):
        logger.warning("removed partial checkpoint files left by a killed run in %s", folder.last_checkpoint.parent)


def rewind_records(folder: RunFolder, iteration: int, records: int | None) -> None:
    """After loading: drop the metrics.jsonl records written after the checkpoint (they are redone)."""
    if rewind_metrics_log(folder.path, iteration, records):
        logger.info("dropped metrics.jsonl records after iteration %d (they are redone)", iteration)


def check_resumable(path: Path, saved: dict[str, Any], cfg: RunConfig) -> None:
    """Refuse to continue a checkpoint under a config that changes the training itself."""
    changes = ckpt.config_changes(upgrade(saved, f"the config in '{path}'"), to_dict(cfg), RESUME_MAY_CHANGE)
    if changes:
        raise ConfigError(
            f"cannot resume from '{path}': the config differs from the one it was trained with in "
            f"{'; '.join(changes)}. Only {', '.join(sorted(RESUME_MAY_CHANGE))} may change on resume; "
            "start a new run (another output.name) to change the rest"
        )
