import torch

from ulfine.methods.pseudo import EMADistribution, class_histogram, pseudo_labels


def test_pseudo_labels_threshold_and_argmax() -> None:
    # softmax([log 9, 0]) = (0.9, 0.1); softmax([0, 0]) = (0.5, 0.5)
    logits = torch.tensor([[torch.log(torch.tensor(9.0)).item(), 0.0], [0.0, 0.0], [0.0, 5.0]], requires_grad=True)
    out = pseudo_labels(logits, threshold=0.9)
    assert out.labels.tolist() == [0, 0, 1]
    assert out.mask.tolist() == [1.0, 0.0, 1.0]
    assert torch.allclose(out.confidence[:2], torch.tensor([0.9, 0.5]), atol=1e-6)
    assert not out.probs.requires_grad and not out.confidence.requires_grad


def test_pseudo_labels_temperature_sharpens() -> None:
    logits = torch.tensor([[1.0, 0.0]])
    assert pseudo_labels(logits, 0.9, temperature=1.0).mask.item() == 0.0
    assert pseudo_labels(logits, 0.9, temperature=0.1).mask.item() == 1.0


def test_class_histogram_sums_repeated_labels() -> None:
    assert class_histogram(torch.tensor([0, 0, 0, 2]), 3).tolist() == [3.0, 0.0, 1.0]


def test_class_histogram_weights() -> None:
    got = class_histogram(torch.tensor([0, 0, 2]), 4, weights=torch.tensor([1.0, 0.0, 1.0]))
    assert got.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_ema_distribution_update() -> None:
    ema = EMADistribution(2, momentum=0.5)
    assert ema.value.tolist() == [0.5, 0.5]
    ema.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.allclose(ema.value, torch.tensor([0.75, 0.25]))
    assert "dist" in ema.state_dict()


def test_ema_distribution_inactive_update_keeps_value() -> None:
    ema = EMADistribution(2, momentum=0.5)
    ema.update(torch.tensor([[1.0, 0.0]]), active=torch.tensor(False))
    assert ema.value.tolist() == [0.5, 0.5]
    ema.update(torch.tensor([[1.0, 0.0]]), active=torch.tensor(True))
    assert ema.value.tolist() == [0.75, 0.25]
