"""The trainable model: image encoder + SSL method, with the forward run once per step.

Wrapping both in one module lets DDP see every trainable parameter through a single forward.
Inputs are images [B, 3, H, W], or features z [B, D] from the frozen-encoder feature cache
(`ulfine.engine.feature_cache`), which go to the method as they are: no encoder forward.

Sparse strong view (``sparse_strong``): a strong image whose pseudo-label fails the threshold
has its loss multiplied by 0, so its encoder forward and backward add exactly nothing. The
method says which strong images can count (`SSLMethod.strong_mask`, from the weak view); only
those go through the autograd forward, and the others get z = 0 in a full-size z_strong, so
the method's step, its losses and the gradients are those of the dense step.

BatchNorm encoders (``encoder.joint_views``, the from-scratch backbones) run labeled, weak and
strong views in one forward with autograd, as FixMatch does: the batch statistics are those of
the whole step (a separate weak forward in train mode would normalise the weak view with its
own statistics and update the running statistics twice per step, and the sparse strong view
would make the labeled features depend on which strong images pass). z_weak is detached, so
the pseudo-labels carry no gradient; the weak images still get one through the shared batch
statistics, as in FixMatch.

``encoded`` counts the images of the last forward per path (``grad``: forward + backward,
``no_grad``: forward only), which the trainer turns into training FLOPs (`ulfine.engine.cost`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Sequence

import torch
from torch import Tensor, nn

from ulfine.config import RunConfig
from ulfine.methods.base import MethodContext, SSLMethod, StepOutput, build_method
from ulfine.models.encoder import ImageEncoder, build_image_encoder, build_scratch_encoder
from ulfine.models.foundation import Foundation, templates_for

logger = logging.getLogger(__name__)


class Learner(nn.Module):
    def __init__(self, encoder: ImageEncoder, method: SSLMethod, sparse_strong: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.method = method
        self.sparse_strong = sparse_strong
        self.encoded = {"grad": 0, "no_grad": 0}

    def _count(self, grad: int = 0, no_grad: int = 0) -> None:
        self.encoded = {"grad": grad, "no_grad": no_grad}

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
        A frozen encoder needs no autograd at all, so it runs all views in one no-grad forward;
        a BatchNorm encoder (``joint_views``) runs all views in one autograd forward (module doc)."""
        images = labeled.dim() > 2  # cached features (2-d) never reach the encoder
        frozen = self.encoder.is_frozen
        if weak is None or strong is None:
            self._count(**{("no_grad" if frozen else "grad"): len(labeled) * images})
            with self._grad(True):
                return self.embed(labeled), None, None
        total = len(labeled) + len(weak) + len(strong)
        if frozen:
            self._count(no_grad=total * images)
            with torch.no_grad():
                z = self.embed(torch.cat([labeled, weak, strong]))
            return tuple(z.split([len(labeled), len(weak), len(strong)]))
        if self.encoder.joint_views:
            self._count(grad=total)
            z_l, z_weak, z_s = self.embed(torch.cat([labeled, weak, strong])).split(
                [len(labeled), len(weak), len(strong)])
            return z_l, (z_weak if self.method.needs_weak_grad else z_weak.detach()), z_s
        with self._grad(self.method.needs_weak_grad):
            z_weak = self.embed(weak)
        weak_grad = len(weak) if self.method.needs_weak_grad else 0
        keep = self._strong_indices(z_weak)
        if keep is None:
            self._count(grad=len(labeled) + len(strong) + weak_grad, no_grad=len(weak) - weak_grad)
            with self._grad(True):
                z_both = self.embed(torch.cat([labeled, strong]))
            return z_both[: len(labeled)], z_weak, z_both[len(labeled):]
        self._count(grad=len(labeled) + len(keep) + weak_grad, no_grad=len(weak) - weak_grad)
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


def build_learner(foundation: Foundation | None, cfg: RunConfig, class_names: Sequence[str],
                  labeled_counts: Sequence[int], unlabeled_pass: int = 0) -> Learner:
    """Encoder + method (with its context) as a run builds them, on the CPU: the trainer trains
    this, and ``api.load_run`` loads a run's tuned state into it, so both always agree.
    ``unlabeled_pass``: iterations per pass over the unlabeled set (0 = unknown; ACR's schedule).

    ``strategy.name=scratch`` has no foundation model (``foundation`` None): a fresh backbone, no
    text prototypes, and linear heads initialised at random (FixMatch's WRN classifier)."""
    head = cfg.head
    if cfg.strategy.name == "scratch":
        prototypes = None
        encoder: ImageEncoder = build_scratch_encoder(cfg.strategy)
        if head.name != "linear":
            logger.warning("strategy.name=scratch: the heads are linear classifiers on the backbone's "
                           "features (as FixMatch's WRN), head.name=%s is not used", head.name)
        head = dataclasses.replace(head, name="linear", init_from_text=False)
    else:
        assert foundation is not None, "every strategy but scratch tunes a foundation model"
        prototypes = foundation.text_prototypes(list(class_names), templates_for(cfg.model)).cpu()
        encoder = build_image_encoder(foundation.visual, cfg.strategy, num_classes=len(class_names))
    context = MethodContext(
        num_classes=len(class_names),
        text_prototypes=prototypes,
        labeled_counts=torch.as_tensor(list(labeled_counts), dtype=torch.float32),
        head=head,
        total_iterations=cfg.optim.iterations,
        feature_dim=getattr(encoder, "feature_dim", None),
        unlabeled_pass=unlabeled_pass,
    )
    return Learner(encoder, build_method(cfg.method, context), cfg.train.sparse_strong)
