"""Optimizer and warmup + cosine schedule, from torch's own building blocks."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from ulfine.config import ConfigError, OptimConfig
from ulfine.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_optimizer(groups: Iterable[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("nothing to train: the strategy and method leave no trainable parameters")
    return OPTIMIZERS.get(cfg.optimizer)(groups, cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> LRScheduler:
    """Linear warmup for ``warmup_iterations`` then cosine decay to 0 at ``iterations``."""
    warmup = min(cfg.warmup_iterations, max(cfg.iterations - 1, 0))
    decay = max(cfg.iterations - warmup, 1)
    cosine = CosineAnnealingLR(optimizer, T_max=decay)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


