"""Top-1 accuracy overall, per class and per head / medium / tail group (ULFINE.md section 1)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ulfine.metrics.base import Accumulator, percent

GROUP_NAMES = ("head", "medium", "tail")


def groups_by_count(counts: Sequence[int] | Tensor) -> dict[str, list[int]]:
    """Thirds of the classes ordered by labeled count N_k, most frequent first.

    Ties keep class order (stable sort). When C is not a multiple of 3 the earlier groups
    take the extra class (``torch.tensor_split``), e.g. 10 classes -> 4 / 3 / 3.
    """
    counts = torch.as_tensor(counts)
    if counts.numel() < len(GROUP_NAMES):
        raise ValueError(f"need at least 3 classes to form head/medium/tail groups, got counts {counts.tolist()}")
    order = torch.sort(counts, descending=True, stable=True).indices
    return {name: part.tolist() for name, part in zip(GROUP_NAMES, torch.tensor_split(order, len(GROUP_NAMES)))}


# ImageNet-LT's many / medium / few-shot split (Liu et al., CVPR'19): > 100, 20-100, < 20 labeled images
MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20


def groups_by_threshold(counts: Sequence[int] | Tensor) -> dict[str, list[int]] | None:
    """head: N_k > 100, medium: 20 <= N_k <= 100, tail: N_k < 20; None when a group would be empty."""
    counts = torch.as_tensor(counts).tolist()
    groups = {
        "head": [k for k, n in enumerate(counts) if n > MANY_SHOT_ABOVE],
        "medium": [k for k, n in enumerate(counts) if FEW_SHOT_BELOW <= n <= MANY_SHOT_ABOVE],
        "tail": [k for k, n in enumerate(counts) if n < FEW_SHOT_BELOW],
    }
    return groups if all(groups.values()) else None


def class_groups(counts: Sequence[int] | Tensor, natural: bool = False) -> dict[str, list[int]]:
    """The head / medium / tail rule, decided here only.

    Synthetic protocols (ULFINE.md section 1): thirds of the classes by labeled count
    (`groups_by_count`). Natural data (data.distribution=natural): ImageNet-LT's thresholds on
    the labeled counts (> 100 / 20-100 / < 20) when the counts span them (every group gets a
    class), else thirds; e.g. 60/35/20/13/8 labeled images -> head {60, 35}, medium {20, 13},
    tail {8}. Fewer than 3 classes: no groups (only top-1 and per-class accuracy)."""
    if len(counts) < len(GROUP_NAMES):
        return {}
    return (groups_by_threshold(counts) if natural else None) or groups_by_count(counts)


class ClassAccuracy(Accumulator):
    """Accumulates correct / total per class; ``compute`` gives percentages.

    Group accuracy pools the group's test samples (equal to the mean per-class accuracy on
    a balanced test set). Pass the labeled ``counts`` to split into thirds, or explicit
    ``groups`` (name -> class indices) where a dataset defines them; both need ``num_classes``
    or ``counts`` for the size.
    """

    def __init__(
        self,
        counts: Sequence[int] | Tensor | None = None,
        groups: dict[str, Sequence[int]] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if num_classes is None:
            if counts is None:
                raise ValueError("ClassAccuracy needs counts or num_classes")
            num_classes = len(counts)
        self.num_classes = num_classes
        self.groups = {k: list(v) for k, v in groups.items()} if groups is not None else (
            groups_by_count(counts) if counts is not None else {}
        )
        for name, members in self.groups.items():
            if any(not 0 <= k < num_classes for k in members):
                raise ValueError(f"group '{name}' has classes outside [0, {num_classes}): {members}")
        super().__init__({"correct": (num_classes,), "total": (num_classes,)})

    @torch.no_grad()
    def update(self, logits_or_preds: Tensor, targets: Tensor) -> None:
        """Logits [N, C] (argmax taken) or predicted classes [N]; targets [N]."""
        preds = logits_or_preds.argmax(dim=-1) if logits_or_preds.dim() == 2 else logits_or_preds
        targets = targets.to(preds.device).long()
        self._follow(preds.device)
        hits = (preds.long() == targets).float()
        self.add("correct", torch.bincount(targets, weights=hits, minlength=self.num_classes))
        self.add("total", torch.bincount(targets, minlength=self.num_classes))

    def compute(self) -> dict[str, Any]:
        correct, total = self.state["correct"].cpu(), self.state["total"].cpu()
        result: dict[str, Any] = {"top1": percent(correct.sum().view(1), total.sum().view(1))[0]}
        for name, members in self.groups.items():
            result[name] = percent(correct[members].sum().view(1), total[members].sum().view(1))[0]
        result["per_class"] = percent(correct, total)
        present = [acc for acc in result["per_class"] if acc is not None]
        # mean per-class recall: equals top1 on a balanced set; on a long-tailed validation split
        # it is the number to select models by (pooled top1 there rewards head bias)
        result["class_mean"] = sum(present) / len(present) if present else None
        result["groups"] = self.groups
        return result
