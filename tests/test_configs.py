"""Every config under configs/ (recursively, `base:` inheritance resolved) loads and validates:
known keys, typed and in-range values, and names that exist in their registries."""
from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import pytest
from open_clip.factory import parse_model_name

from ulfine.config import ConfigError, RunConfig, load_config, read_yaml
from ulfine.data import DATASETS
from ulfine.data.protocol import DISTRIBUTIONS
from ulfine.engine.optim import OPTIMIZERS
from ulfine.methods import METHODS
from ulfine.models.encoder import STRATEGIES
from ulfine.models.foundation import TEMPLATE_SETS
from ulfine.models.heads import HEADS
from ulfine.models.peft import PEFT

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def registry_errors(cfg: RunConfig) -> list[str]:
    """Names that load_config accepts as strings but that only a registry can check."""
    checks = [
        ("data.dataset", cfg.data.dataset, DATASETS), ("data.distribution", cfg.data.distribution, DISTRIBUTIONS),
        ("method.name", cfg.method.name, METHODS), ("strategy.name", cfg.strategy.name, STRATEGIES),
        ("strategy.peft", cfg.strategy.peft, PEFT), ("head.name", cfg.head.name, HEADS),
        ("optim.optimizer", cfg.optim.optimizer, OPTIMIZERS), ("model.templates", cfg.model.templates, TEMPLATE_SETS),
    ]
    errors = [f"{key}={value!r} is not one of {registry.names()}" for key, value, registry in checks
              if value not in registry]
    schema, name = parse_model_name(cfg.model.name)
    if schema is None:
        if name not in open_clip.list_models():
            errors.append(f"model.name={name!r} is not an open_clip architecture")
        elif cfg.model.pretrained is not None and cfg.model.checkpoint is None:
            if cfg.model.pretrained not in open_clip.list_pretrained_tags_by_model(name):
                errors.append(f"model.pretrained={cfg.model.pretrained!r} is not a tag of {name}")
    return errors


def test_configs_are_found() -> None:
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS}
    assert {"cifar10_lt.yaml", "cifar100_lt.yaml", "stl10_lt.yaml", "smallimagenet127.yaml",
            "offline/miniclip_cifar10lt.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_config_loads_and_validates(path: Path) -> None:
    cfg = load_config(path)
    assert registry_errors(cfg) == []
    raw = read_yaml(path)  # `base:` resolved: every key the file sets (or inherits) is applied
    for section, values in raw.items():
        for key, value in values.items():
            if not isinstance(value, dict):
                assert getattr(getattr(cfg, section), key) == (tuple(value) if isinstance(value, list) else value)


def test_inherited_configs_keep_the_base_model() -> None:
    """cifar100/stl10/smallimagenet configs only change data (and schedule) over cifar10_lt.yaml."""
    base = load_config(CONFIG_DIR / "cifar10_lt.yaml")
    for name, dataset in (("cifar100_lt.yaml", "cifar100"), ("stl10_lt.yaml", "stl10"),
                          ("smallimagenet127.yaml", "smallimagenet127")):
        cfg = load_config(CONFIG_DIR / name)
        assert cfg.data.dataset == dataset and cfg.model == base.model and cfg.method == base.method


@pytest.mark.parametrize("bad, match", [
    ("  lrr: 0.1\n", r"unknown config key 'optim.lrr'"),
    ("  lr: -1\n", r"'optim.lr' = -1.0 is out of range"),
    ("  iterations: many\n", r"'optim.iterations' must be an integer"),
])
def test_a_bad_key_or_value_in_a_config_fails(tmp_path: Path, bad: str, match: str) -> None:
    """The check above can fail: the same loading rejects a copied config with one bad line."""
    shutil.copytree(CONFIG_DIR, tmp_path / "configs")
    path = tmp_path / "configs" / "cifar100_lt.yaml"
    path.write_text(path.read_text() + "optim:\n" + bad)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_a_bad_registry_name_is_reported() -> None:
    """Component names (method, dataset) are checked by load_config itself, with a suggestion."""
    for override, suggestion in (("method.name=ulfnie", "ulfine"), ("data.dataset=cifar1000", "cifar100")):
        with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
            load_config(CONFIG_DIR / "cifar10_lt.yaml", [override])
