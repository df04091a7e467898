"""Calibration: expected calibration error and reliability-diagram bins (plots live in reports).

ECE = sum_b (n_b / N) * |acc_b - conf_b| over ``n_bins`` equal-width confidence bins
(lo, hi] (Guo et al., ICML 2017, eq. 3), with confidence = max softmax probability.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

NUM_BINS = 15


@dataclass
class ReliabilityBins:
    edges: Tensor  # [n_bins + 1] from 0 to 1
    count: Tensor  # [n_bins] samples per bin
    confidence: Tensor  # [n_bins] mean confidence in the bin (0 where empty)
    accuracy: Tensor  # [n_bins] fraction correct in the bin (0 where empty)

    @property
    def ece(self) -> Tensor:
        """Expected calibration error as a fraction in [0, 1]."""
        weights = self.count / self.count.sum().clamp_min(1.0)
        return (weights * (self.accuracy - self.confidence).abs()).sum()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ECE in percent plus the bin arrays."""
        return {
            "ece": 100.0 * self.ece.item(),
            "bin_edges": self.edges.tolist(),
            "bin_count": self.count.tolist(),
            "bin_confidence": self.confidence.tolist(),
            "bin_accuracy": self.accuracy.tolist(),
        }


@torch.no_grad()
def reliability_bins(confidence: Tensor, correct: Tensor, num_bins: int = NUM_BINS) -> ReliabilityBins:
    """Bin confidences [N] in (0, 1] with their correctness [N] into ``num_bins`` equal-width bins."""
    confidence = confidence.detach().float().flatten().cpu()
    correct = correct.detach().float().flatten().cpu()
    edges = torch.linspace(0.0, 1.0, num_bins + 1)
    index = torch.bucketize(confidence, edges[1:-1])  # bin (lo, hi]; a confidence of 0 goes to bin 0
    count = torch.bincount(index, minlength=num_bins).float()
    denom = count.clamp_min(1.0)
    return ReliabilityBins(
        edges=edges,
        count=count,
        confidence=torch.bincount(index, weights=confidence, minlength=num_bins) / denom,
        accuracy=torch.bincount(index, weights=correct, minlength=num_bins) / denom,
    )


def calibration(logits: Tensor, targets: Tensor, num_bins: int = NUM_BINS) -> ReliabilityBins:
    """Reliability bins of a classifier's logits [N, C] against targets [N]."""
    confidence, preds = torch.softmax(logits.detach().float(), dim=-1).max(dim=-1)
    return reliability_bins(confidence, preds == targets.to(preds.device), num_bins)
