"""The from-scratch backbones: WRN-28-2's size and output as FixMatch / ACR define it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ulfine.config import HeadConfig
from ulfine.models.backbones import build_backbone
from ulfine.models.heads import build_head


def test_wrn28_2_parameters_and_output() -> None:
    backbone = build_backbone("wrn28_2")
    head = build_head(HeadConfig(name="linear"), None, (10, backbone.feature_dim))
    count = sum(p.numel() for p in backbone.parameters()) + sum(p.numel() for p in head.parameters())
    assert count == 1_467_610  # "1.47M parameters for 10 classes" (FixMatch's WRN-28-2)
    backbone.eval()
    with torch.no_grad():
        logits = head(backbone(torch.randn(3, 3, 32, 32)))
    assert backbone.feature_dim == 128 and logits.shape == (3, 10)


def test_wrn_reference_values() -> None:
    backbone = build_backbone("wrn28_2")
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.001 for m in norms)
    assert all(m.negative_slope == 0.1 for m in backbone.modules() if isinstance(m, nn.LeakyReLU))
    assert all(m.bias is None for m in backbone.modules() if isinstance(m, nn.Conv2d))


def test_head_without_prototypes_starts_random_and_ignores_init_from_text() -> None:
    torch.manual_seed(0)
    head = build_head(HeadConfig(name="linear", init_from_text=True), None, (4, 16))
    assert head.weight.shape == (4, 16) and head.weight.abs().sum() > 0
    assert torch.equal(head.bias, torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        build_head(HeadConfig(name="linear"), None)


def test_unknown_backbone_names_the_known_ones() -> None:
    with pytest.raises(Exception, match="wrn28_2"):
        build_backbone("resnet_nope")
