"""Our training step (`Learner.forward`: weak view without autograd) against the reference loop
(`bench/reference_step.py`: one autograd forward of all views): same losses, same gradients."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO, make_tiny_clip
from ulfine.config import MethodConfig, StrategyConfig, from_dict
from ulfine.engine.amp import autocast
from ulfine.engine.learner import Learner
from ulfine.methods.base import MethodContext, build_method
from ulfine.models.encoder import build_image_encoder


def load_reference_step():
    spec = importlib.util.spec_from_file_location("reference_step", REPO / "bench" / "reference_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_step


def tiny_learner(strategy: str, peft: str) -> Learner:
    clip = make_tiny_clip()
    small = {"adaptformer": {"dim": 8}} if (strategy, peft) == ("lft", "adaptformer") else \
        {"lora": {"rank": 4}} if (strategy, peft) == ("lft", "lora") else {}
    encoder = build_image_encoder(clip.visual, from_dict(StrategyConfig, {"name": strategy, "peft": peft, **small}))
    torch.manual_seed(2)
    for param in encoder.trainable_parameters():  # move zero-initialised adapters off zero
        if param.dim() > 1:
            torch.nn.init.normal_(param, std=0.05)
    prototypes = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    ctx = MethodContext(num_classes=5, text_prototypes=prototypes, labeled_counts=torch.tensor([8., 4, 2, 2, 1]))
    method = build_method(MethodConfig(name="fixmatch", threshold=0.21), ctx)
    return Learner(encoder, method).train()


def loss_and_grads(learner: Learner, step, batch: tuple, precision: str) -> tuple[torch.Tensor, dict]:
    learner.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), precision):
        out = step(*batch)
    loss = sum(out.losses.values())
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in learner.named_parameters() if p.grad is not None}
    return loss.detach().float(), grads


@pytest.mark.parametrize(("strategy", "peft"), [("lft", "adaptformer"), ("lft", "lora"), ("lft", "vpt"),
                                                 ("fft", "adaptformer"), ("lp", "adaptformer")])
@pytest.mark.parametrize(("precision", "atol", "rel"), [("fp32", 1e-5, 1e-5), ("bf16", 3e-2, 5e-2)])
def test_fast_step_matches_the_reference_loop(strategy: str, peft: str, precision: str, atol: float, rel: float) -> None:
    """fp32: every gradient entry within atol; bf16 (batch composition changes the rounding):
    each gradient within ``rel`` of the reference's norm."""
    learner = tiny_learner(strategy, peft)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 4]),
             torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g))
    reference = load_reference_step()
    ref_loss, ref_grads = loss_and_grads(learner, lambda *b: reference(learner, *b), batch, precision)
    loss, grads = loss_and_grads(learner, learner, batch, precision)
    assert ref_grads.keys() == grads.keys() and len(grads) > 0
    assert any(name.startswith("encoder.") for name in grads) == (strategy != "lp")
    assert torch.allclose(loss, ref_loss, atol=atol, rtol=0)
    for name, grad in grads.items():
        error = (grad.float() - ref_grads[name].float()).norm()
        assert error <= rel * ref_grads[name].float().norm().clamp_min(1.0), name
