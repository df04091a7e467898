"""The trainable model: image encoder + SSL method, with the forward run once per step.

Wrapping both in one module lets DDP see every trainable parameter through a single forward.
Inputs are images [B, 3, H, W], or features z [B, D] from the frozen-encoder feature cache
(`ulfine.engine.feature_cache`), which go to the method as they are: no encoder forward.

Sparse strong view (``sparse_strong``): a strong image whose pseudo-label fails the threshold
has its loss multiplied by 0, so its encoder forward and backward add exactly nothing. The
method says which strong images can count (`SSLMethod.strong_mask`, from the weak view); only
those go through the autograd forward, and the others get z = 0 in a full-size z_strong, so
the method's step, its losses and the gradients are those of the dense step.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import Tensor, nn

from ulfine.config import RunConfig
from ulfine.methods.base import MethodContext, SSLMethod, StepOutput, build_method
from ulfine.models.encoder import ImageEncoder, build_image_encoder
from ulfine.models.foundation import Foundation, templates_for


class Learner(nn.Module):
    def __init__(self, encoder: ImageEncoder, method: SSLMethod, sparse_strong: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.method = method
        self.sparse_strong = sparse_strong

    def _grad(self, needed: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if needed and not self.encoder.is_frozen else torch.no_grad()

    def embed(self, inputs: Tensor) -> Tensor:
        """z [B, D]: images through the encoder, cached features (2-d) unchanged."""
        return inputs.float() if inputs.dim() == 2 else self.encoder(inputs)

    def encode_views(
        self, labeled: Tensor, weak: Tensor | None, strong: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """z for each view. The weak view only makes pseudo-labels, so it runs without autograd
        (unless the method asks otherwise); labeled + strong share one forward with autograd,
        restricted to the strong images that can count when ``sparse_strong`` is on.
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
        keep = self._strong_indices(z_weak)
        if keep is None:
            with self._grad(True):
                z_both = self.embed(torch.cat([labeled, strong]))
            return z_both[: len(labeled)], z_weak, z_both[len(labeled):]
        with self._grad(True):  # labeled images always go in: every encoder weight gets a gradient (DDP)
            z_both = self.embed(torch.cat([labeled, strong[keep]]))
        z_kept = z_both[len(labeled):]
        z_strong = z_kept.new_zeros(len(strong), z_kept.shape[1]).index_copy(0, keep, z_kept)
        return z_both[: len(labeled)], z_weak, z_strong

    def _strong_indices(self, z_weak: Tensor) -> Tensor | None:
        """Indices of the strong images the method can give a non-zero loss; None = all."""
        if not self.sparse_strong:
            return None
        with torch.no_grad():
            mask = self.method.strong_mask(z_weak.detach())
        return None if mask is None else mask.nonzero().flatten()

    def forward(
        self, labeled: Tensor, targets: Tensor, weak: Tensor | None = None, strong: Tensor | None = None
    ) -> StepOutput:
        z_labeled, z_weak, z_strong = self.encode_views(labeled, weak, strong)
        return self.method.step(z_labeled, targets, z_weak, z_strong)

    def predict(self, images: Tensor) -> Tensor:
        """Test-time logits [B, C]."""
        return self.method(self.embed(images))


def build_learner(foundation: Foundation, cfg: RunConfig, class_names: Sequence[str],
                  labeled_counts: Sequence[int]) -> Learner:
    """Encoder + method (with its context) as a run builds them, on the CPU: the trainer trains
    this, and ``api.load_run`` loads a run's tuned state into it, so both always agree."""
    prototypes = foundation.text_prototypes(list(class_names), templates_for(cfg.model)).cpu()
    context = MethodContext(
        num_classes=len(class_names),
        text_prototypes=prototypes,
        labeled_counts=torch.as_tensor(list(labeled_counts), dtype=torch.float32),
        head=cfg.head,
        total_iterations=cfg.optim.iterations,
    )
    encoder = build_image_encoder(foundation.visual, cfg.strategy)
    return Learner(encoder, build_method(cfg.method, context), cfg.train.sparse_strong)
