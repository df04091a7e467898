"""The trainable model: image encoder + SSL method, with the forward run once per step.

Wrapping both in one module lets DDP see every trainable parameter through a single forward.
Inputs are images [B, 3, H, W], or features z [B, D] from the frozen-encoder feature cache
(`ulfine.engine.feature_cache`), which go to the method as they are: no encoder forward.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ulfine.methods.base import SSLMethod, StepOutput
from ulfine.models.encoder import ImageEncoder


class Learner(nn.Module):
    def __init__(self, encoder: ImageEncoder, method: SSLMethod) -> None:
        super().__init__()
        self.encoder = encoder
        self.method = method

    def _grad(self, needed: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if needed and not self.encoder.is_frozen else torch.no_grad()

    def embed(self, inputs: Tensor) -> Tensor:
        """z [B, D]: images through the encoder, cached features (2-d) unchanged."""
        return inputs.float() if inputs.dim() == 2 else self.encoder(inputs)

    def encode_views(
        self, labeled: Tensor, weak: Tensor | None, strong: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """z for each view. The weak view only makes pseudo-labels, so it runs without autograd
        (unless the method asks otherwise); labeled + strong share one forward with autograd.
        A frozen encoder needs no autograd at all, so it runs all views in one no-grad forward."""
        if weak is None or strong is None:
            with self._grad(True):
                return self.embed(labeled), None, None
        if self.encoder.is_frozen:
            with torch.no_grad():
                z = self.embed(torch.cat([labeled, weak, strong]))
            return tuple(z.split([len(labeled), len(weak), len(strong)]))
        with self._grad(self.method.needs_weak_grad):
            z_weak = self.embed(weak)
        with self._grad(True):
            z_both = self.embed(torch.cat([labeled, strong]))
        return z_both[: len(labeled)], z_weak, z_both[len(labeled):]

    def forward(
        self, labeled: Tensor, targets: Tensor, weak: Tensor | None = None, strong: Tensor | None = None
    ) -> StepOutput:
        z_labeled, z_weak, z_strong = self.encode_views(labeled, weak, strong)
        return self.method.step(z_labeled, targets, z_weak, z_strong)

    def predict(self, images: Tensor) -> Tensor:
        """Test-time logits [B, C]."""
        return self.method(self.embed(images))
