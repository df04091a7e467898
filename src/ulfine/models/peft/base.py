"""The PEFT registry and the open_clip names every module attaches through (STYLE.md §3).

An attach function ``attach(visual, options)``, registered with ``@PEFT.register(name,
config=OptionsDataclass)``, changes an open_clip ``VisionTransformer`` in place through its stable
submodule names (``transformer.resblocks[i].attn / .ln_2 / .mlp / .ls_2``) and returns a
container whose ``parameters()`` are exactly the new trainable ones. Every new parameter is also
owned by the ViT itself, so ``visual.to(...)``, ``deepcopy(visual)`` and ``visual.state_dict()``
carry it. Load pretrained weights *before* attaching: some state-dict keys move.
"""
from __future__ import annotations

from torch import nn

from ulfine.registry import PEFT

__all__ = ["PEFT", "match_device_dtype", "residual_blocks", "width"]

_BLOCK_PARTS = ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2")


def residual_blocks(visual: nn.Module) -> nn.ModuleList:
    """``visual.transformer.resblocks``, after checking each block has the parts we attach to.

    Fails loudly, naming the class and the missing part, if open_clip renames them.
    """
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(
            f"{type(visual).__name__} has no 'transformer.resblocks' ModuleList; PEFT modules "
            "attach to open_clip's VisionTransformer (open_clip_torch>=3.0,<3.4)"
        )
    for index, block in enumerate(blocks):
        missing = [part for part in _BLOCK_PARTS if not hasattr(block, part)]
        if missing:
            raise TypeError(
                f"resblocks[{index}] ({type(block).__name__}) lacks {missing}; "
                "PEFT attachment expects open_clip's ResidualAttentionBlock"
            )
    return blocks


def width(visual: nn.Module) -> int:
    """Token width d of the ViT's residual stream."""
    return visual.transformer.width


def match_device_dtype(module: nn.Module, reference: nn.Module) -> nn.Module:
    """Put a new module on the device and dtype of the ViT part it attaches to."""
    param = next(reference.parameters())
    return module.to(device=param.device, dtype=param.dtype)


def require_size(key: str, value: int) -> int:
    """A PEFT size option left at 0 (LIFT's rule) must have been resolved from the class count
    (`ulfine.models.encoder.resolve_peft_dims`) before the module is attached."""
    if value < 1:
        raise ValueError(
            f"{key} = {value}: LIFT's rule needs the class count, so build the encoder with "
            f"build_image_encoder(..., num_classes=C) or set {key} >= 1"
        )
    return value
