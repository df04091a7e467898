"""The sparse strong view (`Learner(sparse_strong=True)`): only the strong images that can get a
non-zero loss go through the encoder's autograd forward, and the step's losses and gradients
are those of the dense step."""
from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_tiny_clip
from ulfine.config import MethodConfig, StrategyConfig, from_dict
from ulfine.engine.learner import Learner
from ulfine.methods.base import MethodContext, StepOutput, build_method
from ulfine.models.encoder import ImageEncoder, build_image_encoder

METHODS = ["fixmatch", "fixmatch_la", "acr", "ulfine"]
NUM_UNLABELED = 12


def tiny_learner(method: str, strategy: str = "lft") -> Learner:
    clip = make_tiny_clip()
    encoder = adapted_encoder(clip, strategy)
    prototypes = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    ctx = MethodContext(num_classes=5, text_prototypes=prototypes, labeled_counts=torch.tensor([8., 4, 2, 2, 1]))
    learner = Learner(encoder, build_method(MethodConfig(name=method), ctx)).train()
    if method == "acr":  # heads and taus apart, so that the balanced loss's mask adds samples
        with torch.no_grad():
            learner.method.head_bal.weight.normal_(generator=torch.Generator().manual_seed(3))
            learner.method.tau.zero_()
    return learner


def adapted_encoder(clip: open_clip.CLIP, strategy: str) -> ImageEncoder:
    """The encoder with its zero-initialised adapters moved off zero, so they get real gradients."""
    small = {"adapter_dim": 8} if strategy == "lft" else {}
    encoder = build_image_encoder(clip.visual, from_dict(StrategyConfig, {"name": strategy, "peft": "adaptformer", **small}))
    torch.manual_seed(2)
    for param in encoder.trainable_parameters():
        if param.dim() > 1:
            torch.nn.init.normal_(param, std=0.05)
    return encoder


def make_batch() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 4]),
            torch.randn(NUM_UNLABELED, 3, 32, 32, generator=g), torch.randn(NUM_UNLABELED, 3, 32, 32, generator=g))


def weak_features(learner: Learner, weak: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return learner.encoder(weak)


def set_threshold(learner: Learner, batch: tuple, passing: str) -> int:
    """Sets the method's threshold so that none / some / all strong images can count; returns
    how many can."""
    z_weak = weak_features(learner, batch[2])
    candidates = {"none": [1.01], "all": [0.0], "some": torch.linspace(0.05, 0.95, 91).tolist()}[passing]
    counts = {}
    for threshold in candidates:
        learner.method.cfg.threshold = threshold
        counts[threshold] = int(learner.method.strong_mask(z_weak).sum())
    threshold = min(counts, key=lambda t: abs(counts[t] - NUM_UNLABELED / 2))
    learner.method.cfg.threshold = threshold
    return counts[threshold]


def step_and_grads(learner: Learner, batch: tuple, sparse: bool) -> tuple[dict, dict, StepOutput]:
    """Losses, gradients and the StepOutput of one step, leaving the method state as it was."""
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    learner.sparse_strong = sparse
    learner.zero_grad(set_to_none=True)
    out = learner(*batch)
    sum(out.losses.values()).backward()
    learner.load_state_dict(state)
    losses = {k: v.detach() for k, v in out.losses.items()}
    grads = {name: p.grad.clone() for name, p in learner.named_parameters() if p.grad is not None}
    return losses, grads, out


def strong_forward_sizes(learner: Learner, batch: tuple) -> list[int]:
    """The batch sizes of the encoder's forwards with autograd during one step."""
    sizes = []
    hook = learner.encoder.register_forward_hook(
        lambda module, args, output: sizes.append(len(args[0])) if torch.is_grad_enabled() else None
    )
    try:
        step_and_grads(learner, batch, sparse=True)
    finally:
        hook.remove()
    return sizes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("passing", ["none", "some", "all"])
def test_sparse_step_equals_the_dense_step(method: str, passing: str) -> None:
    learner = tiny_learner(method)
    batch = make_batch()
    kept = set_threshold(learner, batch, passing)
    assert {"none": kept == 0, "some": 0 < kept < NUM_UNLABELED, "all": kept == NUM_UNLABELED}[passing], kept
    dense_losses, dense_grads, _ = step_and_grads(learner, batch, sparse=False)
    losses, grads, _ = step_and_grads(learner, batch, sparse=True)
    assert losses.keys() == dense_losses.keys()
    for name, loss in losses.items():
        assert torch.allclose(loss, dense_losses[name], atol=1e-6, rtol=0), name
    assert grads.keys() == dense_grads.keys()
    assert any(name.startswith("encoder.") for name in grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, dense_grads[name], atol=1e-6, rtol=0), name
    assert strong_forward_sizes(learner, batch) == [len(batch[0]) + kept]


@pytest.mark.parametrize("method", METHODS)
def test_strong_mask_is_the_mask_of_the_step(method: str) -> None:
    """The step's PseudoLabels mask: equal (one masked strong loss) or contained (ACR's union of
    the standard and balanced heads' masks); and asking changes no state."""
    learner = tiny_learner(method)
    batch = make_batch()
    set_threshold(learner, batch, "some")
    z_weak = weak_features(learner, batch[2])
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    mask = learner.method.strong_mask(z_weak)
    assert all(torch.equal(v, state[k]) for k, v in learner.state_dict().items())
    step_mask = learner.method.step(learner.encoder(batch[0]), batch[1], z_weak, learner.encoder(batch[3])).pseudo.mask
    assert mask.dtype == torch.bool and mask.shape == (NUM_UNLABELED,)
    if method == "acr":
        assert bool((mask | (step_mask > 0)).equal(mask)) and not torch.equal(mask, step_mask > 0)
    else:
        assert torch.equal(mask, step_mask > 0)


def test_frozen_encoder_and_dense_methods_run_every_strong_image() -> None:
    """LP runs no autograd forward at all; a method without a mask (None) gets every strong image."""
    batch = make_batch()
    assert strong_forward_sizes(tiny_learner("fixmatch", strategy="lp"), batch) == []
    learner = tiny_learner("fixmatch")
    learner.method.strong_mask = lambda z_weak: None
    assert strong_forward_sizes(learner, batch) == [len(batch[0]) + NUM_UNLABELED]
