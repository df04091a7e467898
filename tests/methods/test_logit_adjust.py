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
