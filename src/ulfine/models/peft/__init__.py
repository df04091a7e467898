"""Parameter-efficient fine-tuning modules for open_clip's ViT, one file each (STYLE.md §3).

``PEFT.get(name)(visual, options)`` attaches a module in place and returns the container of its
trainable parameters; ``options`` is the module's config dataclass (``PEFT.config(name)``,
``strategy.<name>.*``). Every module of this package is imported here, so a new module is one
new file.
"""
from ulfine.models.peft.base import PEFT, residual_blocks
from ulfine.registry import import_submodules

import_submodules(__name__)

__all__ = ["PEFT", "residual_blocks"]
