"""VPT-deep (Jia et al., ECCV 2022): fresh learned prompt tokens at the input of every block.

Block l sees ``[CLS, P_l, patches]`` with ``P_l`` [L, d]: a forward pre-hook on
``visual.transformer`` inserts ``P_0`` after CLS, a pre-hook on each later block replaces the
previous block's prompt outputs by its own ``P_l``, and a forward hook on ``visual.transformer``
drops them again, so open_clip's ``_pool`` sees the usual tokens. Prompts are inserted after CLS
rather than appended (LIFT's choice); attention has no notion of order, so both are the same model.

Unlike the other modules, VPT does not reproduce the frozen model at init: any prompt changes
what CLS attends to, and there is no exact zero. Prompts use VPT's uniform (Xavier) init.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ulfine.config import option
from ulfine.models.peft.base import PEFT, match_device_dtype, residual_blocks, width

_TOKENS = 1  # token dim of visual.transformer's input and output, which are always [B, N, d]


@dataclass
class VPTConfig:
    """``strategy.vpt.*`` (also read from the flat ``strategy.vpt_length``)."""

    length: int = option(10, range=">= 1", alias="vpt_length")  # prompts per block (L)


def _insert(x: Tensor, prompts: Tensor, dim: int) -> Tensor:
    """[.., 1 + N, ..] -> [.., 1 + L + N, ..] along ``dim``: prompts go after CLS."""
    shape = list(x.shape)
    shape[dim] = prompts.shape[0]
    expanded = prompts.to(x.dtype).unsqueeze(1 - dim).expand(shape)
    return torch.cat([x.narrow(dim, 0, 1), expanded, x.narrow(dim, 1, x.shape[dim] - 1)], dim)


def _drop(x: Tensor, length: int, dim: int) -> Tensor:
    """[.., 1 + L + N, ..] -> [.., 1 + N, ..]: removes the L tokens after CLS."""
    rest = x.shape[dim] - 1 - length
    return torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 1 + length, rest)], dim)


class LayerPrompts(nn.Module):
    """The prompts of one block, [L, d], and the hooks that splice them into its input.

    The hooks are bound methods, so ``copy.deepcopy`` of the ViT (e.g. for a weight EMA) rebinds
    them to the copied prompts.
    """

    def __init__(self, length: int, dim: int, init_range: float, token_dim: int) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(length, dim))
        self.init_range = init_range
        self.token_dim = token_dim  # 1 for batch-first blocks ([B, N, d]), else 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.prompts, -self.init_range, self.init_range)

    def insert(self, module: nn.Module, args: tuple) -> tuple:
        """Pre-hook of visual.transformer: ``[CLS, patches] -> [CLS, P_0, patches]``."""
        return (_insert(args[0], self.prompts, _TOKENS), *args[1:])

    def replace(self, module: nn.Module, args: tuple) -> tuple:
        """Pre-hook of block l > 0: the previous block's prompt outputs -> ``P_l``."""
        x = _drop(args[0], len(self.prompts), self.token_dim)
        return (_insert(x, self.prompts, self.token_dim), *args[1:])

    def remove(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        """Forward hook of visual.transformer: drops the last block's prompt outputs."""
        return _drop(output, len(self.prompts), _TOKENS)


@PEFT.register("vpt", config=VPTConfig)
def attach(visual: nn.Module, cfg: VPTConfig) -> nn.ModuleList:
    """Registers ``visual.transformer.vpt`` (one LayerPrompts per block) and its hooks."""
    blocks = residual_blocks(visual)
    token_dim = 1 if visual.transformer.batch_first else 0
    patch_fan_in = visual.conv1.weight[0].numel()  # 3 * patch_h * patch_w
    init_range = math.sqrt(6.0 / (patch_fan_in + width(visual)))
    prompts = nn.ModuleList(
        match_device_dtype(LayerPrompts(cfg.length, width(visual), init_range, token_dim), visual.conv1)
        for _ in blocks
    )
    visual.transformer.vpt = prompts
    visual.transformer.register_forward_pre_hook(prompts[0].insert)
    visual.transformer.register_forward_hook(prompts[0].remove)
    for block, layer_prompts in zip(blocks[1:], prompts[1:]):
        block.register_forward_pre_hook(layer_prompts.replace)
    return prompts
