import math

import pytest
import torch

from ulfine.methods.losses import cross_entropy, log_prior, logit_adjusted_ce, masked_ce


def test_log_prior_normalises_counts() -> None:
    got = log_prior(torch.tensor([3, 1]))
    assert torch.allclose(got, torch.log(torch.tensor([0.75, 0.25])), atol=1e-6)


def test_log_prior_zero_count_is_finite() -> None:
    got = log_prior(torch.tensor([4, 0]))
    assert torch.isfinite(got).all()
    assert got[1] < -20


def test_log_prior_rejects_empty_counts() -> None:
    with pytest.raises(ValueError, match="positive sum"):
        log_prior(torch.zeros(3))


def test_logit_adjusted_ce_hand_computed() -> None:
    # logits 0 everywhere, prior (0.75, 0.25), tau 1: adjusted logits = log prior,
    # so CE for target 1 is -log 0.25.
    logits = torch.zeros(1, 2)
    prior = log_prior(torch.tensor([3.0, 1.0]))
    got = logit_adjusted_ce(logits, torch.tensor([1]), prior, tau=1.0)
    assert math.isclose(got.item(), -math.log(0.25), rel_tol=1e-5)
    # tau 0 is plain CE: log 2
    got0 = logit_adjusted_ce(logits, torch.tensor([1]), prior, tau=0.0)
    assert math.isclose(got0.item(), math.log(2), rel_tol=1e-5)


def test_logit_adjusted_ce_rejects_wrong_prior_shape() -> None:
    with pytest.raises(ValueError, match="log_prior"):
        logit_adjusted_ce(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2))


def test_masked_ce_divides_by_whole_batch() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([0, 1])
    got = masked_ce(logits, targets, torch.tensor([1.0, 0.0]))
    assert math.isclose(got.item(), math.log(2) / 2, rel_tol=1e-5)
    assert masked_ce(logits, targets, torch.zeros(2)).item() == 0.0


def test_cross_entropy_reduction_none() -> None:
    got = cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, 2]), "none")
    assert got.shape == (3,)
