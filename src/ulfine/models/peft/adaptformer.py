"""AdaptFormer (Chen et al., NeurIPS 2022), LIFT's default lightweight fine-tuning.

Each block's feed-forward branch becomes ``mlp(ln_2(x)) + s * up(relu(down(LN(x))))``
(ULFINE.md §2). The adapter reads the same residual-stream input ``x`` as the MLP branch and has
its own LayerNorm, as LIFT's ``AdaptFormer`` does (``x + adaptformer(identity)`` with
``identity`` taken before ``ln_2``). ``up`` starts at zero, so step 0 equals the frozen model.

As LIFT's module: ``s`` is a parameter initialised to ``strategy.adaptformer.scale`` = 1
(``strategy.adaptformer.learnable_scale=false`` fixes it, the AdaptFormer paper's s = 0.1 with
``scale=0.1``); ``down`` gets a Kaiming-normal weight (a = sqrt(5)) and a zero bias; the
bottleneck r follows LIFT's rule ``2^max(0, floor(log2(C / 2L)))`` when ``strategy.adaptformer.dim``
is 0 (`lift_bottleneck`, resolved by `ulfine.models.encoder.build_image_encoder`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ulfine.config import option
from ulfine.models.peft.base import PEFT, match_device_dtype, require_size, residual_blocks, width


@dataclass
class AdaptFormerConfig:
    """``strategy.adaptformer.*`` (also read from the flat ``strategy.adapter_dim/_scale``)."""

    # bottleneck r; 0 = LIFT's rule 2^max(0, floor(log2(C / 2L))) for C classes, L blocks
    dim: int = option(0, range=">= 0", alias="adapter_dim")
    scale: float = option(1.0, alias="adapter_scale")  # output scale s (its initial value when learnable; LIFT: 1)
    learnable_scale: bool = True  # s is trained (LIFT) or fixed (AdaptFormer paper: s = 0.1 with scale=0.1)


class AdaptFormer(nn.Module):
    """Bottleneck adapter: ``s * up(relu(down(LN(x))))``, [..., d] -> [..., d]."""

    def __init__(self, dim: int, bottleneck: int, scale: float, learnable_scale: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.up = nn.Linear(bottleneck, dim)
        self.scale: Tensor | float = nn.Parameter(torch.full((1,), scale)) if learnable_scale else scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LIFT's init; the zero up-projection makes the adapter add nothing until it is trained."""
        nn.init.kaiming_normal_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.up(self.act(self.down(self.norm(x))))


class ParallelAdapterMLP(nn.Module):
    """Stands in for a block's ``mlp``: ``mlp(norm(x)) + adapter(x)``.

    It owns the block's ``ln_2`` (as ``norm``) because the adapter needs the input before it;
    the block's own ``ln_2`` is then an Identity.
    """

    def __init__(self, norm: nn.Module, mlp: nn.Module, adapter: AdaptFormer) -> None:
        super().__init__()
        self.norm = norm
        self.mlp = mlp
        self.adapter = adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm(x)) + self.adapter(x)


def lift_bottleneck(num_classes: int, num_blocks: int) -> int:
    """LIFT's bottleneck (and LoRA rank) rule: 2^max(0, floor(log2(C / 2L))), e.g. 1 for 10 classes."""
    ratio = num_classes / (2 * num_blocks)
    return 1 if ratio < 2 else 2 ** int(math.floor(math.log2(ratio)))


@PEFT.register("adaptformer", config=AdaptFormerConfig)
def attach(visual: nn.Module, cfg: AdaptFormerConfig) -> nn.ModuleList:
    """Adds an AdaptFormer to every block; returns the adapters (all trainable parameters)."""
    require_size("strategy.adaptformer.dim", cfg.dim)
    adapters = nn.ModuleList()
    for index, block in enumerate(residual_blocks(visual)):
        if not isinstance(block.ls_2, nn.Identity):
            raise TypeError(
                f"resblocks[{index}].ls_2 is {type(block.ls_2).__name__}, not Identity: "
                "a parallel adapter would be scaled by LayerScale, so AdaptFormer is not exact here"
            )
        adapter = AdaptFormer(width(visual), cfg.dim, cfg.scale, cfg.learnable_scale)
        adapter = match_device_dtype(adapter, block.mlp)
        block.mlp = ParallelAdapterMLP(block.ln_2, block.mlp, adapter)
        block.ln_2 = nn.Identity()
        adapters.append(adapter)
    return adapters

