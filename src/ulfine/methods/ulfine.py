"""ULFine = PAF + DLF (Zhang, Li, Geng, Chen, arXiv 2505.05062, 2025), ULFINE.md section 3.

Symbols follow the spec; z = normalize(f(x)) are image features [B, D] from the trainer.

Textual prototypes C_t = [c_1^t ... c_C^t] (``proto_text``), initialised from the frozen text
encoder (``MethodContext.text_prototypes``) and trainable (``train_text_prototypes``): they get
gradients from the text-logit losses and L_orth [ours].

Visual prototypes (``proto_visual``), an EMA of the labeled per-class batch means:

    c_k^v <- m * c_k^v + (1 - m) * mean_{i in batch, y_i = k} z_i     (absent classes keep c_k^v)
    c_k^v = c_k^t at step 0, m = proto_momentum = 0.9 [ours]

PAF, confidence-aware prototype fitting, after each optimiser step, without gradient:

    paf_mode = literal:  c_k^t <- normalize((1 - alpha_k) * normalize(c_k^t) + alpha_k * c_k^v)
    paf_mode = centred:  c_k^t <- normalize(mu_t + (1 - alpha_k) * (normalize(c_k^t) - mu_t)
                                             + alpha_k * (c_k^v - mu_v))
    paf_alpha = prior:   alpha_k = mu * P_u^k / max_i P_u^i,       mu = 0.05 [ours; the spec's 0.01 before]
    paf_alpha = uniform: alpha_k = mu (class-independent)

P_u (``prior_unlabeled``): EMA (pu_momentum = 0.999) of the mean softmax of the fused weak-view
prediction, uniform at step 0 [ours]. c_k^t is normalised before mixing because gradient steps
change its norm while only its direction enters s_t. mu_t = mean_k normalize(c_k^t) and
mu_v = mean_k c_k^v: CLIP's image and text features sit in two cones far apart (the modality
gap), so the literal update also moves c_k^t toward the image cone and raises *every* image's
score for k; the centred update moves only c_k^t's class-specific part (its offset from mu_t)
toward c_k^v's offset from mu_v (ULFINE.md section 3, "PAF and the modality gap").

Orthogonality [form ours]:  L_orth = mean_{j != k} (c_j^t . c_k^t)^2 over normalised prototypes.

DLF, dual logit fusion, two classifiers on the same z:

    s_t = text_scale * z . normalize(C_t)^T          (text_scale = 1 / 0.07)
    lp_head = linear: s_l = W z + b,                 W = C_t, b = 0 at step 0 [ours] (lp_init)
    lp_head = cosine: s_l = s_c * z . normalize(W)^T, W = C_t at step 0, s_c = lp_scale = 1 / 0.07
    s   = beta * (w * s_t + s_l)     (fusion = dual; beta = fusion_scale: 1 sum, 0.5 mean;
                                      w = fuse_text_weight = 1)
    lp_loss = ce_fuse_prior:  s = beta * (w * s_t + s_l - tau * log(pi_hat))

The linear head's logits stay within about +-1 next to s_t's +-14, so in the sum s is s_t and
s_l alone never passes a 0.95 threshold; the cosine head has a scale like s_t's. beta tempers
the fused softmax: the sum of two sharp heads is sharper than either, so more (biased) weak
views pass the threshold. A single-head fusion (fusion = text | lp) uses that head's logits
as they are (beta and w apply to the dual fusion only). The prior correction is scaled by beta
with s_l, because the label shift it removes lives in s_l's logits (with beta = 1 it is the
spec's s - tau * log(pi_hat)).

pi_hat (``prior_seen``): EMA (pu_momentum) of the class frequencies of the labeled targets plus
the pseudo-labels that pass the threshold, initialised to pi_l. s (weak view) makes the
pseudo-labels and s is the test prediction (``forward``).

Losses [ours, FixMatch lineage], yhat = argmax softmax(s(x_u^w)) without gradient:

    L   = L_s + lambda_u * L_u + lambda_o * L_orth
    L_s = CE(s_l(x_l) + tau * log(pi_l), y) + CE(s_t(x_l) + tau_t * log(pi_l), y)
          tau = la_tau (lp_loss = la; 0 for ce_fuse_prior); tau_t = la_tau (text_loss = la, so the
          text head is not pulled toward the labeled long tail either) or 0 (text_loss = ce)
    L_u = mean_i 1[max softmax(s(x_u^w))_i >= threshold] * (CE(s_l(x_u^s), yhat_i) + CE(s_t(x_u^s), yhat_i))

The spec's first reading (ULFINE.md section 3) is these overrides (``SPEC_LITERAL``, also in
``configs/offline/ulfine_spec_literal.yaml``):

    method.ulfine.text_loss=ce  method.ulfine.train_text_prototypes=true  method.ulfine.lp_head=linear
    method.ulfine.lp_init=text  method.ulfine.lp_loss=la  method.ulfine.paf_mode=literal
    method.ulfine.paf_alpha=prior  method.ulfine.fusion_scale=1  method.ulfine.fuse_text_weight=1
    method.ulfine.mu=0.01

The revised-spec fixes are the other values: text_loss=la (the text head is logit-adjusted
too, so it does not learn the long tail), train_text_prototypes=false (C_t moved by PAF alone),
lp_head=cosine, paf_mode=centred (or paf_alpha=uniform), fusion_scale=0.5 and lp_loss=ce_fuse_prior.

Ablation switches remove what they name. ``paf=False``: C_t is never fitted (alpha stays 0).
``orth=False``: no L_orth term, so no gradient from it. ``fusion=text`` / ``fusion=lp``: only
that head predicts, pseudo-labels *and is trained*; the other head gets no loss, because its
gradients would still shape the fine-tuned encoder and the row would not remove DLF. With
``fusion=lp`` the text head is gone from the losses and the prediction, so PAF and L_orth
(which only move C_t) have no effect on the outcome. With ``train_text_prototypes=false`` C_t
gets no gradient, so L_orth (reported, but a constant) has no effect either, and the text-only
row on a frozen encoder (strategy lp) has nothing to train by gradient: the trainer refuses it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulfine.config import ConfigError, MethodConfig, option
from ulfine.methods.base import METHODS, Diagnostic, MethodContext, PseudoLabels, SSLMethod, StepOutput
from ulfine.methods.losses import log_prior, logit_adjusted_ce, masked_ce
from ulfine.methods.pseudo import EMADistribution, class_histogram, global_sum, pseudo_labels
from ulfine.models.heads import HEADS

logger = logging.getLogger(__name__)


@dataclass
class ULFineConfig:
    """ULFine's own options (``method.ulfine.*``); it builds its own heads, so ``head.*`` is an error.

    The defaults of the [ours] choices (lp_head, text_loss, train_text_prototypes, paf_mode,
    fusion_scale) were chosen on the validation split (class-mean accuracy, 3 seeds, LP on cached
    MiniCLIP features, 2500 iterations, CIFAR-10-LT consistent; bench/results/ulfine-sweep-lp-it2500*.md):
    val 54.9 against 46.7-52.4 for each single change back and 26.7 for the spec's first reading
    (`SPEC_LITERAL`, configs/offline/ulfine_spec_literal.yaml), which stays reachable. The text
    weight w = 1 too (ulfine-sweep-lp-it2500-text-weight.md, 10 seeds: w = 2 / 4 score -1.4 / -4.5 val).
    lp_scale and mu were chosen later on a larger, balanced validation split (``data.val_source=unused``).
    """

    uses_head: ClassVar[bool] = False
    proto_momentum: float = option(0.9, range="in [0, 1)")  # m: EMA of per-class visual prototypes
    pu_momentum: float = option(0.999, range="in [0, 1)")  # EMA of P_u
    # PAF step: alpha_k = mu * P_u^k / max_i P_u^i. 0.05, chosen on the balanced 2000-image validation
    # split at lp_scale 1/0.07 (+0.28 +- 0.13 val class-mean over 0.01, higher in 3/3 seeds; 0.1 and 0.2
    # level with 0.05; ulfine-sweep-lp-it2500-bigval-round{3,4}.md); 0.01, the default before, is one override away
    mu: float = option(0.05, range="in [0, 1]")
    lambda_orth: float = option(1.0, range=">= 0")  # weight of L_orth
    text_scale: float = option(1 / 0.07, range="> 0")  # 1/T_t of the text logits
    paf: bool = True  # ablation: PAF update on/off
    orth: bool = True  # ablation: orthogonality loss on/off
    fusion: Literal["dual", "text", "lp"] = "dual"  # logits used for pseudo-labels and prediction
    lp_loss: Literal["la", "ce_fuse_prior"] = "la"  # how s_l is balanced (spec section 3, DLF)
    # C_t gets gradients (text losses, L_orth; the spec's first reading) or, the default chosen on
    # validation, only PAF moves it (then L_orth has no effect)
    train_text_prototypes: bool = False
    lp_init: Literal["text", "zeros"] = "text"  # LP head W at step 0: C_t (spec) or zeros (s_l = 0)
    fuse_text_weight: float = option(1.0, range=">= 0")  # w, the weight of s_t in s = beta * (w * s_t + s_l) (spec: 1)
    # L_s on s_t: logit-adjusted like s_l, or plain CE (spec's first reading). It trains the encoder (LFT/FFT)
    # and C_t when train_text_prototypes is on; on a frozen encoder with C_t moved by PAF only it has no
    # gradient, so la and ce give the same run (bench/results/ulfine-sweep-lp-it2500-bigval-round3.md)
    text_loss: Literal["ce", "la"] = "la"
    # s_l: "linear" W z + b with W = C_t (the spec's first reading, logits ~ +-1) or "cosine"
    # lp_scale * z . normalize(W)^T with W = C_t at step 0 (spec section 3, revised)
    lp_head: Literal["linear", "cosine"] = "cosine"
    # s_c of the cosine LP head: 1/0.07 (CLIP's temperature, head.scale's default), chosen on the balanced
    # 200-a-class validation split from unused images (higher in each of 3 seeds, +0.87 val class-mean;
    # ulfine-sweep-lp-it2500-bigval.md); LIFT's 25, the default before, is one override away. The 82-image
    # split held out of the labels could not tell them apart (10 seeds: -0.25 +- 2.27; README).
    # On the second split (N1 1500, M1 3000, gamma 150) its own validation split prefers 25 (+0.43 +- 0.34,
    # 3/3; ulfine-sweep-lp-it2500-split2-bigval-lp-scale.md): a per-dataset choice, like head.scale
    lp_scale: float = option(1 / 0.07, range="> 0")
    # PAF geometry: "literal" mixes c^t and c^v directly; "centred" mixes them relative to the mean
    # text / visual prototype, so CLIP's modality gap gives no class-wide bonus (spec section 3)
    paf_mode: Literal["literal", "centred"] = "centred"
    paf_alpha: Literal["prior", "uniform"] = "prior"  # alpha_k = mu P_u^k / max P_u, or mu for every class
    fusion_scale: float = option(0.5, range="> 0")  # beta in s = beta * (s_t + s_l): 0.5 = mean, 1 = sum (spec)


# The spec's first reading (ULFINE.md section 3) as method.ulfine.* values, so its row stays
# reachable whatever the defaults become (configs/offline/ulfine_spec_literal.yaml holds the same).
SPEC_LITERAL: dict[str, object] = {
    "text_loss": "ce", "train_text_prototypes": True, "lp_head": "linear", "lp_init": "text", "lp_loss": "la",
    "paf_mode": "literal", "paf_alpha": "prior", "fusion_scale": 1.0, "fuse_text_weight": 1.0, "mu": 0.01,
}

# fusion -> weight of each head's logits in s; the heads named here are the only ones trained.
_FUSION_WEIGHTS: dict[str, Callable[[ULFineConfig], dict[str, float]]] = {
    "dual": lambda ucfg: {"text": ucfg.fusion_scale * ucfg.fuse_text_weight, "lp": ucfg.fusion_scale},
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


def paf_alpha(prior_unlabeled: Tensor, mu: float, mode: str = "prior") -> Tensor:
    """[C] -> [C]. prior: alpha_k = mu * P_u^k / max_i P_u^i (classes predicted often fit
    fastest); uniform: alpha_k = mu, the same step for every class."""
    if mode == "uniform":
        return torch.full_like(prior_unlabeled, mu)
    return mu * prior_unlabeled / prior_unlabeled.max()


def paf_update(proto_text: Tensor, proto_visual: Tensor, alpha: Tensor, mode: str = "literal") -> Tensor:
    """[C, D] -> [C, D], with c_k^t normalised first.
    literal: c_k^t <- normalize((1 - alpha_k) c_k^t + alpha_k c_k^v);
    centred: c_k^t <- normalize(mu_t + (1 - alpha_k)(c_k^t - mu_t) + alpha_k (c_k^v - mu_v)),
    mu_t, mu_v the mean text / visual prototype, so the gap between the two cones is not mixed in."""
    text, alpha = F.normalize(proto_text, dim=-1), alpha.unsqueeze(1)
    if mode == "centred":
        mu_t, mu_v = text.mean(0, keepdim=True), proto_visual.mean(0, keepdim=True)
        return F.normalize(mu_t + (1 - alpha) * (text - mu_t) + alpha * (proto_visual - mu_v), dim=-1)
    return F.normalize((1 - alpha) * text + alpha * proto_visual, dim=-1)


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
    if ctx.text_prototypes is None:
        raise ConfigError("ulfine needs CLIP's text prototypes; strategy.name=scratch has none")
    shape = tuple(ctx.text_prototypes.shape)
    if len(shape) != 2 or shape[0] != ctx.num_classes:
        raise ValueError(f"ulfine: text_prototypes must be [num_classes={ctx.num_classes}, D], got {shape}")
    if tuple(ctx.labeled_counts.shape) != (ctx.num_classes,):
        raise ValueError(
            f"ulfine: labeled_counts must be [{ctx.num_classes}], got {tuple(ctx.labeled_counts.shape)}"
        )


def _build_lp_head(ucfg: ULFineConfig, proto: Tensor) -> nn.Module:
    """s_l's head (models.heads): linear W z + b with W = C_t (scale 1, the spec's first reading)
    or cosine with scale s_c = lp_scale; W from ``lp_init`` [C, D]."""
    if ucfg.lp_head == "cosine" and ucfg.lp_init == "zeros":
        raise ConfigError("method.ulfine.lp_init=zeros needs method.ulfine.lp_head=linear: "
                          "the cosine head normalises W, and a zero W has no direction")
    num_classes, dim = proto.shape
    head = HEADS.get(ucfg.lp_head)(num_classes, dim, ucfg.lp_scale if ucfg.lp_head == "cosine" else 1.0)
    head.init_from_prototypes(_LP_INITS[ucfg.lp_init](proto))
    return head


@METHODS.register("ulfine", config=ULFineConfig)
class ULFine(SSLMethod):
    """ULFine: text + LP heads fused for pseudo-labels and prediction, text prototypes fitted by PAF."""

    needs_weak_grad = False
    DIAGNOSTICS_TITLE = "ULFine: text prototypes after PAF"
    DIAGNOSTICS = {
        "proto_drift_cos": Diagnostic("cos(C_t, initial C_t)", plot=True),
        "proto_visual_cos": Diagnostic("cos(C_t, C_v)", plot=True),
        "alpha": Diagnostic("PAF alpha", plot=True),
        "prior_unlabeled": Diagnostic("P_u (unlabeled class prior)"),
        "prior_seen": Diagnostic("pi_hat (seen class prior)"),
        "orth": Diagnostic("L_orth", kind="scalar"),
    }
    # ablation option -> tag of a run whose value differs from the default
    _TAGS: dict[str, Callable[[Any], str]] = {
        "paf": lambda v: "no PAF",
        "orth": lambda v: "no orth",
        "fusion": lambda v: f"{v} only",
        "text_loss": lambda v: f"text {v.upper()}",
        "lp_loss": lambda v: "fused prior" if v == "ce_fuse_prior" else v,
        "lp_head": lambda v: f"{v} LP",
        "train_text_prototypes": lambda v: "C_t by PAF only" if not v else "C_t trained",
        "paf_mode": lambda v: f"{v} PAF",
        "paf_alpha": lambda v: f"{v} alpha",
        "fusion_scale": lambda v: f"beta {v:g}",
    }

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        _check_context(ctx)
        self.ucfg: ULFineConfig = cfg.options
        proto = F.normalize(ctx.text_prototypes.detach().float(), dim=-1)
        num_classes, dim = proto.shape
        self.proto_text = nn.Parameter(proto.clone(), requires_grad=self.ucfg.train_text_prototypes)
        self.lp_head = _build_lp_head(self.ucfg, proto)
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
        """s_l = W z + b (linear) or s_c z . normalize(W)^T (cosine), [B, D] -> [B, C]."""
        return self.lp_head(z)

    _HEADS: dict[str, Callable[[ULFine, Tensor], Tensor]] = {"text": text_logits, "lp": lp_logits}

    def head_logits(self, z: Tensor) -> dict[str, Tensor]:
        """Raw logits of the heads the fusion uses: {"text": s_t, "lp": s_l} or a subset."""
        return {name: self._HEADS[name](self, z) for name in self.fusion_weights}

    def fuse(self, logits: dict[str, Tensor]) -> Tensor:
        """s = sum_h w_h s_h (dual: beta (w s_t + s_l)); when s_l was trained with plain CE, s_l's
        label shift tau * log(pi_hat) is removed at s_l's weight (beta)."""
        fused = sum(weight * logits[name] for name, weight in self.fusion_weights.items())
        if "lp" in self.fusion_weights and self.tau_fuse:
            fused = fused - self.fusion_weights["lp"] * self.tau_fuse * log_prior(self.prior_seen.value)
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
        # the last PAF step's mean alpha_k over classes (metrics.jsonl "method_train"; per class at evaluations)
        return StepOutput(losses=losses, pseudo=pseudo, logs={"alpha_mean": self.alpha.mean()})

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
        """The step's state updates (c^v, P_u, pi_hat), then PAF: fit each c_k^t towards c_k^v by alpha_k
        (paf_mode, paf_alpha)."""
        self._update_state()
        if not self.ucfg.paf:
            return
        self.alpha.copy_(paf_alpha(self.prior_unlabeled.value, self.ucfg.mu, self.ucfg.paf_alpha))
        self.proto_text.copy_(paf_update(self.proto_text, self.proto_visual, self.alpha, self.ucfg.paf_mode))

    def run_tags(self) -> list[str]:
        """e.g. ['no PAF', 'text only'] for paf=false, fusion=text."""
        default = ULFineConfig()
        return [tag(getattr(self.ucfg, key)) for key, tag in self._TAGS.items()
                if getattr(self.ucfg, key) != getattr(default, key)]

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
