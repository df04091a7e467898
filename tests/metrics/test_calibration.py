import json
import math

import pytest
import torch

from ulfine.metrics.calibration import calibration, reliability_bins


def test_ece_hand_made() -> None:
    # 2 bins: (0, .5] holds conf .4 (wrong); (.5, 1] holds .9 (right) and .7 (wrong)
    bins = reliability_bins(torch.tensor([0.4, 0.9, 0.7]), torch.tensor([0, 1, 0]), num_bins=2)
    assert bins.count.tolist() == [1.0, 2.0]
    assert torch.allclose(bins.confidence, torch.tensor([0.4, 0.8]))
    assert torch.allclose(bins.accuracy, torch.tensor([0.0, 0.5]))
    # ECE = 1/3 * |0 - .4| + 2/3 * |.5 - .8| = 0.1333 + 0.2 = 0.3333
    assert math.isclose(bins.ece.item(), 1 / 3, rel_tol=1e-5)


def test_bin_edges_are_right_closed() -> None:
    bins = reliability_bins(torch.tensor([0.5, 1.0, 0.0]), torch.ones(3), num_bins=2)
    assert bins.count.tolist() == [2.0, 1.0]


def test_calibration_from_logits_default_15_bins() -> None:
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    bins = calibration(logits, torch.tensor([1, 0]))
    assert len(bins.count) == 15 and bins.count.sum().item() == 2
    # conf .5 wrong and ~1 right: ECE = 1/2 * .5 + 1/2 * (1 - .99995) ~ 0.25
    assert bins.ece.item() == pytest.approx(0.25, abs=1e-3)
    out = bins.to_dict()
    json.dumps(out)
    assert out["ece"] == pytest.approx(25.0, abs=0.1)
