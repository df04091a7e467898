"""AdaptFormer (Chen et al., NeurIPS 2022), LIFT's default lightweight fine-tuning.

Each block's feed-forward branch becomes ``mlp(ln_2(x)) + s * up(relu(down(LN(x))))``
(ULFINE.md §2). The adapter reads the same residual-stream input ``x`` as the MLP branch and has
its own LayerNorm, as LIFT's ``AdaptFormer`` does (``x + adaptformer(identity)`` with
``identity`` taken before ``ln_2``). ``up`` starts at zero, so step 0 equals the frozen model.
The scale ``s`` is fixed (``strategy.adaptformer.scale``, the AdaptFormer paper's choice); LIFT
learns it instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ulfine.config import option
from ulfine.models.peft.base import PEFT, match_device_dtype, residual_blocks, width


@dataclass
class AdaptFormerConfig:
    """``strategy.adaptformer.*`` (also read from the flat ``strategy.adapter_dim/_scale``)."""

    dim: int = option(64, range=">= 1", alias="adapter_dim")  # bottleneck r
    scale: float = option(0.1, alias="adapter_scale")  # output scale s


class AdaptFormer(nn.Module):
    """Bottleneck adapter: ``s * up(relu(down(LN(x))))``, [..., d] -> [..., d]."""

    def __init__(self, dim: int, bottleneck: int, scale: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero up-projection: the adapter adds nothing until it is trained."""
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


@PEFT.register("adaptformer", config=AdaptFormerConfig)
def attach(visual: nn.Module, cfg: AdaptFormerConfig) -> nn.ModuleList:
    """Adds an AdaptFormer to every block; returns the adapters (all trainable parameters)."""
    adapters = nn.ModuleList()
    for index, block in enumerate(residual_blocks(visual)):
        if not isinstance(block.ls_2, nn.Identity):
            raise TypeError(
                f"resblocks[{index}].ls_2 is {type(block.ls_2).__name__}, not Identity: "
                "a parallel adapter would be scaled by LayerScale, so AdaptFormer is not exact here"
            )
        adapter = AdaptFormer(width(visual), cfg.dim, cfg.scale)
        adapter = match_device_dtype(adapter, block.mlp)
        block.mlp = ParallelAdapterMLP(block.ln_2, block.mlp, adapter)
        block.ln_2 = nn.Identity()
        adapters.append(adapter)
    return adapters

