"""ACR: adaptive consistency regularizer (Wei & Gan, CVPR 2023, "Towards Realistic Long-Tailed
Semi-Supervised Learning: Consistency Is All You Need"), following the paper and its code
(Gank0078/ACR, train.py) on our feature interface.

Two heads on the same z: a standard head f and a balanced head g. pi_l is the labeled prior.

    L_s     = CE(f(z_l), y) + lambda_bal * CE(g(z_l) + tau_bal * log(pi_l), y)       (ACR: tau2 = 2)
    L_u     = (1/B) sum_i m_i * CE(f(z_i^s), yhat_i)
              yhat = argmax softmax(f(z^w) - tau * log(pi_l)),  m = 1[conf(yhat) >= t] OR 1[max softmax(f(z^w)) >= t]
    L_u_bal = (1/B) sum_i m'_i * CE(g(z_i^s), yhat'_i)                                (weighted by lambda_bal)
              yhat' = argmax softmax(f(z^w) - tau_bal_targets * log(pi_l)),          (ACR: tau12 = 2)
              m' = 1[conf(yhat') >= t] OR 1[max softmax(g(z^w)) >= t]

Adaptive tau. The unlabeled class distribution u_py is an EMA (pu_momentum) of the normalised
histogram of the balanced head's confident weak-view predictions. Each step the symmetric KL
divergences KL_a = (KL(u_py || a) + KL(a || u_py)) / 2 to the anchors a = (consistent = pi_l,
uniform, reversed = pi_l flipped) are accumulated; every ``est_every`` iterations their mean sets

    s   = exp(KL_con) / sum_a exp(KL_a)          (ACR's code)
    tau = tau_con + (tau_uni - tau_con) * 2s           for s <= 1/2
          tau_uni + (tau_rev - tau_uni) * (2s - 1)     for s > 1/2

with (tau_con, tau_uni, tau_rev) = ``tau_range``. ACR's code is tau = tau_min + (tau_max -
tau_min) * s; with its values (0, 1, 2) the piecewise form is the same line, and it lets the
uniform anchor's tau be set too. Far from the consistent anchor (reversed) s -> 1, tau -> tau_rev;
at it s -> 0; for a uniform estimate KL_con = KL_rev, so s < 1/2 and tau is near tau_uni. As in
ACR's code, tau starts at tau_rev (its tau1) until the first estimate.

Schedule, relative to the run. ACR's code estimates once per "epoch" (``--eval-step`` = 500
iterations, 1/500 of its 250k-iteration run) after ``--est-epoch`` = 5 epochs, i.e. it starts
accumulating after 6 of 500 epochs (1.2 % of the run) and re-estimates hundreds of times. Here
``est_every = 0`` means one pass over the unlabeled set (``MethodContext.unlabeled_pass``), but
at most ``total_iterations // MIN_ESTIMATES`` so that a short run still estimates tau at least
``MIN_ESTIMATES`` times; ``est_start = -1`` means ACR's 1.2 % of the run. Every estimate is kept
(iteration, tau) in ``tau_history`` (metrics.json ``method_state``).

The batch statistics (the histogram feeding u_py) are summed over the micro-batches of one
optimiser step and folded in by ``after_optimizer_step``, once per step.

The test prediction is the balanced head g(z) (ACR's code reports that head's accuracy).

Left out from ACR's code, because our interface does not provide it: the second strong view
(ACR averages L_u over two RandAugment views) and the exclusion from the estimate of labeled
images that are also in the unlabeled set. ACR's per-batch counts use an indexed ``+=`` that
counts a repeated class once; we count with ``bincount``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ulfine.config import MethodConfig, option
from ulfine.methods.base import METHODS, Diagnostic, MethodContext, PseudoLabels, SSLMethod, StepOutput
from ulfine.methods.losses import LOG_EPS, cross_entropy, log_prior, logit_adjusted_ce, masked_ce
from ulfine.methods.pseudo import EMADistribution, class_histogram, global_sum, pseudo_labels
from ulfine.models.heads import build_head


@dataclass
class ACRConfig:
    """ACR's own options (``method.acr.*``)."""

    # tau for an unlabeled estimate at the (consistent, uniform, reversed) anchor; the pseudo-labels
    # of the standard head come from logits - tau * log(pi_l) (ACR: tau_min = 0 .. tau_max = tau1 = 2)
    tau_range: tuple[float, float, float] = (0.0, 1.0, 2.0)
    # re-estimate tau every N iterations; 0 = one pass over the unlabeled set, at most
    # optim.iterations // 10 (ACR: each 500-iteration epoch, 500 times a run)
    est_every: int = option(0, range=">= 0")
    # iterations before the unlabeled distribution is estimated; -1 = ACR's warm-up, 1.2 % of
    # optim.iterations (ACR: from epoch 6 of 500)
    est_start: int = option(-1, range=">= -1")
    pu_momentum: float = option(0.99, range="in [0, 1)")  # EMA of the unlabeled class distribution (ACR's --ema-u in its README)
    lambda_bal: float = option(1.0, range=">= 0")  # weight of the balanced (logit-adjusted) head's losses
    tau_bal: float = 2.0  # LA strength of the balanced head's labeled loss (ACR: tau2)
    tau_bal_targets: float = 2.0  # prior removed from the standard logits to label the balanced head (ACR: tau12)


def anchor_priors(labeled_counts: Tensor) -> Tensor:
    """The (consistent, uniform, reversed) anchor distributions [3, C] from labeled counts [C]."""
    consistent = labeled_counts.float() / labeled_counts.float().sum()
    uniform = torch.full_like(consistent, 1.0 / consistent.numel())
    return torch.stack([consistent, uniform, consistent.flip(0)])


def symmetric_kl(estimate: Tensor, anchors: Tensor) -> Tensor:
    """(KL(p || a) + KL(a || p)) / 2 of a distribution p [C] to each anchor a [A, C] -> [A]."""
    log_p = estimate.clamp_min(LOG_EPS).log()
    log_a = anchors.clamp_min(LOG_EPS).log()
    return 0.5 * ((estimate - anchors) * (log_p - log_a)).sum(dim=-1)


def adaptive_tau(kl: Tensor, tau_range: tuple[float, float, float]) -> Tensor:
    """tau from the mean KL [3] to the (consistent, uniform, reversed) anchors; see module doc."""
    tau_con, tau_uni, tau_rev = tau_range
    s = torch.softmax(kl.float(), dim=0)[0]
    return torch.where(
        s <= 0.5, tau_con + (tau_uni - tau_con) * 2 * s, tau_uni + (tau_rev - tau_uni) * (2 * s - 1)
    )


MIN_ESTIMATES = 10  # an automatic est_every estimates tau at least this often per run [ours]
ACR_WARMUP = 6 / 500  # ACR accumulates from epoch est_epoch + 1 = 6 of its 500 epochs


def estimate_schedule(acr: ACRConfig, ctx: MethodContext) -> tuple[int, int]:
    """(est_every, est_start) in iterations; 0 / -1 in the config resolve against the run."""
    total = max(ctx.total_iterations, 1)
    every = acr.est_every or max(1, min(ctx.unlabeled_pass or total, total // MIN_ESTIMATES))
    start = acr.est_start if acr.est_start >= 0 else int(ACR_WARMUP * total)
    return every, start


@METHODS.register("acr", config=ACRConfig)
class ACR(SSLMethod):
    """Standard + balanced head, consistency on the strong view with an adaptive logit adjustment."""

    DIAGNOSTICS = {
        "prior_unlabeled": Diagnostic("P_u (unlabeled class prior)"),
        "tau": Diagnostic("adaptive tau", kind="scalar"),
        "tau_history": Diagnostic("adaptive tau per estimate", kind="history"),
    }

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.acr: ACRConfig = cfg.options
        self.head = build_head(ctx.head, ctx.text_prototypes, ctx.head_shape)
        self.head_bal = build_head(ctx.head, ctx.text_prototypes, ctx.head_shape)
        self.prior_unlabeled = EMADistribution(ctx.num_classes, self.acr.pu_momentum)
        self.register_buffer("log_prior_labeled", log_prior(ctx.labeled_counts))
        self.register_buffer("anchors", anchor_priors(ctx.labeled_counts))
        self.register_buffer("tau", torch.tensor(float(self.acr.tau_range[2])))
        self.register_buffer("kl_sum", torch.zeros(3))
        self.register_buffer("kl_steps", torch.zeros(()))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.est_every, self.est_start = estimate_schedule(self.acr, ctx)
        slots = ctx.total_iterations // self.est_every + 1
        # (iteration, tau) rows, the first `estimates` of them set
        self.register_buffer("tau_history", torch.zeros(slots, 2))
        self.register_buffer("estimates", torch.zeros((), dtype=torch.long))
        # this optimiser step's confident-class counts, summed over its micro-batches
        self.register_buffer("pending_counts", torch.zeros(ctx.num_classes), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.head_bal(z)

    def step(
        self, z_labeled: Tensor, targets: Tensor, z_weak: Tensor | None, z_strong: Tensor | None
    ) -> StepOutput:
        if z_weak is None or z_strong is None:
            raise ValueError("acr needs the weak and strong unlabeled views, got None")
        loss_sup = cross_entropy(self.head(z_labeled), targets)
        loss_sup_bal = logit_adjusted_ce(self.head_bal(z_labeled), targets, self.log_prior_labeled, self.acr.tau_bal)
        pseudo, pseudo_bal, confident_bal = self._pseudo_labels(z_weak)
        loss_unsup = masked_ce(self.head(z_strong), pseudo.labels, pseudo.mask)
        loss_unsup_bal = masked_ce(self.head_bal(z_strong), pseudo_bal.labels, pseudo_bal.mask)
        self.pending_counts.add_(class_histogram(confident_bal.labels, self.num_classes, weights=confident_bal.mask))
        return StepOutput(
            losses={
                "sup": loss_sup,
                "unsup": self.cfg.lambda_u * loss_unsup,
                "sup_bal": self.acr.lambda_bal * loss_sup_bal,
                "unsup_bal": self.acr.lambda_bal * self.cfg.lambda_u * loss_unsup_bal,
            },
            pseudo=pseudo,
            logs={"mask_rate": pseudo.mask.mean(), "mask_rate_bal": pseudo_bal.mask.mean(), "tau": self.tau},
        )

    def strong_mask(self, z_weak: Tensor) -> Tensor:
        """Both strong losses are masked: a sample counts when either target passes."""
        pseudo, pseudo_bal, _ = self._pseudo_labels(z_weak)
        return (pseudo.mask > 0) | (pseudo_bal.mask > 0)

    @torch.no_grad()
    def _pseudo_labels(self, z_weak: Tensor) -> tuple[PseudoLabels, PseudoLabels, PseudoLabels]:
        """Targets of the standard head (adaptive tau), of the balanced head (fixed tau), and the
        balanced head's own confident predictions (which feed the u_py estimate)."""
        logits = self.head(z_weak).float()
        threshold = self.cfg.threshold
        adjusted = pseudo_labels(logits - self.tau * self.log_prior_labeled, threshold)
        raw = pseudo_labels(logits, threshold)
        adjusted_bal = pseudo_labels(logits - self.acr.tau_bal_targets * self.log_prior_labeled, threshold)
        own_bal = pseudo_labels(self.head_bal(z_weak), threshold)
        adjusted.mask = torch.maximum(adjusted.mask, raw.mask)
        adjusted_bal.mask = torch.maximum(adjusted_bal.mask, own_bal.mask)
        return adjusted, adjusted_bal, own_bal

    @torch.no_grad()
    def _accumulate_estimate(self) -> None:
        """u_py <- EMA of this step's confident-class histogram; add its KL to the anchors."""
        counts = global_sum(self.pending_counts.clone())
        self.pending_counts.zero_()
        total = counts.sum()
        active = (total > 0) & (self.iteration >= self.est_start)
        self.prior_unlabeled.update((counts / total.clamp_min(1.0)).unsqueeze(0), active=active)
        kl = symmetric_kl(self.prior_unlabeled.value, self.anchors)
        self.kl_sum.add_(kl * active)
        self.kl_steps.add_(active.float())

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Fold in this step's estimate; every ``est_every`` iterations tau from the window's mean
        KL (recorded in ``tau_history``), then a new window."""
        self._accumulate_estimate()
        self.iteration.add_(1)
        window_end = self.iteration % self.est_every == 0
        estimated = adaptive_tau(self.kl_sum / self.kl_steps.clamp_min(1.0), self.acr.tau_range)
        update = window_end & (self.kl_steps > 0)
        self.tau.copy_(torch.where(update, estimated, self.tau))
        slot = self.estimates.clamp_max(len(self.tau_history) - 1)
        row = torch.stack([self.iteration.float(), self.tau])
        self.tau_history[slot] = torch.where(update, row, self.tau_history[slot])
        self.estimates.add_(update.long())
        self.kl_sum.copy_(torch.where(window_end, torch.zeros_like(self.kl_sum), self.kl_sum))
        self.kl_steps.copy_(torch.where(window_end, torch.zeros_like(self.kl_steps), self.kl_steps))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        """A saved tau_history keeps its length (the estimate count depends on the data size,
        which e.g. ``ulfine predict`` does not know)."""
        saved = state_dict.get(prefix + "tau_history")
        if saved is not None and saved.shape != self.tau_history.shape:
            self.tau_history = torch.empty_like(saved, device=self.tau_history.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def diagnostics(self) -> dict[str, Tensor]:
        """u_py, the current tau and every estimate so far as [iteration, tau] rows."""
        history = self.tau_history[: int(self.estimates.clamp_max(len(self.tau_history)))]
        return {"prior_unlabeled": self.prior_unlabeled.value, "tau": self.tau, "tau_history": history}
