import pytest

from ulfine.config import ConfigError, RunConfig, load_config, parse_overrides, save_config


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=0.05", "method.name=acr", "data.uratio=3", "model.pretrained=null"])
    assert isinstance(cfg, RunConfig)
    assert cfg.optim.lr == 0.05 and cfg.method.name == "acr" and cfg.data.uratio == 3
    assert cfg.model.pretrained is None


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.1\n  iterations: 10\ndata:\n  n1: 150\n")
    cfg = load_config(path, ["optim.iterations=20"])
    assert (cfg.optim.lr, cfg.optim.iterations, cfg.data.n1) == (0.1, 20, 150)


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.1\n  iterations: 10\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim:\n  iterations: 30\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.optim.lr, cfg.optim.iterations) == (0.1, 30)


def test_typo_names_key_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*did you mean 'lr'"):
        load_config(None, ["optim.lrr=0.1"])
    path = tmp_path / "bad.yaml"
    path.write_text("metod:\n  name: fixmatch\n")
    with pytest.raises(ConfigError, match=r"'metod'.*did you mean 'method'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, key",
    [("method.threshold=1.5", "method.threshold"), ("optim.lr=-1", "optim.lr"), ("data.uratio=0", "data.uratio")],
)
def test_out_of_range_names_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_wrong_type_and_literal_choice():
    with pytest.raises(ConfigError, match="optim.iterations"):
        load_config(None, ["optim.iterations=abc"])
    with pytest.raises(ConfigError, match=r"strategy.name.*did you mean 'lft'"):
        load_config(None, ["strategy.name=lfft"])


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=0.2", "method.name=acr", "method.acr.tau_range=[3,1,0]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_help_lists_every_shared_key_and_each_components_options() -> None:
    """`ulfine train --help` is generated from the dataclasses: shared keys and, under each
    registered component's name, its own options with their defaults."""
    from ulfine.config import config_help

    text = "\n".join(config_help())
    for line in ("optim.lr = 0.01", "data.distribution = consistent", "method.ulfine.paf_mode = centred",
                 "method.acr.est_every = 0", "strategy.adaptformer.dim = 0", "strategy.scratch.backbone = wrn28_2"):
        assert line in text, line
    assert "method.ulfine.*  (when method.name = ulfine)" in text
