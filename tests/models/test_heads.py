import pytest
import torch
import torch.nn.functional as F

from ulfine.config import HeadConfig
from ulfine.models.heads import HEADS, build_head


@pytest.fixture
def prototypes() -> torch.Tensor:
    return F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)


@pytest.fixture
def z() -> torch.Tensor:
    return F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=-1)


@pytest.mark.parametrize("name", HEADS.names())
def test_text_init_gives_zero_shot_logits(name, prototypes, z):
    head = build_head(HeadConfig(name=name, scale=25.0), prototypes)
    torch.testing.assert_close(head(z), 25.0 * z @ prototypes.t())


@pytest.mark.parametrize("name", HEADS.names())
def test_random_init_ignores_prototypes(name, prototypes, z):
    head = build_head(HeadConfig(name=name, init_from_text=False), prototypes)
    assert head(z).shape == (4, 5)
    assert not torch.allclose(head(z), 25.0 * z @ prototypes.t())


def test_cosine_head_is_invariant_to_feature_norm(prototypes, z):
    head = build_head(HeadConfig(name="cosine", scale=10.0), prototypes)
    torch.testing.assert_close(head(3.0 * z), head(z))


def test_heads_train(prototypes, z):
    for name in HEADS.names():
        head = build_head(HeadConfig(name=name), prototypes)
        F.cross_entropy(head(z), torch.tensor([0, 1, 2, 3])).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_unknown_head_and_bad_prototypes_raise(prototypes):
    with pytest.raises(KeyError, match="unknown head 'cosin'.*did you mean 'cosine'"):
        build_head(HeadConfig(name="cosin"), prototypes)
    with pytest.raises(ValueError, match=r"must be \[C, D\], got shape \(40,\)"):
        build_head(HeadConfig(), prototypes.flatten())
