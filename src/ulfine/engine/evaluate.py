"""Batched inference over a loader: logits and targets, with a progress bar."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ulfine.engine.amp import autocast


@torch.no_grad()
def predict_logits(
    logits_fn: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    precision: str = "fp32",
    desc: str = "eval",
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Run ``logits_fn`` on every (images, targets) batch -> (logits [N, C] float32, targets [N])."""
    all_logits, all_targets = [], []
    for images, targets in tqdm(batches, desc=desc, disable=not progress, leave=False):
        with autocast(device, precision):
            logits = logits_fn(images.to(device, non_blocking=True))
        all_logits.append(logits.float().cpu())
        all_targets.append(targets)
    return torch.cat(all_logits), torch.cat(all_targets)
