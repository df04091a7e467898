"""FixMatch (Sohn et al., NeurIPS 2020, eq. 2-4) on foundation-model features.

    L   = L_s + lambda_u * L_u
    L_s = CE(head(z_l), y)
    L_u = (1/B_u) sum_i 1[max p_i >= threshold] * CE(head(z_i^s), yhat_i)
    p_i = softmax(head(z_i^w)),  yhat_i = argmax p_i     (weak view, hard labels, no gradient)
"""
from __future__ import annotations

import torch
from torch import Tensor

from ulfine.config import MethodConfig
from ulfine.methods.base import METHODS, MethodContext, PseudoLabels, SSLMethod, StepOutput
from ulfine.methods.losses import cross_entropy, masked_ce
from ulfine.methods.pseudo import pseudo_labels
from ulfine.models.heads import build_head


@METHODS.register("fixmatch")
class FixMatch(SSLMethod):
    """One head; the weak view labels the strong view where it is confident."""

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.head = build_head(ctx.head, ctx.text_prototypes, ctx.head_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(z)

    def supervised_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """L_s; variants that balance the labeled loss (logit adjustment) override this."""
        return cross_entropy(logits, targets)

    def step(
        self, z_labeled: Tensor, targets: Tensor, z_weak: Tensor | None, z_strong: Tensor | None
    ) -> StepOutput:
        if z_weak is None or z_strong is None:
            raise ValueError(f"{type(self).__name__} needs the weak and strong unlabeled views, got None")
        loss_sup = self.supervised_loss(self.head(z_labeled), targets)
        pseudo = self._pseudo(z_weak)
        loss_unsup = masked_ce(self.head(z_strong), pseudo.labels, pseudo.mask)
        return StepOutput(
            losses={"sup": loss_sup, "unsup": self.cfg.lambda_u * loss_unsup},
            pseudo=pseudo,
            logs={"mask_rate": pseudo.mask.mean()},
        )

    def strong_mask(self, z_weak: Tensor) -> Tensor:
        return self._pseudo(z_weak).mask > 0

    @torch.no_grad()  # the weak view only makes targets: no graph for it
    def _pseudo(self, z_weak: Tensor) -> PseudoLabels:
        return pseudo_labels(self.head(z_weak), self.cfg.threshold)
