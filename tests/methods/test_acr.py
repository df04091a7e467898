import math
from typing import Callable

import pytest
import torch
from torch import nn

from ulfine.config import MethodConfig
from ulfine.methods import MethodContext, build_method
from ulfine.methods.acr import ACR, ACRConfig, adaptive_tau, anchor_priors, estimate_schedule, symmetric_kl


class FirstDims(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, : self.num_classes]


def long_tailed_counts(num_classes: int = 10, n1: int = 500, gamma: float = 100.0) -> torch.Tensor:
    counts = [int(n1 * gamma ** (-k / (num_classes - 1))) for k in range(num_classes - 1)] + [int(n1 / gamma)]
    return torch.tensor(counts)


def make_acr(ctx: MethodContext, threshold: float = 0.95, **acr_options: object) -> ACR:
    method = build_method(MethodConfig(name="acr", threshold=threshold, options=ACRConfig(**acr_options)), ctx)
    assert isinstance(method, ACR)
    method.head = FirstDims(ctx.num_classes)
    method.head_bal = FirstDims(ctx.num_classes)
    return method


def test_anchor_priors() -> None:
    anchors = anchor_priors(torch.tensor([3, 1]))
    assert torch.allclose(anchors, torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.25, 0.75]]))


def test_symmetric_kl_hand_computed() -> None:
    # 0.5 * (0.25 * log 1.5 + 0.25 * log 2) = log(3) / 8 to the consistent anchor; 0 to uniform
    kl = symmetric_kl(torch.tensor([0.5, 0.5]), anchor_priors(torch.tensor([3, 1])))
    assert torch.allclose(kl, torch.tensor([math.log(3) / 8, 0.0, math.log(3) / 8]), atol=1e-6)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        ((0.0, 0.0, 0.0), 2 / 3),  # s = 1/3: first segment, tau_con + (tau_uni - tau_con) * 2/3
        ((math.log(2), 0.0, 0.0), 1.0),  # s = 1/2: tau_uni
        ((math.log(4), 0.0, 0.0), 1 + 2 / 3),  # s = 2/3: tau_uni + (tau_rev - tau_uni) * 1/3
    ],
)
def test_adaptive_tau_hand_computed(kl: tuple[float, float, float], expected: float) -> None:
    assert math.isclose(adaptive_tau(torch.tensor(kl), (0.0, 1.0, 3.0)).item(), expected, rel_tol=1e-5)


def test_adaptive_tau_with_acr_values_is_acr_line() -> None:
    kl = torch.tensor([0.3, 1.2, 2.0])
    s = torch.softmax(kl, dim=0)[0]
    assert torch.allclose(adaptive_tau(kl, (0.0, 1.0, 2.0)), 2 * s)


@pytest.mark.parametrize(("anchor", "expected_tau"), [(0, 0.0), (1, 1.0), (2, 2.0)])
def test_estimate_at_an_anchor_picks_its_tau(anchor: int, expected_tau: float) -> None:
    anchors = anchor_priors(long_tailed_counts())
    taus = torch.tensor([0.0, 1.0, 2.0])
    tau = adaptive_tau(symmetric_kl(anchors[anchor], anchors), (0.0, 1.0, 2.0))
    assert (taus - tau).abs().argmin().item() == anchor
    assert abs(tau.item() - expected_tau) < 0.3


def test_pseudo_labels_adjusted_by_tau_and_mask_is_or(method_context: Callable[..., MethodContext]) -> None:
    method = make_acr(method_context(num_classes=2, counts=[3, 1]), threshold=0.75)
    z = torch.tensor([[1.0, 0.0]])
    # tau = 2: adjusted logits (1 - 2 log .75, -2 log .25) = (1.575, 2.773) -> class 1, conf 0.768
    method.tau.fill_(2.0)
    pseudo, _, _ = method._pseudo_labels(z)
    assert pseudo.labels.tolist() == [1] and pseudo.mask.tolist() == [1.0]
    # tau = 0: raw logits, conf 0.731 < 0.75 -> class 0, masked out
    method.tau.fill_(0.0)
    pseudo, _, _ = method._pseudo_labels(z)
    assert pseudo.labels.tolist() == [0] and pseudo.mask.tolist() == [0.0]
    # raw confidence 0.953 passes 0.9 although the adjusted (3.575, 2.773; conf 0.69) does not: OR keeps it
    method.tau.fill_(2.0)
    method.cfg.threshold = 0.9
    pseudo, _, _ = method._pseudo_labels(torch.tensor([[3.0, 0.0]]))
    assert pseudo.labels.tolist() == [0] and pseudo.mask.tolist() == [1.0]


def test_balanced_targets_use_fixed_tau(method_context: Callable[..., MethodContext]) -> None:
    method = make_acr(method_context(num_classes=2, counts=[3, 1]), threshold=0.75, tau_bal_targets=0.0)
    method.tau.fill_(2.0)
    _, pseudo_bal, _ = method._pseudo_labels(torch.tensor([[1.0, 0.0]]))
    assert pseudo_bal.labels.tolist() == [0]


def test_estimate_counts_repeated_labels(method_context: Callable[..., MethodContext]) -> None:
    method = make_acr(method_context(num_classes=3), threshold=0.9, pu_momentum=0.0)
    z = torch.tensor([[9.0, 0.0, 0.0]] * 3 + [[0.0, 0.0, 9.0], [0.0, 0.0, 0.0]])  # last row not confident
    method.step(z, torch.zeros(5, dtype=torch.long), z, z)
    method.after_optimizer_step()
    assert torch.allclose(method.prior_unlabeled.value, torch.tensor([0.75, 0.0, 0.25]))


def test_tau_is_re_estimated_every_window(method_context: Callable[..., MethodContext]) -> None:
    ctx = method_context(num_classes=3, counts=[30, 10, 3])
    method = make_acr(ctx, threshold=0.9, est_every=2, pu_momentum=0.0)
    assert method.tau.item() == 2.0  # ACR starts from tau_max until the first estimate
    z = torch.tensor([[9.0, 0.0, 0.0]] * 30 + [[0.0, 9.0, 0.0]] * 10 + [[0.0, 0.0, 9.0]] * 3)
    for _ in range(2):
        method.step(z, torch.zeros(len(z), dtype=torch.long), z, z)
        method.after_optimizer_step()
    # the balanced head predicts exactly the labeled (consistent) distribution -> tau near 0
    assert method.tau.item() < 0.5
    assert method.kl_steps.item() == 0 and method.iteration.item() == 2
    state = method.state_dict()
    assert {"tau", "kl_sum", "kl_steps", "iteration", "prior_unlabeled.dist"} <= set(state)


def test_no_estimate_before_est_start(method_context: Callable[..., MethodContext]) -> None:
    method = make_acr(method_context(num_classes=3), threshold=0.9, est_start=5, pu_momentum=0.0)
    z = torch.tensor([[9.0, 0.0, 0.0]])
    method.step(z, torch.zeros(1, dtype=torch.long), z, z)
    method.after_optimizer_step()
    assert torch.allclose(method.prior_unlabeled.value, torch.full((3,), 1 / 3))
    assert method.kl_steps.item() == 0


def test_prediction_is_the_balanced_head(method_context: Callable[..., MethodContext]) -> None:
    method = make_acr(method_context(num_classes=2))
    method.head_bal = nn.Linear(8, 2)
    z = torch.randn(3, 8)
    assert torch.equal(method(z), method.head_bal(z))


def test_schedule_is_relative_to_the_run(method_context: Callable[..., MethodContext]) -> None:
    ctx = method_context(num_classes=3)
    ctx.total_iterations, ctx.unlabeled_pass = 250, 155
    assert estimate_schedule(ACRConfig(), ctx) == (25, 3)  # capped at 250 // 10; ACR's 1.2 % warm-up
    ctx.unlabeled_pass = 20
    assert estimate_schedule(ACRConfig(), ctx) == (20, 3)  # one pass over the unlabeled set
    assert estimate_schedule(ACRConfig(est_every=500, est_start=0), ctx) == (500, 0)
    ctx.total_iterations = 250_000
    assert estimate_schedule(ACRConfig(), ctx) == (20, 3000)  # ACR: from epoch 6 of 500 x 500 iterations


def test_a_250_iteration_run_estimates_tau_often_and_leans_consistent(
    method_context: Callable[..., MethodContext],
) -> None:
    """The old est_every = 500 never estimated in a 250-iteration run: tau stayed at tau_rev = 2."""
    counts = [30, 10, 3]
    ctx = method_context(num_classes=3, counts=counts)
    ctx.total_iterations, ctx.unlabeled_pass = 250, 155
    method = make_acr(ctx, threshold=0.9)
    # confident balanced-head predictions in the labeled (consistent) proportions
    z = torch.tensor([[9.0, 0.0, 0.0]] * 30 + [[0.0, 9.0, 0.0]] * 10 + [[0.0, 0.0, 9.0]] * 3)
    for _ in range(250):
        method.step(z, torch.zeros(len(z), dtype=torch.long), z, z)
        method.after_optimizer_step()
    history = method.diagnostics()["tau_history"]
    assert len(history) == 10 and history[:, 0].tolist() == [25.0 * k for k in range(1, 11)]
    assert method.tau.item() < 0.5 and history[-1, 1].item() < 0.5  # near tau_con = 0
    resumed = make_acr(method_context(num_classes=3, counts=counts), threshold=0.9)  # e.g. for predict
    resumed.load_state_dict(method.state_dict())
    assert torch.equal(resumed.diagnostics()["tau_history"], history)
