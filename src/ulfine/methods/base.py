"""The interface between the trainer and an SSL method.

The trainer runs the image encoder on the labeled, weak and strong views and hands the
L2-normalised features z over; the method owns its heads (and any state such as priors or
prototypes, kept as buffers so checkpoints carry them), turns features into logits and returns
its losses plus the pseudo-labels it made, for the diagnostics. A method knows nothing about
loaders, optimizers or devices.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ulfine.config import HeadConfig, MethodConfig
from ulfine.registry import METHODS


@dataclass
class MethodContext:
    """What a method may know about the run when it is built."""

    num_classes: int
    text_prototypes: Tensor | None  # [C, D] normalised class text embeddings c_k^t; None: scratch
    labeled_counts: Tensor  # [C] N_k of the labeled set (long-tailed)
    head: HeadConfig = field(default_factory=HeadConfig)
    total_iterations: int = 1
    feature_dim: int | None = None  # D; needed only when there are no text prototypes

    @property
    def head_shape(self) -> tuple[int, int] | None:
        """(C, D) for heads built without text prototypes."""
        return None if self.feature_dim is None else (self.num_classes, self.feature_dim)
    unlabeled_pass: int = 0  # iterations per pass over the unlabeled set (0 = unknown)


@dataclass
class PseudoLabels:
    """Pseudo-labels made on the weak view of an unlabeled batch."""

    labels: Tensor  # [B] int64 argmax class
    confidence: Tensor  # [B] max probability
    mask: Tensor  # [B] float in {0, 1}: passed the threshold (used in L_u)
    probs: Tensor  # [B, C] the probabilities the labels came from


@dataclass(frozen=True)
class Diagnostic:
    """How reports show one entry of ``SSLMethod.diagnostics()`` (they know no method)."""

    label: str  # axis label or table row, e.g. "PAF alpha"
    # [C] values, one number, or [n, 2] rows of (iteration, value) (kept in metrics.json, not drawn)
    kind: Literal["per_class", "scalar", "history"] = "per_class"
    plot: bool = False  # per-class: a panel of `ulfine analyze`'s method figure


@dataclass
class StepOutput:
    losses: dict[str, Tensor]  # the trainer sums them; keys become log names (loss/<key>)
    pseudo: PseudoLabels | None = None
    # per-step scalars (or vectors) such as the mask rate or ACR's tau: averaged over each
    # train.log_every window into metrics.jsonl's training records ("method_train")
    logs: dict[str, Tensor] = field(default_factory=dict)


class SSLMethod(nn.Module):
    """Base class: subclasses implement ``forward`` (prediction logits) and ``step``.

    ``cfg`` holds the options every method reads (threshold, lambda_u, la_tau) and, in
    ``cfg.options``, the method's own dataclass named at ``@METHODS.register(name, config=...)``.
    """

    needs_unlabeled: bool = True  # False: the trainer skips the unlabeled stream
    needs_weak_grad: bool = False  # False: the weak view runs under no_grad
    # what ``diagnostics()`` returns, for reports: key -> label and kind; and the title of the
    # figure that draws the entries with plot=True
    DIAGNOSTICS: ClassVar[dict[str, Diagnostic]] = {}
    DIAGNOSTICS_TITLE: ClassVar[str] = ""

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = ctx.num_classes

    def forward(self, z: Tensor) -> Tensor:
        """Features [B, D] -> logits used for test predictions [B, C]."""
        raise NotImplementedError

    def step(
        self, z_labeled: Tensor, targets: Tensor, z_weak: Tensor | None, z_strong: Tensor | None
    ) -> StepOutput:
        """Losses for one batch; z_weak/z_strong are None when ``needs_unlabeled`` is False."""
        raise NotImplementedError

    def strong_mask(self, z_weak: Tensor) -> Tensor | None:
        """Which unlabeled samples [B] (bool) can get a non-zero strong-view loss; None = all
        (the default, for methods where every strong sample counts).

        The trainer runs the encoder's autograd forward only on these strong images and hands
        ``step`` z = 0 for the others, so it must match the mask ``step`` applies to the strong
        losses exactly, and must not change any state (it runs before ``step`` on the same z_weak).
        """
        return None

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """No-grad updates after each optimiser step (e.g. ULFine's PAF).

        State fed by batch statistics (EMAs of P_u, prototypes, counters) is updated here too,
        from statistics ``step`` summed over the step's micro-batches, so ``optim.grad_accum``
        changes neither how often nor from which samples the state moves."""

    def diagnostics(self) -> dict[str, Tensor]:
        """Method state worth logging at evaluation time (e.g. P_u, alpha_k); keys in ``DIAGNOSTICS``."""
        return {}

    @classmethod
    def describe_diagnostics(cls) -> dict[str, Any]:
        """metrics.json's ``diagnostics`` section: the title and, per key of ``diagnostics()``,
        its label, kind and whether it is plotted, so reports need not know the method."""
        return {"title": cls.DIAGNOSTICS_TITLE, "entries": {key: asdict(d) for key, d in cls.DIAGNOSTICS.items()}}

    def run_tags(self) -> list[str]:
        """Short tags that set this run's options apart from the method's defaults (an ablation),
        appended to the run's label in reports; none by default."""
        return []


def build_method(cfg: MethodConfig, ctx: MethodContext) -> SSLMethod:
    """``METHODS`` (in ``ulfine.registry``, filled by importing this package) by ``cfg.name``;
    the method finds its own options in ``cfg.options``."""
    return METHODS.get(cfg.name)(cfg, ctx)
