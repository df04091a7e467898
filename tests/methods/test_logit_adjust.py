import math
from typing import Callable

import torch
from torch import nn

from ulfine.config import MethodConfig
from ulfine.methods import MethodContext, build_method


class FirstDims(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :2]


def test_fixmatch_la_labeled_loss_uses_the_labeled_prior(method_context: Callable[..., MethodContext]) -> None:
    ctx = method_context(num_classes=2, counts=[3, 1])
    method = build_method(MethodConfig(name="fixmatch_la", la_tau=1.0, threshold=0.99), ctx)
    method.head = FirstDims()
    assert torch.allclose(method.log_prior_labeled, torch.log(torch.tensor([0.75, 0.25])), atol=1e-6)
    z0 = torch.zeros(1, 2)
    out = method.step(z0, torch.tensor([1]), z0, z0)
    # adjusted logits = log prior -> CE(target 1) = -log 0.25
    assert math.isclose(out.losses["sup"].item(), -math.log(0.25), rel_tol=1e-5)


def test_fixmatch_la_predicts_and_pseudo_labels_with_raw_logits(method_context: Callable[..., MethodContext]) -> None:
    ctx = method_context(num_classes=2, counts=[99, 1])
    method = build_method(MethodConfig(name="fixmatch_la", la_tau=1.0, threshold=0.5), ctx)
    method.head = FirstDims()
    z = torch.tensor([[0.0, 1.0]])  # raw logits favour class 1; adding log prior would flip to 0
    assert method(z).argmax().item() == 1
    out = method.step(z, torch.tensor([1]), z, z)
    assert out.pseudo.labels.tolist() == [1]


def test_supervised_la_is_the_logit_adjusted_labeled_loss_alone(method_context: Callable[..., MethodContext]) -> None:
    ctx = method_context(num_classes=2, counts=[3, 1])
    method = build_method(MethodConfig(name="supervised_la", la_tau=2.0), ctx)
    method.head = FirstDims()
    assert method.needs_unlabeled is False
    z = torch.tensor([[0.5, -0.5]])
    out = method.step(z, torch.tensor([1]), None, None)
    assert list(out.losses) == ["sup"] and out.pseudo is None
    # CE([0.5 + 2 log 0.75, -0.5 + 2 log 0.25], target 1)
    adjusted = torch.tensor([0.5 + 2 * math.log(0.75), -0.5 + 2 * math.log(0.25)])
    assert math.isclose(out.losses["sup"].item(), -torch.log_softmax(adjusted, 0)[1].item(), rel_tol=1e-5)
    assert torch.equal(method(z), z)  # predicts with the raw (balanced) logits
