"""Training cost of a run: images seen, training FLOPs and seconds (ULFINE.md section 4: cost
is compared as FLOPs and wall clock, never as iterations).

FLOPs are measured with ``torch.utils.flop_counter.FlopCounterMode`` on the run's own modules
(matmuls, convolutions and attention, forward and backward as autograd runs them; norms,
activations and the optimiser update are not counted, the usual convention), once per run,
per image:

    forward          a no-grad encoder forward (frozen encoders, the weak view)
    forward_backward an autograd encoder forward + the backward to the trainable weights
                     (LFT's backward computes no gradient for the frozen weights, FFT's does)
    head             the method's prediction head on one feature vector, x3 for its backward

and a step costs  encoded_no_grad * forward + encoded_grad * forward_backward + views * head,
with the image counts the learner reports for that step (`Learner.encoded`), summed over
micro-batches and multiplied by the number of processes.

Why per image and not per step shape: the sparse strong view changes the size of the autograd
forward at every step (the labeled images plus the strong images that pass the threshold), so a
per-shape cache would need a measurement for almost every step early in training. Every
counted operation is independent per image (convolutions, matmuls, per-image attention), so the
FLOPs are exactly linear in the batch size and two probes per run give every shape.

The probe runs in train mode (the no-grad fast paths of eval mode count differently), on zeros,
restoring the buffers it touches (BatchNorm running statistics) and the RNG state, and computes
gradients with ``torch.autograd.grad`` so no ``.grad`` is written and no DDP hook fires.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PROBE_IMAGES = 2


@dataclass
class FlopsPerImage:
    forward: float = 0.0
    forward_backward: float = 0.0
    head: float = 0.0

    def step(self, grad: int, no_grad: int, views: int) -> float:
        """FLOPs of one micro-batch with ``grad`` / ``no_grad`` encoded images and ``views`` head inputs."""
        return grad * self.forward_backward + no_grad * self.forward + views * self.head

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_flops_per_image(learner: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> FlopsPerImage:
    """Per-image FLOPs of ``learner`` (a `Learner`) on inputs of ``input_shape`` (one image
    [3, H, W], or one cached feature [D]); see the module docstring."""
    encoder, method = learner.encoder, learner.method
    inputs = torch.zeros(PROBE_IMAGES, *input_shape, device=device)
    buffers = {name: value.clone() for name, value in learner.named_buffers()}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            with torch.no_grad():
                forward = _count(lambda: learner.embed(inputs))
                features = learner.embed(inputs)
            forward_backward = 0.0
            params = [p for p in learner.encoder.parameters() if p.requires_grad]
            if inputs.dim() > 2 and params and not encoder.is_frozen:
                def forward_and_backward() -> None:
                    z = learner.embed(inputs)
                    torch.autograd.grad(z.float().sum(), params, allow_unused=True)
                forward_backward = _count(forward_and_backward)
            with torch.no_grad():
                head = 3 * _count(lambda: method(features.float()))
        finally:
            with torch.no_grad():
                for name, value in learner.named_buffers():
                    value.copy_(buffers[name])
    return FlopsPerImage(forward / PROBE_IMAGES, forward_backward / PROBE_IMAGES, head / PROBE_IMAGES)
