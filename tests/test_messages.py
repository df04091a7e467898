"""Issue 16, items 10-11: one clear message (no traceback) for each case a probe found."""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from tests.test_cli import assert_clear_error, clip_dir, config_args, folder, ulfine  # noqa: F401  (fixtures)
from ulfine.config import ConfigError, load_config
from ulfine.engine.amp import resolve_device
from ulfine.engine.checkpoint import atomic_save, atomic_write_text


def test_corrupt_or_truncated_model_weights(clip_dir: Path, folder: Path, tmp_path: Path,  # noqa: F811
                                            capsys: pytest.CaptureFixture) -> None:
    import shutil

    broken = shutil.copytree(clip_dir, tmp_path / "broken")
    weights = broken / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    args = config_args(broken, folder, tmp_path / "runs", f"model.name=local-dir:{broken}")
    code, err = ulfine(capsys, "train", *args)
    assert_clear_error(code, err, f"the weights of model 'local-dir:{broken}' are unreadable, corrupt or truncated",
                       "copy or download the weights file again")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "mps:0"])
def test_unknown_devices(name: str) -> None:
    with pytest.raises(ValueError, match=f"train.device = '{name}'"):
        resolve_device(name)


def test_unknown_device_on_the_command_line(clip_dir: Path, folder: Path, tmp_path: Path,  # noqa: F811
                                            capsys: pytest.CaptureFixture) -> None:
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path / "runs", "train.device=tpu"))
    assert_clear_error(code, err, "train.device = 'tpu' is not a device; use auto, cpu, cuda or cuda:N")


def test_output_path_errors(clip_dir: Path, folder: Path, tmp_path: Path,  # noqa: F811
                            capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, blocker / "runs"))
    assert_clear_error(code, err, "Not a directory", str(blocker))


def test_full_disk_is_a_message(clip_dir: Path, folder: Path, tmp_path: Path,  # noqa: F811
                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import torch

    def full(obj: object, handle: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() on a full disk: no file name

    monkeypatch.setattr(torch, "save", full)
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path / "runs"))
    assert_clear_error(code, err, "No space left on device", "last.pt")
    assert not list((tmp_path / "runs" / "run" / "checkpoints").glob(".*.tmp"))


def test_base_cycle_in_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match="inherits from itself through 'base:'"):
        load_config(tmp_path / "a.yaml")


def test_ctrl_c_during_start_up(clip_dir: Path, folder: Path, tmp_path: Path,  # noqa: F811
                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from ulfine.engine import trainer

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "load_foundation", interrupted)
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path / "runs"))
    assert code == 130 and err.strip() == "ulfine train: interrupted"


def test_predict_output_and_data_json_folders(tiny_run: Path, folder: Path, tmp_path: Path,  # noqa: F811
                                              capsys: pytest.CaptureFixture) -> None:
    code, err = ulfine(capsys, "predict", "--run", str(tiny_run), "--images", str(folder / "test"),
                       "--output", str(tmp_path), "--workers", "0", "--device", "cpu")
    assert_clear_error(code, err, f"--output '{tmp_path}' is a folder; give a file name")
    code, err = ulfine(capsys, "data", "--json", str(tmp_path), "data.dataset=imagefolder", f"data.root={folder}",
                       "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2")
    assert_clear_error(code, err, f"--json '{tmp_path}' is a folder; give a file name")


def test_report_reads_a_cut_off_last_line(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    from ulfine.engine.metrics_log import read_metrics_log
    from ulfine.reports.runfiles import read_records

    run = shutil.copytree(tiny_run, tmp_path / "run")
    complete = read_records(run)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"iteration": 3, "loss/sup": 0.')  # killed mid-write
    assert read_records(run) == complete and read_metrics_log(run) == complete


def test_abort_message_is_truthful(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ulfine.commands.train import abort_state

    from ulfine.runfolder import RunFolder

    trainer = SimpleNamespace(run_dir=tmp_path / "run", folder=RunFolder(tmp_path / "run"))
    assert abort_state(trainer) == "no checkpoint was written yet; run the same command again to start over"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    assert abort_state(trainer).startswith(f"the checkpoint {tmp_path / 'run' / 'checkpoints' / 'last.pt'} is intact")


def test_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_save({"x": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name  # was 0600


def test_train_log_of_a_fresh_run(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    from tests.engine.test_trainer import tiny_config
    from ulfine.engine.trainer import Trainer

    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=fresh")
    caplog.set_level(logging.INFO, logger="ulfine")
    Trainer(cfg).fit()
    text = (cfg.run_dir() / "train.log").read_text()
    assert f"started {cfg.run_dir()}: 6 iterations" in text and "finished" in text
    assert json.loads((cfg.run_dir() / "metrics.json").read_text())["iterations"] == 6
