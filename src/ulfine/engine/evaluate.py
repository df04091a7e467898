"""Batched inference over a dataset of view dicts: logits and targets, with a progress bar."""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ulfine.data.views import DROPPED
from ulfine.engine.amp import autocast

logger = logging.getLogger(__name__)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool = False) -> DataLoader:
    """``pin_memory`` pays only with a GPU: page-locked batches copy to it asynchronously."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                      persistent_workers=False, pin_memory=pin_memory)


@torch.no_grad()
def predict_logits(
    logits_fn: Callable[[Tensor], Tensor],
    loader: DataLoader,
    device: torch.device,
    precision: str = "fp32",
    desc: str = "eval",
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Run ``logits_fn`` on each batch's "image" -> (logits [N, C] float32, labels [N]).

    Items labeled ``DROPPED`` (unreadable images under data.bad_images=skip) are left out,
    with a warning that says how many; N counts only the others."""
    all_logits, all_targets = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with autocast(device, precision):
            logits = logits_fn(batch["image"].to(device, non_blocking=True))
        all_logits.append(logits.float().cpu())
        all_targets.append(batch["label"])
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    kept = targets != DROPPED
    if not kept.all():
        logger.warning("%s: left %d unreadable image(s) out (data.bad_images=skip); the metrics cover "
                       "the other %d", desc, int((~kept).sum()), int(kept.sum()))
    return logits[kept], targets[kept]
