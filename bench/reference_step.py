"""The reference training step that `bench/throughput.py` compares ours against.

What LIFT/LoFT-style code does for FixMatch: one encoder forward over the concatenated labeled,
weak and strong images with autograd through all of them, then the method's losses on the
split features. Written by us on our own `Learner` (same model, same method, same batch), so the
only difference from `Learner.forward` is how the encoder is run: the weak view's activations
are recorded for a backward that never needs them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ulfine.engine.learner import Learner
from ulfine.methods.base import StepOutput


def reference_step(learner: Learner, labeled: Tensor, targets: Tensor, weak: Tensor, strong: Tensor) -> StepOutput:
    """Losses of one FixMatch-style batch with a single autograd forward of all three views."""
    z = learner.encoder(torch.cat([labeled, weak, strong]))
    z_labeled, z_weak, z_strong = z.split([len(labeled), len(weak), len(strong)])
    return learner.method.step(z_labeled, targets, z_weak, z_strong)
