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


@pytest.mark.parametrize("name", METHODS.names())
def test_diagnostics_are_declared_with_their_kind(name: str, method_context: Callable[..., MethodContext]) -> None:
    """Reports draw only what a method declares (``DIAGNOSTICS``): every value of
    ``diagnostics()`` has an entry, per-class values are [C], scalars are one number and
    histories are (iteration, value) rows."""
    method = build_method(MethodConfig(name=name), method_context(num_classes=4, dim=8))
    values = method.diagnostics()
    assert set(values) == set(method.DIAGNOSTICS)
    for key, info in method.DIAGNOSTICS.items():
        if info.kind == "history":
            assert values[key].ndim == 2 and values[key].shape[1] == 2, key
        else:
            assert tuple(values[key].shape) == ((4,) if info.kind == "per_class" else ()), key
        assert info.kind == "per_class" or not info.plot, key
    section = method.describe_diagnostics()
    assert list(section["entries"]) == list(method.DIAGNOSTICS)
    assert not any(info.plot for info in method.DIAGNOSTICS.values()) or section["title"]
