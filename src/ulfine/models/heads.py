"""Classifier heads on the L2-normalised image features z [B, D] -> logits [B, C].

Both heads can start from the class text prototypes C_t [C, D] (ULFINE.md §3), so the first
step predicts like zero-shot CLIP: cosine gives ``s * z @ C_t^T``; linear uses ``W = s * C_t``,
``b = 0``, which gives the same logits for normalised z (``s`` = ``head.scale``) instead of
logits in [-1, 1] that a softmax would flatten.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulfine.config import HeadConfig
from ulfine.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


@HEADS.register("cosine")
class CosineClassifier(nn.Module):
    """``logits = s * normalize(z) @ normalize(W)^T`` (LIFT's CosineClassifier; s = 1/T)."""

    def __init__(self, num_classes: int, dim: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        self.scale = scale
        nn.init.normal_(self.weight)  # any isotropic init: rows are normalised in forward

    @torch.no_grad()
    def init_from_prototypes(self, prototypes: Tensor) -> None:
        """W <- C_t [C, D]."""
        self.weight.copy_(prototypes)

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).t()


@HEADS.register("linear")
class LinearClassifier(nn.Linear):
    """``logits = W z + b``; the LP head of DLF (ULFINE.md §3)."""

    def __init__(self, num_classes: int, dim: int, scale: float) -> None:
        super().__init__(dim, num_classes)
        self.scale = scale  # only used by init_from_prototypes

    @torch.no_grad()
    def init_from_prototypes(self, prototypes: Tensor) -> None:
        """W <- s * C_t, b <- 0: equals the cosine head's zero-shot logits on normalised z."""
        self.weight.copy_(self.scale * prototypes)
        self.bias.zero_()


def build_head(cfg: HeadConfig, text_prototypes: Tensor | None, shape: tuple[int, int] | None = None) -> nn.Module:
    """A ``cfg.name`` head shaped by the prototypes [C, D], initialised from them if asked.

    Without prototypes (``strategy.name=scratch``: no text tower) ``shape`` = (C, D) gives the
    size and the head starts random (a linear head as FixMatch's WRN ``fc``: xavier-normal W,
    b = 0); ``head.init_from_text`` does not apply.
    """
    if text_prototypes is None:
        if shape is None:
            raise ValueError("build_head needs the text prototypes or the head shape (num_classes, dim)")
        head = HEADS.get(cfg.name)(shape[0], shape[1], cfg.scale)
        if isinstance(head, nn.Linear):
            nn.init.xavier_normal_(head.weight)
            nn.init.zeros_(head.bias)
        return head
    if text_prototypes.ndim != 2:
        raise ValueError(f"text_prototypes must be [C, D], got shape {tuple(text_prototypes.shape)}")
    num_classes, dim = text_prototypes.shape
    head = HEADS.get(cfg.name)(num_classes, dim, cfg.scale)
    head = head.to(text_prototypes.device)  # parameters stay float32 for training
    if cfg.init_from_text:
        head.init_from_prototypes(text_prototypes)
    return head
