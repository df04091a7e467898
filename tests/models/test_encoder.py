import open_clip
import pytest
import torch

from tests.conftest import make_tiny_clip
from ulfine.config import StrategyConfig, from_dict
from ulfine.models.encoder import STRATEGIES, build_image_encoder
from ulfine.models.peft import PEFT

CASES = [("zeroshot", "adaptformer"), ("lp", "adaptformer"), ("fft", "adaptformer")] + [
    ("lft", peft) for peft in PEFT.names()
]


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _encoder(model, name, peft="adaptformer", **kwargs):
    return build_image_encoder(model.visual, from_dict(StrategyConfig, {"name": name, "peft": peft, **kwargs}), num_classes=10)


def test_strategy_registry_matches_config_choices():
    import typing

    from ulfine.config import StrategyConfig
    choices = typing.get_args(typing.get_type_hints(StrategyConfig)["name"])
    assert STRATEGIES.names() == sorted(choices) == ["fft", "lft", "lp", "scratch", "zeroshot"]


def test_features_are_normalised(tiny_clip, images):
    z = _encoder(tiny_clip, "lft")(images)
    assert z.shape == (3, 32)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize(("name", "peft"), CASES)
def test_only_the_intended_parameters_get_gradients(name, peft, tiny_clip, images):
    all_visual = {f"visual.{n}" for n, _ in tiny_clip.visual.named_parameters()}
    encoder = _encoder(tiny_clip, name, peft, **({"adapter_scale": 1.0} if (name, peft) == ("lft", "adaptformer") else {}))
    assert encoder.is_frozen == (name in ("zeroshot", "lp"))
    if name == "fft":
        assert encoder.tuned_names == all_visual
    if name == "lft":
        assert encoder.tuned_names and encoder.tuned_names < {n for n, _ in encoder.named_parameters()}
    if not encoder.is_frozen:
        encoder(images).sum().backward()
    with_grad = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert with_grad == set(encoder.tuned_names)
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == set(encoder.tuned_names)
    assert all(p.grad is None for p in tiny_clip.transformer.parameters()), "text tower must not train"
    assert all(p.grad is None for p in tiny_clip.token_embedding.parameters())


def test_param_groups_use_encoder_lr_for_fft_only(tiny_clip):
    fft = _encoder(make_tiny_clip(), "fft", encoder_lr=1e-5)
    assert [g["lr"] for g in fft.param_groups(0.01)] == [1e-5]
    assert len(fft.param_groups(0.01)[0]["params"]) == len(list(fft.visual.parameters()))
    lft = _encoder(tiny_clip, "lft")  # encoder_lr outside FFT is a config error (tests/test_config.py)
    assert [g["lr"] for g in lft.param_groups(0.01)] == [0.01]
    assert _encoder(make_tiny_clip(), "lp").param_groups(0.01) == []


@pytest.mark.parametrize("peft", PEFT.names())
def test_tuned_state_dict_round_trip(peft, images):
    tuned = _encoder(make_tiny_clip(), "lft", peft)
    with torch.no_grad():
        for p in tuned.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = tuned.tuned_state_dict()
    assert set(state) == set(tuned.tuned_names)
    fresh = _encoder(make_tiny_clip(), "lft", peft)
    assert not torch.allclose(fresh(images), tuned(images))
    fresh.load_tuned_state_dict(state)
    torch.testing.assert_close(fresh(images), tuned(images))


def test_lp_exports_nothing_and_bad_state_raises(tiny_clip):
    assert _encoder(make_tiny_clip(), "lp").tuned_state_dict() == {}
    encoder = _encoder(tiny_clip, "lft", "lora")
    state = encoder.tuned_state_dict()
    name = sorted(state)[0]
    with pytest.raises(KeyError, match="missing"):
        encoder.load_tuned_state_dict({k: v for k, v in state.items() if k != name})
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        encoder.load_tuned_state_dict({**state, name: state[name].flatten()})


def test_trainable_counts_on_real_miniclip(miniclip_dir):
    counts = {}
    for name, peft in CASES:
        model = open_clip.create_model(f"local-dir:{miniclip_dir}").eval()
        encoder = build_image_encoder(model.visual, from_dict(StrategyConfig, {"name": name, "peft": peft}), num_classes=10)
        key = f"{name}/{peft}" if name == "lft" else name
        counts[key] = sum(p.numel() for p in encoder.trainable_parameters())
        with torch.no_grad():
            assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 384)
    assert counts["lp"] == counts["zeroshot"] == 0
    # LIFT's bottleneck for 10 classes is 1, so AdaptFormer tunes fewer weights than BitFit
    assert 0 < counts["lft/adaptformer"] < counts["lft/bitfit"] < counts["fft"]
