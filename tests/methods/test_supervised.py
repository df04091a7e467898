from typing import Callable

import torch
import torch.nn.functional as F

from ulfine.config import MethodConfig
from ulfine.methods import MethodContext, build_method
from ulfine.methods.losses import cross_entropy


def test_supervised_is_ce_on_labeled_only(method_context: Callable[..., MethodContext]) -> None:
    method = build_method(MethodConfig(name="supervised"), method_context())
    assert method.needs_unlabeled is False
    z = F.normalize(torch.randn(4, 8), dim=-1)
    y = torch.tensor([0, 1, 2, 0])
    out = method.step(z, y, None, None)
    assert list(out.losses) == ["sup"]
    assert torch.allclose(out.losses["sup"], cross_entropy(method(z), y))
    assert out.pseudo is None
