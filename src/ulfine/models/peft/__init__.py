"""Parameter-efficient fine-tuning modules for open_clip's ViT, one file each (STYLE.md §3).

``PEFT.get(name)(visual, cfg)`` attaches a module in place and returns the container of its
trainable parameters. Importing this package registers adaptformer, lora, vpt and bitfit.
"""
from ulfine.models.peft import adaptformer, bitfit, lora, vpt
from ulfine.models.peft.base import PEFT, residual_blocks

__all__ = ["PEFT", "residual_blocks", "adaptformer", "bitfit", "lora", "vpt"]
