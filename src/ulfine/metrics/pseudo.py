"""Pseudo-label diagnostics against the hidden labels of the unlabeled data (ULFINE.md section 5).

Per class k (the *predicted* class): how many pseudo-labels pass the threshold and how many of
those are wrong; the mean confidence of correct and of wrong passed pseudo-labels (LFT's
over-confidence); and the histogram of all pseudo-labels against the true unlabeled histogram.
Hidden label -1 = unknown: such samples count in ``passed`` and ``pseudo_hist`` only.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from ulfine.metrics.base import Accumulator, percent


class PseudoLabelBatch(Protocol):
    """What the diagnostics read (``ulfine.methods.base.PseudoLabels`` has it; metrics may not
    import methods)."""

    labels: Tensor  # [B] int64
    confidence: Tensor  # [B]
    mask: Tensor  # [B] in {0, 1}


class PseudoLabelDiagnostics(Accumulator):
    """Accumulated on the device of the batches; ``compute`` returns a JSON-ready dict."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        per_class, scalar = (num_classes,), ()
        super().__init__({
            "passed": per_class,  # mask = 1, by predicted class
            "passed_known": per_class,  # ... whose hidden label is known
            "passed_wrong": per_class,  # ... and differs from the pseudo-label
            "pseudo_hist": per_class,  # all pseudo-labels, passed or not
            "true_hist": per_class,  # known hidden labels
            "confidence_correct": scalar,  # summed confidence of correct passed pseudo-labels
            "confidence_wrong": scalar,
            "confidence_wrong_per_class": per_class,  # ... of wrong passed ones, by predicted class
            "seen": scalar,  # pseudo-labels seen
        })

    def _count(self, labels: Tensor, weights: Tensor) -> Tensor:
        return torch.bincount(labels, weights=weights.float(), minlength=self.num_classes)

    @torch.no_grad()
    def update(self, pseudo: PseudoLabelBatch, hidden: Tensor) -> None:
        """One batch of pseudo-labels [B] and their hidden labels [B] (-1 = unknown)."""
        labels = pseudo.labels.long()
        hidden = hidden.to(labels.device).long()
        self._follow(labels.device)
        passed = pseudo.mask.float() > 0
        known = hidden >= 0
        wrong = passed & known & (labels != hidden)
        right = passed & known & (labels == hidden)
        confidence = pseudo.confidence.float()
        self.add("passed", self._count(labels, passed))
        self.add("passed_known", self._count(labels, passed & known))
        self.add("passed_wrong", self._count(labels, wrong))
        self.add("pseudo_hist", torch.bincount(labels, minlength=self.num_classes))
        self.add("true_hist", torch.bincount(hidden[known], minlength=self.num_classes))
        self.add("confidence_correct", (confidence * right).sum())
        self.add("confidence_wrong", (confidence * wrong).sum())
        self.add("confidence_wrong_per_class", self._count(labels, confidence * wrong))
        self.add("seen", torch.tensor(float(labels.numel()), device=labels.device))

    def compute(self) -> dict[str, Any]:
        s = {name: value.cpu() for name, value in self.state.items()}
        num_wrong = s["passed_wrong"].sum()
        num_right = s["passed_known"].sum() - num_wrong
        return {
            "seen": int(s["seen"].item()),
            "mask_rate": percent(s["passed"].sum().view(1), s["seen"].view(1))[0],
            "passed": s["passed"].long().tolist(),
            "passed_wrong": s["passed_wrong"].long().tolist(),
            "passed_known": s["passed_known"].long().tolist(),
            "error_rate": percent(s["passed_wrong"], s["passed_known"]),
            "pseudo_accuracy": percent(num_right.view(1), s["passed_known"].sum().view(1))[0],
            "mean_confidence_correct": _mean(s["confidence_correct"], num_right),
            "mean_confidence_wrong": _mean(s["confidence_wrong"], num_wrong),
            "mean_confidence_wrong_per_class": [
                _mean(total, count) for total, count in zip(s["confidence_wrong_per_class"], s["passed_wrong"])
            ],
            "pseudo_hist": s["pseudo_hist"].long().tolist(),
            "true_hist": s["true_hist"].long().tolist(),
        }


def _mean(total: Tensor, count: Tensor) -> float | None:
    return None if count.item() == 0 else total.item() / count.item()
