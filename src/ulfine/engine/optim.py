"""Optimizer, warmup + cosine schedule and weight EMA, from torch's own building blocks."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.optim.swa_utils import AveragedModel

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


# 2-D parameters that are embeddings or class prototypes rather than weights (CLIP's token and
# position embeddings; ULFine's text prototypes C_t)
NO_DECAY_NAMES = frozenset({"class_embedding", "positional_embedding", "proto_text"})


def decays(name: str, param: Tensor) -> bool:
    """Whether weight decay applies: not to biases, norm weights, scales (any tensor with < 2
    dims, as FixMatch/ACR's ``no_decay = ['bias', 'bn']`` and open_clip's ``p.ndim < 2``) nor to
    embeddings and prototypes (`NO_DECAY_NAMES`)."""
    return param.ndim >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES


def split_weight_decay(groups: Iterable[dict[str, Any]], named: Iterable[tuple[str, Tensor]]) -> list[dict[str, Any]]:
    """Each group -> (decayed, weight_decay = 0) groups by `decays`; ``named`` names the params."""
    names = {id(param): name for name, param in named}
    split = []
    for group in groups:
        params = list(group["params"])
        keep = [p for p in params if decays(names.get(id(p), ""), p)]
        free = [p for p in params if not decays(names.get(id(p), ""), p)]
        split += [{**group, "params": keep}, {**group, "params": free, "weight_decay": 0.0}]
    return split


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




def _ema_or_copy(decay: float):
    """torch's EMA over floats; other tensors (e.g. a method's integer iteration counter) are
    copied. torch's own EMA casts ``decay * n + (1 - decay) * n'`` back to int, so a counter
    would stay where it started."""
    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], _: Tensor) -> None:
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, 1 - decay)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
    return update


def weight_ema(module: nn.Module, decay: float) -> AveragedModel:
    """EMA copy of ``module``'s parameters and float buffers; other buffers are copied."""
    return AveragedModel(module, multi_avg_fn=_ema_or_copy(decay), use_buffers=True)
