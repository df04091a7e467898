"""Randomly initialised backbones for the from-scratch strategy (``strategy.name=scratch``).

A backbone maps images [B, 3, H, W] at the dataset's native resolution to pooled features
[B, feature_dim]; the classifier is the method's own linear head. Registered by name
(``strategy.scratch.backbone``). Every module of this package is imported here, so a new
backbone is one new file.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ulfine.registry import Registry, import_submodules

BACKBONES: Registry[Callable[[], nn.Module]] = Registry("backbone")


def build_backbone(name: str) -> nn.Module:
    """A freshly initialised backbone ``name``; it has a ``feature_dim`` attribute."""
    return BACKBONES.get(name)()


import_submodules(__name__)  # after BACKBONES exists: each module registers into it
