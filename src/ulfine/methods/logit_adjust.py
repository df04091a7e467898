"""Logit adjustment (Menon et al., ICLR 2021, eq. 10) of a method's labeled loss.

    L_s = CE(head(z_l) + tau * log(pi_l), y)       pi_l: labeled class prior, tau = la_tau

- ``fixmatch_la``: FixMatch's L_u on top, with pseudo-labels from the raw logits head(z^w);
- ``supervised_la``: the labeled data alone (the long-tailed lower bound of the SSL methods).

Training with the prior added to the logits makes the raw logits approximate the *balanced*
posterior, so the raw logits are used both for the test prediction and for the pseudo-labels:
subtracting the prior again would double-correct, adding it back would re-bias towards the
head classes, against which LA was introduced.
"""
from __future__ import annotations

from torch import Tensor

from ulfine.config import MethodConfig
from ulfine.methods.base import METHODS, MethodContext, SSLMethod
from ulfine.methods.fixmatch import FixMatch
from ulfine.methods.losses import log_prior, logit_adjusted_ce
from ulfine.methods.supervised import Supervised


class LogitAdjusted(SSLMethod):
    """Put first in the bases of a method with a ``supervised_loss(logits, targets)``: that loss
    becomes the logit-adjusted CE with the labeled prior (a buffer, so checkpoints carry it)."""

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.register_buffer("log_prior_labeled", log_prior(ctx.labeled_counts))

    def supervised_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return logit_adjusted_ce(logits, targets, self.log_prior_labeled, self.cfg.la_tau)


@METHODS.register("fixmatch_la")
class FixMatchLA(LogitAdjusted, FixMatch):
    """FixMatch whose labeled loss is the logit-adjusted CE with the labeled prior."""


@METHODS.register("supervised_la")
class SupervisedLA(LogitAdjusted, Supervised):
    """The labeled data alone, logit-adjusted; the unlabeled stream is never read."""
