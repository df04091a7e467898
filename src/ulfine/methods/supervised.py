"""Supervised baseline: one head trained on the labeled set only, L = CE(head(z_l), y)."""
from __future__ import annotations

from torch import Tensor

from ulfine.config import MethodConfig
from ulfine.methods.base import METHODS, MethodContext, SSLMethod, StepOutput
from ulfine.methods.losses import cross_entropy
from ulfine.models.heads import build_head


@METHODS.register("supervised")
class Supervised(SSLMethod):
    """The lower bound every SSL method must beat: the unlabeled stream is never read."""

    needs_unlabeled = False

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.head = build_head(ctx.head, ctx.text_prototypes, ctx.head_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(z)

    def supervised_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """L_s; the logit-adjusted variant overrides this."""
        return cross_entropy(logits, targets)

    def step(
        self, z_labeled: Tensor, targets: Tensor, z_weak: Tensor | None, z_strong: Tensor | None
    ) -> StepOutput:
        return StepOutput(losses={"sup": self.supervised_loss(self.head(z_labeled), targets)})
