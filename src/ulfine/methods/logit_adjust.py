"""FixMatch + logit adjustment (Sohn et al. 2020; Menon et al., ICLR 2021, eq. 10).

    L_s = CE(head(z_l) + tau * log(pi_l), y)       pi_l: labeled class prior, tau = la_tau
    L_u = FixMatch's, with pseudo-labels from the raw logits head(z^w)

Training with the prior added to the logits makes the raw logits approximate the *balanced*
posterior, so the raw logits are used both for the test prediction and for the pseudo-labels:
subtracting the prior again would double-correct, adding it back would re-bias towards the
head classes, against which LA was introduced.
"""
from __future__ import annotations

from torch import Tensor

from ulfine.config import MethodConfig
from ulfine.methods.base import METHODS, MethodContext
from ulfine.methods.fixmatch import FixMatch
from ulfine.methods.losses import log_prior, logit_adjusted_ce


@METHODS.register("fixmatch_la")
class FixMatchLA(FixMatch):
    """FixMatch whose labeled loss is the logit-adjusted CE with the labeled prior."""

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.register_buffer("log_prior_labeled", log_prior(ctx.labeled_counts))

    def supervised_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return logit_adjusted_ce(logits, targets, self.log_prior_labeled, self.cfg.la_tau)
