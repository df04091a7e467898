"""Weight-decay groups and the weight EMA (issue 12 item 4)."""
from __future__ import annotations

import torch
from torch import nn

from ulfine.config import OptimConfig
from ulfine.models.peft.adaptformer import AdaptFormerConfig
from ulfine.engine.optim import build_optimizer, split_weight_decay, weight_ema
from ulfine.models.peft import PEFT


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))


def test_no_decay_for_biases_norms_scale_and_prototypes(tiny_clip) -> None:
    visual = tiny_clip.visual
    adapters = PEFT.get("adaptformer")(visual, AdaptFormerConfig(dim=2))
    model = nn.Module()
    model.visual = visual
    model.proto_text = nn.Parameter(torch.randn(3, 8))
    model.head = nn.Linear(8, 3)
    groups = split_weight_decay([{"params": [*adapters.parameters(), model.proto_text, *model.head.parameters()]}],
                                model.named_parameters())
    optimizer = build_optimizer(groups, OptimConfig(weight_decay=5e-4))
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    adapter = adapters[0]
    for free in (adapter.scale, adapter.norm.weight, adapter.norm.bias, adapter.down.bias, adapter.up.bias,
                 model.proto_text, model.head.bias):
        assert decay[id(free)] == 0.0
    for decayed in (adapter.down.weight, adapter.up.weight, model.head.weight):
        assert decay[id(decayed)] == 5e-4
    assert len(decay) == sum(1 for _ in adapters.parameters()) + 3


def test_weight_ema_copies_integer_buffers_and_averages_floats() -> None:
    model = Counter()
    ema = weight_ema(model, 0.9)
    ema.update_parameters(model)  # first call copies
    for _ in range(5):
        model.iteration.add_(1)
        with torch.no_grad():
            model.linear.weight.add_(1.0)
        ema.update_parameters(model)
    assert ema.module.iteration.item() == 5, "torch's EMA would truncate 0.9 * n + 0.1 * (n + 1) back to n"
    assert torch.all(ema.module.linear.weight < model.linear.weight)
