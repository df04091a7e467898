import pytest
import torch

from ulfine.config import ModelConfig
from ulfine.models.foundation import ModelNotFoundError, load_foundation, templates_for

from tests.conftest import save_local_dir


def test_local_dir_round_trip_gives_identical_features(tiny_clip, tmp_path):
    save_local_dir(tiny_clip, tmp_path / "tiny")
    foundation = load_foundation(ModelConfig(name=f"local-dir:{tmp_path / 'tiny'}"))
    images = torch.randn(3, 3, 32, 32)
    tiny_clip.requires_grad_(False)  # same MHA kernel path as the frozen loaded model
    tokens = foundation.tokenizer(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        assert torch.equal(foundation.model.encode_image(images), tiny_clip.encode_image(images))
        assert torch.equal(foundation.model.encode_text(tokens), tiny_clip.encode_text(tokens))
    # preprocessing comes from the folder's config, not from CLIP constants
    assert foundation.preprocess_cfg["mean"] == [0.5, 0.4, 0.3]
    assert foundation.preprocess_cfg["interpolation"] == "bilinear"
    assert not any(p.requires_grad for p in foundation.model.parameters())


def test_text_prototypes_are_normalised_template_means_and_cached(tiny_clip, tmp_path):
    save_local_dir(tiny_clip, tmp_path / "tiny")
    cfg = ModelConfig(name=f"local-dir:{tmp_path / 'tiny'}", templates="simple")
    foundation = load_foundation(cfg)
    templates = templates_for(cfg)
    protos = foundation.text_prototypes(["cat", "dog"], templates)
    assert protos.shape == (2, 32)
    assert torch.allclose(protos.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        emb = foundation.model.encode_text(foundation.tokenizer([t("dog") for t in templates]), normalize=True)
    expected = torch.nn.functional.normalize(emb.mean(0), dim=0)
    assert torch.allclose(protos[1], expected, atol=1e-5)
    assert len(foundation._prototype_cache) == 1
    foundation.text_prototypes(["cat", "dog"], templates)
    assert len(foundation._prototype_cache) == 1


def test_prompt_building():
    single = templates_for(ModelConfig(prompt="a blurry photo of a {}."))
    assert [t("truck") for t in single] == ["a blurry photo of a truck."]
    openai = templates_for(ModelConfig(templates="openai"))
    assert len(openai) == 80 and openai[0]("cat") == "a bad photo of a cat."
    with pytest.raises(KeyError, match="unknown template set 'opnai'.*did you mean 'openai'"):
        templates_for(ModelConfig(templates="opnai"))


def test_missing_model_errors_say_how_to_go_offline(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"'.*nowhere'.*local-dir:PATH"):
        load_foundation(ModelConfig(name=f"local-dir:{tmp_path / 'nowhere'}"))
    with pytest.raises(ModelNotFoundError, match="missing.pt"):
        load_foundation(ModelConfig(name="ViT-B-32", checkpoint=str(tmp_path / "missing.pt")))
    with pytest.raises(ModelNotFoundError, match="unknown open_clip architecture 'ViT-Q-99'"):
        load_foundation(ModelConfig(name="ViT-Q-99"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no weights file"):
        load_foundation(ModelConfig(name=f"local-dir:{empty}"))


def test_miniclip_loads_with_its_own_preprocessing(miniclip_dir):
    foundation = load_foundation(ModelConfig(name=f"local-dir:{miniclip_dir}"))
    assert tuple(foundation.preprocess_cfg["size"]) == (32, 32)
    assert foundation.preprocess_cfg["interpolation"] == "bicubic"
