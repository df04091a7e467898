import math
from typing import Callable

import pytest
import torch
from torch import nn

from ulfine.config import MethodConfig
from ulfine.methods import MethodContext, build_method


class FixedLogits(nn.Module):
    """A head that maps the first C feature dims straight to logits (identity weights)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :3]


def test_fixmatch_mask_and_pseudo_labels_on_hand_made_logits(method_context: Callable[..., MethodContext]) -> None:
    method = build_method(MethodConfig(name="fixmatch", threshold=0.9, lambda_u=2.0), method_context())
    method.head = FixedLogits()
    # weak logits: row 0 confident class 2 (softmax(0,0,5) -> 0.987), row 1 flat (1/3)
    z_weak = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0]])
    z_strong = torch.tensor([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
    z_labeled = torch.zeros(1, 3)
    out = method.step(z_labeled, torch.tensor([1]), z_weak, z_strong)
    assert out.pseudo.labels.tolist() == [2, 0]
    assert out.pseudo.mask.tolist() == [1.0, 0.0]
    # sup: CE of flat logits = log 3; unsup: only row 0 (flat strong logits -> log 3), / B=2, * lambda_u
    assert math.isclose(out.losses["sup"].item(), math.log(3), rel_tol=1e-5)
    assert math.isclose(out.losses["unsup"].item(), 2.0 * math.log(3) / 2, rel_tol=1e-5)
    assert out.logs["mask_rate"].item() == 0.5


def test_fixmatch_weak_view_gets_no_gradient(method_context: Callable[..., MethodContext]) -> None:
    method = build_method(MethodConfig(name="fixmatch", threshold=0.0), method_context())
    z_weak = torch.randn(2, 8, requires_grad=True)
    out = method.step(torch.randn(2, 8), torch.tensor([0, 1]), z_weak, torch.randn(2, 8))
    sum(out.losses.values()).backward()
    assert z_weak.grad is None


def test_fixmatch_requires_unlabeled_views(method_context: Callable[..., MethodContext]) -> None:
    method = build_method(MethodConfig(name="fixmatch"), method_context())
    with pytest.raises(ValueError, match="weak and strong"):
        method.step(torch.randn(2, 8), torch.tensor([0, 1]), None, None)
