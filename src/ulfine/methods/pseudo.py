"""Pseudo-labelling helpers: thresholded hard labels, class counts, and an EMA class distribution."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ulfine.methods.base import PseudoLabels


@torch.no_grad()
def pseudo_labels(logits_weak: Tensor, threshold: float, temperature: float = 1.0) -> PseudoLabels:
    """Hard pseudo-labels from weak-view logits [B, C] (FixMatch, Sohn et al. 2020, eq. 4).

    yhat = argmax p, mask = 1[max p >= threshold], p = softmax(logits / temperature); no
    gradient flows through them (the weak view only supervises the strong one).
    """
    probs = torch.softmax(logits_weak.detach().float() / temperature, dim=-1)
    confidence, labels = probs.max(dim=-1)
    mask = (confidence >= threshold).float()
    return PseudoLabels(labels=labels, confidence=confidence, mask=mask, probs=probs)


def class_histogram(labels: Tensor, num_classes: int, weights: Tensor | None = None) -> Tensor:
    """Counts (or summed ``weights``) of each class in ``labels`` [B] -> [C].

    Uses ``torch.bincount``, which sums repeated labels; an indexed ``+=`` would count a
    repeated class only once (the slip in ACR's code).
    """
    if weights is not None:
        weights = weights.float()
    return torch.bincount(labels.long().flatten(), weights=weights, minlength=num_classes).float()


def global_sum(value: Tensor) -> Tensor:
    """Sum of ``value`` over DDP processes (itself in one process).

    Batch statistics that feed method state (P_u, prototypes, priors) go through this, so
    every process updates its state from the whole global batch and the states stay equal."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


class EMADistribution(nn.Module):
    """A class distribution [C] tracked as an EMA of mean predicted probabilities.

    value <- m * value + (1 - m) * mean_i probs_i, starting from uniform; a buffer, so
    checkpoints carry it. Used for the unlabeled distribution P_u (ACR, ULFine).
    """

    def __init__(self, num_classes: int, momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMADistribution momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("dist", torch.full((num_classes,), 1.0 / num_classes))

    @property
    def value(self) -> Tensor:
        return self.dist

    @torch.no_grad()
    def update(self, probs: Tensor, active: Tensor | None = None) -> None:
        """Fold in a batch of probabilities [B, C] (any B >= 1).

        ``active`` (bool scalar tensor) skips the update where False without a host sync,
        e.g. for a batch with no confident prediction.
        """
        probs = probs.detach().float()
        self.update_from_sums(probs.sum(dim=0), probs.new_tensor(float(len(probs))), active)

    @torch.no_grad()
    def update_from_sums(self, sums: Tensor, count: Tensor, active: Tensor | None = None) -> None:
        """Fold in the mean of ``count`` probability rows given by their sum [C] (e.g. summed
        over the micro-batches of one optimiser step)."""
        total = global_sum(torch.cat([sums.float(), count.float().view(1)]))
        batch_mean = total[:-1] / total[-1]  # the global batch's mean, under DDP too
        updated = self.momentum * self.dist + (1.0 - self.momentum) * batch_mean
        if active is not None:
            updated = torch.where(active, updated, self.dist)
        self.dist.copy_(updated)
