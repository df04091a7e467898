"""ULFine = PAF + DLF (Zhang, Li, Geng, Chen, arXiv 2505.05062, 2025), ULFINE.md section 3.

Symbols follow the spec; z = normalize(f(x)) are image features [B, D] from the trainer.

Textual prototypes C_t = [c_1^t ... c_C^t] (``proto_text``), initialised from the frozen text
encoder (``MethodContext.text_prototypes``) and trainable (``train_text_prototypes``): they get
gradients from the text-logit losses and L_orth [ours].

Visual prototypes (``proto_visual``), an EMA of the labeled per-class batch means:

    c_k^v <- m * c_k^v + (1 - m) * mean_{i in batch, y_i = k} z_i     (absent classes keep c_k^v)
    c_k^v = c_k^t at step 0, m = proto_momentum = 0.9 [ours]

PAF, confidence-aware prototype fitting, after each optimiser step, without gradient:

    c_k^t <- normalize((1 - alpha_k) * normalize(c_k^t) + alpha_k * c_k^v)
    alpha_k = mu * P_u^k / max_i P_u^i,       mu = 0.01 [ours]

P_u (``prior_unlabeled``): EMA (pu_momentum = 0.999) of the mean softmax of the fused weak-view
prediction, uniform at step 0 [ours]. c_k^t is normalised before mixing because gradient steps
change its norm while only its direction enters s_t.

Orthogonality [form ours]:  L_orth = mean_{j != k} (c_j^t . c_k^t)^2 over normalised prototypes.

DLF, dual logit fusion, two classifiers on the same z:

    s_t = text_scale * z . normalize(C_t)^T          (text_scale = 1 / 0.07)
    s_l = W z + b,  W = C_t, b = 0 at step 0 [ours] (lp_init)
    s   = beta * s_t + s_l                              (fusion = dual, beta = fuse_text_weight = 1)
    lp_loss = ce_fuse_prior:  s = beta * s_t + s_l - tau * log(pi_hat)

pi_hat (``prior_seen``): EMA (pu_momentum) of the class frequencies of the labeled targets plus
the pseudo-labels that pass the threshold, initialised to pi_l. s (weak view) makes the
pseudo-labels and s is the test prediction (``forward``).

Losses [ours, FixMatch lineage], yhat = argmax softmax(s(x_u^w)) without gradient:

    L   = L_s + lambda_u * L_u + lambda_o * L_orth
    L_s = CE(s_l(x_l) + tau * log(pi_l), y) + CE(s_t(x_l), y)        (lp_loss = la; else plain CE)
          text_loss = la [ours, not the spec's default]: CE(s_t(x_l) + tau * log(pi_l), y), so the
          text head is not pulled toward the labeled long tail either
    L_u = mean_i 1[max softmax(s(x_u^w))_i >= threshold] * (CE(s_l(x_u^s), yhat_i) + CE(s_t(x_u^s), yhat_i))

Ablation switches remove what they name. ``paf=False``: C_t is never fitted (alpha stays 0).
``orth=False``: no L_orth term, so no gradient from it. ``fusion=text`` / ``fusion=lp``: only
that head predicts, pseudo-labels *and is trained*; the other head gets no loss, because its
gradients would still shape the fine-tuned encoder and the row would not remove DLF. With
``fusion=lp`` the text head is gone from the losses and the prediction, so PAF and L_orth
(which only move C_t) have no effect on the outcome.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulfine.config import MethodConfig, ULFineConfig
from ulfine.methods.base import METHODS, MethodContext, PseudoLabels, SSLMethod, StepOutput
from ulfine.methods.losses import log_prior, logit_adjusted_ce, masked_ce
from ulfine.methods.pseudo import EMADistribution, class_histogram, global_sum, pseudo_labels

logger = logging.getLogger(__name__)

# fusion -> weight of each head's logits in s; the heads named here are the only ones trained.
_FUSION_WEIGHTS: dict[str, Callable[[ULFineConfig], dict[str, float]]] = {
    "dual": lambda ucfg: {"text": ucfg.fuse_text_weight, "lp": 1.0},
    "text": lambda ucfg: {"text": 1.0},
    "lp": lambda ucfg: {"lp": 1.0},
}

# lp_loss -> multiples of la_tau for (tau * log(pi_l) added in L_s, tau * log(pi_hat) subtracted in s).
_LP_PRIOR_FACTORS: dict[str, tuple[float, float]] = {
    "la": (1.0, 0.0),
    "ce_fuse_prior": (0.0, 1.0),
}

# lp_init -> W at step 0 from the normalised text prototypes [C, D].
_LP_INITS: dict[str, Callable[[Tensor], Tensor]] = {
    "text": torch.clone,
    "zeros": torch.zeros_like,
}


def orthogonality_loss(proto_text: Tensor) -> Tensor:
    """L_orth = mean_{j != k} (c_j^t . c_k^t)^2 over the normalised prototypes [C, D] -> scalar."""
    unit = F.normalize(proto_text, dim=-1)
    gram = unit @ unit.T
    off_diagonal = ~torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    return gram[off_diagonal].pow(2).mean()


def paf_alpha(prior_unlabeled: Tensor, mu: float) -> Tensor:
    """alpha_k = mu * P_u^k / max_i P_u^i, [C] -> [C]: classes predicted often fit fastest."""
    return mu * prior_unlabeled / prior_unlabeled.max()


def paf_update(proto_text: Tensor, proto_visual: Tensor, alpha: Tensor) -> Tensor:
    """c_k^t <- normalize((1 - alpha_k) normalize(c_k^t) + alpha_k c_k^v); [C, D] -> [C, D]."""
    alpha = alpha.unsqueeze(1)
    return F.normalize((1 - alpha) * F.normalize(proto_text, dim=-1) + alpha * proto_visual, dim=-1)


def ema_class_means(proto_visual: Tensor, z: Tensor, targets: Tensor, momentum: float) -> Tensor:
    """c_k^v <- m c_k^v + (1 - m) mean_{y_i = k} z_i for the classes in ``targets`` [B];
    the others keep their value. proto_visual [C, D], z [B, D] -> [C, D]."""
    sums = torch.zeros_like(proto_visual).index_add_(0, targets.long(), z.to(proto_visual.dtype))
    return ema_from_class_sums(proto_visual, sums, class_histogram(targets, len(proto_visual)), momentum)


def ema_from_class_sums(proto_visual: Tensor, sums: Tensor, counts: Tensor, momentum: float) -> Tensor:
    """`ema_class_means` from per-class feature sums [C, D] and counts [C] (summed over DDP here)."""
    counts, sums = global_sum(counts), global_sum(sums)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    updated = momentum * proto_visual + (1 - momentum) * means
    return torch.where((counts > 0).unsqueeze(1), updated, proto_visual)


def _check_context(ctx: MethodContext) -> None:
    shape = tuple(ctx.text_prototypes.shape)
    if len(shape) != 2 or shape[0] != ctx.num_classes:
        raise ValueError(f"ulfine: text_prototypes must be [num_classes={ctx.num_classes}, D], got {shape}")
    if tuple(ctx.labeled_counts.shape) != (ctx.num_classes,):
        raise ValueError(
            f"ulfine: labeled_counts must be [{ctx.num_classes}], got {tuple(ctx.labeled_counts.shape)}"
        )


@METHODS.register("ulfine")
class ULFine(SSLMethod):
    """ULFine: text + LP heads fused for pseudo-labels and prediction, text prototypes fitted by PAF."""

    needs_weak_grad = False

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        _check_context(ctx)
        self.ucfg = cfg.ulfine
        proto = F.normalize(ctx.text_prototypes.detach().float(), dim=-1)
        num_classes, dim = proto.shape
        self.proto_text = nn.Parameter(proto.clone(), requires_grad=self.ucfg.train_text_prototypes)
        self.lp_head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.lp_head.weight.copy_(_LP_INITS[self.ucfg.lp_init](proto))
            self.lp_head.bias.zero_()
        self.register_buffer("proto_text_init", proto.clone())  # for the drift diagnostic
        self.register_buffer("proto_visual", proto.clone())
        self.register_buffer("alpha", torch.zeros(num_classes))  # last PAF step, for diagnostics
        self.register_buffer("log_prior_labeled", log_prior(ctx.labeled_counts))
        self.prior_unlabeled = EMADistribution(num_classes, self.ucfg.pu_momentum)  # P_u
        self.prior_seen = EMADistribution(num_classes, self.ucfg.pu_momentum)  # pi_hat
        self.prior_seen.dist.copy_(self.log_prior_labeled.exp())
        # this optimiser step's statistics, summed over its micro-batches (after_optimizer_step folds them in)
        self.register_buffer("pending_feature_sums", torch.zeros(num_classes, dim), persistent=False)
        self.register_buffer("pending_label_counts", torch.zeros(num_classes), persistent=False)
        self.register_buffer("pending_prob_sums", torch.zeros(num_classes), persistent=False)
        self.register_buffer("pending_unlabeled", torch.zeros(()), persistent=False)
        self.register_buffer("pending_seen_counts", torch.zeros(num_classes), persistent=False)
        self.fusion_weights = _FUSION_WEIGHTS[self.ucfg.fusion](self.ucfg)
        train_factor, fuse_factor = _LP_PRIOR_FACTORS[self.ucfg.lp_loss]
        self.tau_train = train_factor * cfg.la_tau
        self.tau_text = cfg.la_tau if self.ucfg.text_loss == "la" else 0.0
        self.tau_fuse = fuse_factor * cfg.la_tau

    # -- logits -------------------------------------------------------------------------------
    def text_logits(self, z: Tensor) -> Tensor:
        """s_t = text_scale * z . normalize(C_t)^T, [B, D] -> [B, C]."""
        return self.ucfg.text_scale * z @ F.normalize(self.proto_text, dim=-1).T

    def lp_logits(self, z: Tensor) -> Tensor:
        """s_l = W z + b, [B, D] -> [B, C]."""
        return self.lp_head(z)

    _HEADS: dict[str, Callable[[ULFine, Tensor], Tensor]] = {"text": text_logits, "lp": lp_logits}

    def head_logits(self, z: Tensor) -> dict[str, Tensor]:
        """Raw logits of the heads the fusion uses: {"text": s_t, "lp": s_l} or a subset."""
        return {name: self._HEADS[name](self, z) for name in self.fusion_weights}

    def fuse(self, logits: dict[str, Tensor]) -> Tensor:
        """s = sum_h w_h s_h, minus tau * log(pi_hat) when s_l was trained with plain CE."""
        fused = sum(weight * logits[name] for name, weight in self.fusion_weights.items())
        if "lp" in self.fusion_weights and self.tau_fuse:
            fused = fused - self.tau_fuse * log_prior(self.prior_seen.value)
        return fused

    def forward(self, z: Tensor) -> Tensor:
        """Test prediction: the fused logits s [B, C]."""
        return self.fuse(self.head_logits(z))

    # -- training step ------------------------------------------------------------------------
    def step(
        self, z_labeled: Tensor, targets: Tensor, z_weak: Tensor | None, z_strong: Tensor | None
    ) -> StepOutput:
        """L_s per head, pseudo-labels from the fused weak view, L_u per head, L_orth; then the
        statistics of the no-grad state updates (c^v, P_u, pi_hat), applied once per optimiser step."""
        losses = self._supervised_losses(z_labeled, targets)
        pseudo = self._pseudo(z_weak)
        losses.update(self._unsupervised_losses(z_strong, pseudo))
        if self.ucfg.orth:
            losses["orth"] = self.ucfg.lambda_orth * orthogonality_loss(self.proto_text)
        self._collect_state(z_labeled, targets, pseudo)
        return StepOutput(losses=losses, pseudo=pseudo)

    def strong_mask(self, z_weak: Tensor) -> Tensor:
        return self._pseudo(z_weak).mask > 0

    @torch.no_grad()
    def _pseudo(self, z_weak: Tensor) -> PseudoLabels:
        """Pseudo-labels from the fused weak-view logits s(x_u^w)."""
        return pseudo_labels(self.fuse(self.head_logits(z_weak)), self.cfg.threshold)

    def _supervised_losses(self, z_labeled: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """sup_lp = CE(s_l + tau_train log(pi_l), y), sup_text = CE(s_t, y)."""
        tau = {"text": self.tau_text, "lp": self.tau_train}
        return {
            f"sup_{name}": logit_adjusted_ce(s, targets, self.log_prior_labeled, tau[name])
            for name, s in self.head_logits(z_labeled).items()
        }

    def _unsupervised_losses(self, z_strong: Tensor, pseudo: PseudoLabels) -> dict[str, Tensor]:
        """unsup_h = lambda_u * mean_i mask_i CE(s_h(x_u^s), yhat_i) for each trained head h."""
        return {
            f"unsup_{name}": self.cfg.lambda_u * masked_ce(s, pseudo.labels, pseudo.mask)
            for name, s in self.head_logits(z_strong).items()
        }

    @torch.no_grad()
    def _collect_state(self, z_labeled: Tensor, targets: Tensor, pseudo: PseudoLabels) -> None:
        """Adds this micro-batch's sums for c^v (labeled features per class), P_u (probabilities)
        and pi_hat (labels + confident pseudo-labels)."""
        self.pending_feature_sums.index_add_(0, targets.long(), z_labeled.detach().to(self.pending_feature_sums.dtype))
        self.pending_label_counts.add_(class_histogram(targets, self.num_classes))
        self.pending_prob_sums.add_(pseudo.probs.sum(dim=0))
        self.pending_unlabeled.add_(len(pseudo.probs))
        self.pending_seen_counts.add_(class_histogram(targets, self.num_classes) + class_histogram(
            pseudo.labels, self.num_classes, weights=pseudo.mask
        ))

    @torch.no_grad()
    def _update_state(self) -> None:
        """c^v, P_u and pi_hat from the step's summed statistics; then a fresh sum."""
        self.proto_visual.copy_(ema_from_class_sums(
            self.proto_visual, self.pending_feature_sums, self.pending_label_counts, self.ucfg.proto_momentum
        ))
        # an empty sum (no step ran since the last update) leaves P_u and pi_hat as they are
        self.prior_unlabeled.update_from_sums(self.pending_prob_sums, self.pending_unlabeled,
                                              active=global_sum(self.pending_unlabeled) > 0)
        counts = global_sum(self.pending_seen_counts)
        self.prior_seen.update((counts / counts.sum().clamp_min(1.0)).unsqueeze(0), active=counts.sum() > 0)
        for pending in (self.pending_feature_sums, self.pending_label_counts, self.pending_prob_sums,
                        self.pending_unlabeled, self.pending_seen_counts):
            pending.zero_()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The step's state updates (c^v, P_u, pi_hat), then PAF: fit each c_k^t towards c_k^v by alpha_k."""
        self._update_state()
        if not self.ucfg.paf:
            return
        self.alpha.copy_(paf_alpha(self.prior_unlabeled.value, self.ucfg.mu))
        self.proto_text.copy_(paf_update(self.proto_text, self.proto_visual, self.alpha))

    @torch.no_grad()
    def diagnostics(self) -> dict[str, Tensor]:
        """P_u, last alpha, pi_hat, per-class drift of C_t from the text prototypes and its
        cosine to the visual prototypes, and the current L_orth value."""
        unit = F.normalize(self.proto_text, dim=-1)
        return {
            "prior_unlabeled": self.prior_unlabeled.value.clone(),
            "alpha": self.alpha.clone(),
            "prior_seen": self.prior_seen.value.clone(),
            "proto_drift_cos": (unit * self.proto_text_init).sum(-1),
            "proto_visual_cos": (unit * F.normalize(self.proto_visual, dim=-1)).sum(-1),
            "orth": orthogonality_loss(self.proto_text),
        }
