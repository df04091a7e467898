"""The interface between the trainer and an SSL method.

The trainer runs the image encoder on the labeled, weak and strong views and hands the
L2-normalised features z over; the method owns its heads (and any state such as priors or
prototypes, kept as buffers so checkpoints carry them), turns features into logits and returns
its losses plus the pseudo-labels it made, for the diagnostics. A method knows nothing about
loaders, optimizers or devices.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ulfine.config import HeadConfig, MethodConfig
from ulfine.registry import Registry


@dataclass
class MethodContext:
    """What a method may know about the run when it is built."""

    num_classes: int
    text_prototypes: Tensor  # [C, D] normalised class text embeddings c_k^t
    labeled_counts: Tensor  # [C] N_k of the labeled set (long-tailed)
    head: HeadConfig = field(default_factory=HeadConfig)
    total_iterations: int = 1
    unlabeled_pass: int = 0  # iterations per pass over the unlabeled set (0 = unknown)


@dataclass
class PseudoLabels:
    """Pseudo-labels made on the weak view of an unlabeled batch."""

    labels: Tensor  # [B] int64 argmax class
    confidence: Tensor  # [B] max probability
    mask: Tensor  # [B] float in {0, 1}: passed the threshold (used in L_u)
    probs: Tensor  # [B, C] the probabilities the labels came from


@dataclass
class StepOutput:
    losses: dict[str, Tensor]  # the trainer sums them; keys become log names (loss/<key>)
    pseudo: PseudoLabels | None = None
    logs: dict[str, Tensor] = field(default_factory=dict)  # extra scalars/vectors to log


class SSLMethod(nn.Module):
    """Base class: subclasses implement ``forward`` (prediction logits) and ``step``."""

    needs_unlabeled: bool = True  # False: the trainer skips the unlabeled stream
    needs_weak_grad: bool = False  # False: the weak view runs under no_grad

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
        """Method state worth logging at evaluation time (e.g. P_u, alpha_k)."""
        return {}


METHODS: Registry[type[SSLMethod]] = Registry("method")


def build_method(cfg: MethodConfig, ctx: MethodContext) -> SSLMethod:
    import ulfine.methods  # noqa: F401  (registers the built-in methods)

    return METHODS.get(cfg.name)(cfg, ctx)
