import json
from types import SimpleNamespace

import pytest
import torch

from ulfine.metrics.pseudo import PseudoLabelDiagnostics


def batch(labels: list[int], confidence: list[float], mask: list[float]) -> SimpleNamespace:
    return SimpleNamespace(labels=torch.tensor(labels), confidence=torch.tensor(confidence), mask=torch.tensor(mask))


def test_counts_on_a_hand_made_batch() -> None:
    diag = PseudoLabelDiagnostics(3)
    # pseudo 0 (passed, right), 0 (passed, wrong: true 1), 0 (passed, unknown), 2 (not passed, true 2), 1 (passed, wrong: true 2)
    diag.update(batch([0, 0, 0, 2, 1], [0.9, 0.8, 0.99, 0.4, 0.7], [1, 1, 1, 0, 1]), torch.tensor([0, 1, -1, 2, 2]))
    out = diag.compute()
    json.dumps(out)
    assert out["seen"] == 5
    assert out["passed"] == [3, 1, 0]
    assert out["passed_known"] == [2, 1, 0]
    assert out["passed_wrong"] == [1, 1, 0]
    assert out["error_rate"] == [pytest.approx(50.0), pytest.approx(100.0), None]
    assert out["mean_confidence_correct"] == pytest.approx(0.9)
    assert out["mean_confidence_wrong"] == pytest.approx(0.75)
    assert out["mean_confidence_wrong_per_class"] == [pytest.approx(0.8), pytest.approx(0.7), None]
    assert out["pseudo_hist"] == [3, 1, 1]
    assert out["true_hist"] == [1, 1, 2]
    assert out["mask_rate"] == pytest.approx(80.0)
    assert out["pseudo_accuracy"] == pytest.approx(100 / 3)


def test_accumulates_resets_and_restores() -> None:
    diag = PseudoLabelDiagnostics(2)
    for _ in range(2):
        diag.update(batch([1], [0.6], [1]), torch.tensor([0]))
    restored = PseudoLabelDiagnostics(2)
    restored.load_state_dict(diag.state_dict())
    assert restored.compute()["passed_wrong"] == [0, 2]
    diag.reset()
    out = diag.compute()
    assert out["seen"] == 0 and out["mean_confidence_wrong"] is None and out["mask_rate"] is None


def test_load_state_dict_checks_shapes() -> None:
    with pytest.raises(ValueError, match="passed"):
        PseudoLabelDiagnostics(3).load_state_dict(PseudoLabelDiagnostics(2).state_dict())
