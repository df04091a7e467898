"""Batched inference over a dataset of view dicts: logits and targets, with a progress bar."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ulfine.engine.amp import autocast


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
    """Run ``logits_fn`` on each batch's "image" -> (logits [N, C] float32, labels [N])."""
    all_logits, all_targets = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with autocast(device, precision):
            logits = logits_fn(batch["image"].to(device, non_blocking=True))
        all_logits.append(logits.float().cpu())
        all_targets.append(batch["label"])
    return torch.cat(all_logits), torch.cat(all_targets)
