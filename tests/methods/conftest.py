"""Fixtures for method tests: a small MethodContext on random normalised prototypes."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from ulfine.config import HeadConfig
from ulfine.methods.base import MethodContext


def make_context(num_classes: int = 3, dim: int = 8, counts: list[int] | None = None, head: str = "cosine") -> MethodContext:
    torch.manual_seed(0)
    counts = counts if counts is not None else [num_classes * 10 - 10 * k for k in range(num_classes)]
    return MethodContext(
        num_classes=num_classes,
        text_prototypes=F.normalize(torch.randn(num_classes, dim), dim=-1),
        labeled_counts=torch.tensor(counts),
        head=HeadConfig(name=head),
    )


@pytest.fixture
def method_context() -> Callable[..., MethodContext]:
    return make_context
