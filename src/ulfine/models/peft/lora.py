"""LoRA on the query and value projections (Hu et al., ICLR 2022).

``W_qkv <- W_qkv + (alpha / r) * [B_q A_q ; 0 ; B_v A_v]``: a parametrization of the fused
``attn.in_proj_weight`` of ``nn.MultiheadAttention`` (the name also exists in open_clip's own
``Attention``), so open_clip's forward runs unchanged, including PyTorch's fused attention path.
``B`` starts at zero, so step 0 equals the frozen model. After attaching, the pretrained weight's
state-dict key becomes ``attn.parametrizations.in_proj_weight.original``.

As LIFT's ``LoRA`` on q and v (``q + s * x A B``, A [d, r], B [r, d]): rank r from LIFT's rule when
``strategy.lora.rank`` is 0, scaling ``lora_alpha / r`` = 1 / r, and A Kaiming-uniform (a = sqrt(5))
with LIFT's fan-in r, i.e. uniform in +-1/sqrt(r) (the LoRA paper's fan-in is d). LIFT adds the
update to the LayerNorm-ed block input, the same input ``in_proj_weight`` multiplies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ulfine.config import option
from ulfine.models.peft.base import PEFT, match_device_dtype, require_size, residual_blocks, width


@dataclass
class LoRAConfig:
    """``strategy.lora.*`` (also read from the flat ``strategy.lora_rank/_alpha``)."""

    rank: int = option(0, range=">= 0", alias="lora_rank")  # r; 0 = LIFT's rule (as adaptformer.dim's)
    alpha: float = option(1.0, alias="lora_alpha")  # the update is scaled by alpha / r (LIFT: 1 / r)


class LowRankQV(nn.Module):
    """Maps the fused weight [3d, d] to itself plus low-rank updates of its q and v rows."""

    def __init__(self, dim: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.scaling = alpha / rank
        self.a_q = nn.Parameter(torch.empty(rank, dim))
        self.b_q = nn.Parameter(torch.empty(dim, rank))
        self.a_v = nn.Parameter(torch.empty(rank, dim))
        self.b_v = nn.Parameter(torch.empty(dim, rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random A (LIFT's bound 1/sqrt(r)), zero B: the update starts at zero."""
        for a in (self.a_q, self.a_v):
            nn.init.kaiming_uniform_(a.T, a=math.sqrt(5))  # A^T is LIFT's [d, r]: fan-in r
        for b in (self.b_q, self.b_v):
            nn.init.zeros_(b)

    def forward(self, weight: Tensor) -> Tensor:
        delta_q = self.scaling * (self.b_q @ self.a_q)
        delta_v = self.scaling * (self.b_v @ self.a_v)
        return weight + torch.cat([delta_q, torch.zeros_like(delta_q), delta_v])


@PEFT.register("lora", config=LoRAConfig)
def attach(visual: nn.Module, cfg: LoRAConfig) -> nn.ModuleList:
    """Parametrizes every block's fused qkv weight; returns the LowRankQV modules."""
    require_size("strategy.lora.rank", cfg.rank)
    updates = nn.ModuleList()
    for index, block in enumerate(residual_blocks(visual)):
        if getattr(block.attn, "in_proj_weight", None) is None:
            raise TypeError(
                f"resblocks[{index}].attn ({type(block.attn).__name__}) has no fused "
                "'in_proj_weight' to put LoRA on"
            )
        update = match_device_dtype(LowRankQV(width(visual), cfg.rank, cfg.alpha), block.attn)
        parametrize.register_parametrization(block.attn, "in_proj_weight", update)
        updates.append(update)
    return updates
