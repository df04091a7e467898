import json

import pytest
import torch

from ulfine.metrics.accuracy import ClassAccuracy, groups_by_count


def test_groups_are_thirds_by_count_with_stable_ties() -> None:
    # classes 0..5, counts: class 3 most, ties between 1 and 4 keep class order
    groups = groups_by_count([5, 7, 1, 9, 7, 2])
    assert groups == {"head": [3, 1], "medium": [4, 0], "tail": [5, 2]}


def test_groups_uneven_split() -> None:
    assert [len(v) for v in groups_by_count(list(range(10, 0, -1))).values()] == [4, 3, 3]


def test_head_medium_tail_accuracy_hand_made() -> None:
    acc = ClassAccuracy(counts=[30, 20, 10])  # head = 0, medium = 1, tail = 2
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 1, 0, 0, 0])  # class 0: 2/2, class 1: 1/2, class 2: 0/2
    acc.update(preds[:3], targets[:3])
    acc.update(preds[3:], targets[3:])
    out = acc.compute()
    assert out["top1"] == pytest.approx(50.0)
    assert (out["head"], out["medium"], out["tail"]) == (pytest.approx(100.0), pytest.approx(50.0), 0.0)
    assert out["per_class"] == [pytest.approx(100.0), pytest.approx(50.0), 0.0]
    json.dumps(out)


def test_accepts_logits_and_reports_none_for_unseen_class() -> None:
    acc = ClassAccuracy(num_classes=3, groups={"few": [2]})
    acc.update(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([1]))
    out = acc.compute()
    assert out["top1"] == 100.0 and out["few"] is None and out["per_class"][0] is None
    assert out["class_mean"] == 100.0  # classes without samples do not count


def test_class_mean_differs_from_pooled_top1_on_a_long_tailed_set() -> None:
    acc = ClassAccuracy(num_classes=2)
    acc.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))  # head 3/3 right, tail 0/1
    out = acc.compute()
    assert out["top1"] == pytest.approx(75.0) and out["class_mean"] == pytest.approx(50.0)


def test_reset_and_state_roundtrip() -> None:
    acc = ClassAccuracy(counts=[3, 2, 1])
    acc.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    other = ClassAccuracy(counts=[3, 2, 1])
    other.load_state_dict(acc.state_dict())
    assert other.compute()["per_class"][0] == pytest.approx(50.0)
    acc.reset()
    assert acc.compute()["top1"] is None


def test_group_outside_range_raises() -> None:
    with pytest.raises(ValueError, match="group 'tail'"):
        ClassAccuracy(num_classes=2, groups={"tail": [5]})
