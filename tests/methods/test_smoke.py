"""Every registered method: one step on random features gives finite losses whose gradient
reaches the head parameters, and ``forward`` gives [B, C] logits."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from ulfine.config import MethodConfig
from ulfine.methods import METHODS, MethodContext, build_method


@pytest.mark.parametrize("name", METHODS.names())
def test_one_step_reaches_head_parameters(name: str, method_context: Callable[..., MethodContext]) -> None:
    ctx = method_context(num_classes=4, dim=8)
    method = build_method(MethodConfig(name=name, threshold=0.3), ctx)
    z = [F.normalize(torch.randn(6, 8), dim=-1) for _ in range(3)]
    unlabeled = (z[1], z[2]) if method.needs_unlabeled else (None, None)
    out = method.step(z[0], torch.tensor([0, 1, 2, 3, 0, 1]), *unlabeled)
    loss = sum(out.losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    head_grads = [p.grad for n, p in method.named_parameters() if "head" in n]
    assert head_grads and all(g is not None and torch.isfinite(g).all() for g in head_grads)
    method.after_optimizer_step()
    assert method(z[0]).shape == (6, 4)
