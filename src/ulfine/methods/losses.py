"""Loss functions shared by the SSL methods: plain functions of tensors, no state.

Priors are passed in as tensors (kept as buffers by the methods that own them), so these
functions are device- and dtype-agnostic.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]

LOG_EPS = 1e-12  # added to the prior before the log: a class with zero count gets log(1e-12) ~ -27.6


def cross_entropy(logits: Tensor, targets: Tensor, reduction: Reduction = "mean") -> Tensor:
    """CE(logits [B, C], targets [B] int64); computed in float32 so bf16 logits stay accurate."""
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def log_prior(counts: Tensor) -> Tensor:
    """log(pi_k) with pi_k = N_k / sum_j N_j, for class counts [C] -> [C] (float32).

    ``LOG_EPS`` is added to pi before the log so that a class with no samples gives a large
    negative but finite value instead of -inf (which would turn adjusted logits into NaN).
    """
    counts = counts.float()
    total = counts.sum()
    if counts.dim() != 1 or not bool(total > 0):
        raise ValueError(f"log_prior needs a 1-D tensor of counts with a positive sum, got {counts.tolist()}")
    return torch.log(counts / total + LOG_EPS)


def logit_adjusted_ce(
    logits: Tensor, targets: Tensor, log_prior: Tensor, tau: float | Tensor = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    """Logit-adjusted loss (Menon et al., ICLR 2021, eq. 10): CE(f(x) + tau * log(pi), y).

    Training f with the prior added makes f itself approximately balanced, so the raw logits
    ``f(x)`` are the ones to predict (and pseudo-label) with.
    """
    if log_prior.shape != logits.shape[-1:]:
        raise ValueError(f"log_prior has shape {tuple(log_prior.shape)}, logits have {logits.shape[-1]} classes")
    return cross_entropy(logits.float() + tau * log_prior, targets, reduction)


def masked_ce(logits: Tensor, pseudo_labels: Tensor, mask: Tensor) -> Tensor:
    """FixMatch's unlabeled loss (Sohn et al., 2020, eq. 4): (1/B) sum_i mask_i * CE(logits_i, yhat_i).

    Divided by the whole batch size B, not by the number of passed samples, as in FixMatch:
    the loss grows as more pseudo-labels pass the threshold.
    """
    return (cross_entropy(logits, pseudo_labels, "none") * mask.float()).mean()
