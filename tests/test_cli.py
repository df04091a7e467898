"""`ulfine train` / `ulfine data` on bad input: exit code 2 and one line on stderr naming the
culprit (file, folder, class, key), never a traceback."""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_image_folder, make_tiny_clip, save_local_dir
from ulfine.cli import main


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_local_dir(make_tiny_clip(), tmp_path_factory.mktemp("cli") / "clip")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """3 classes x 24 train / 4 test images."""
    return make_image_folder(tmp_path / "data", ["cat", "dog", "ship"], {"train": 24, "test": 4})


def config_args(clip_dir: Path, data_dir: Path, out: Path, *overrides: str) -> list[str]:
    """A 5-iteration run (20 labeled draws: every one of the 17 labeled images is read)."""
    return [
        f"model.name=local-dir:{clip_dir}", "data.dataset=imagefolder", f"data.root={data_dir}",
        "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2", "data.batch_size=4",
        "data.num_workers=0", "data.eval_batch_size=16", "optim.iterations=5", "optim.warmup_iterations=1",
        "optim.lr=0.05", "train.eval_every=2", "train.log_every=1", "train.checkpoint_every=1",
        "train.precision=fp32", "train.device=cpu", "method.threshold=0.34", "strategy.adapter_dim=4",
        f"output.dir={out}", "output.name=run", "output.tensorboard=false", *overrides,
    ]


def ulfine(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(["--log-level", "WARNING", *argv])
    return code, capsys.readouterr().err


def assert_clear_error(code: int, stderr: str, *culprits: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    for culprit in culprits:
        assert culprit in stderr, f"{culprit!r} not named in: {stderr}"


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[:300])
    return path


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_image_names_the_file_at_training_time(
    workers: int, clip_dir: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (folder / "train" / "cat" / "0001.png").unlink()
    bad = truncated_jpeg(folder / "train" / "cat" / "0001.jpg")
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path / "runs", f"data.num_workers={workers}"))
    assert_clear_error(code, err, f"cannot read image '{bad}'")
    assert "DataLoader worker" not in err


def test_bad_images_skip_warns_with_a_count(
    clip_dir: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / "train" / "cat" / "0001.png").unlink()
    bad = truncated_jpeg(folder / "train" / "cat" / "0001.jpg")
    with caplog.at_level(logging.WARNING, logger="ulfine"):
        code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path / "runs", "data.bad_images=skip"))
    assert code == 0, err
    skips = [r.getMessage() for r in caplog.records if "skipping bad image" in r.getMessage()]
    assert skips and "(1 skipped in this process)" in skips[0] and str(bad) in skips[0]


# -------------------------------------------------------------- folders
def data_args(tmp_path: Path, folder: Path, *overrides: str) -> list[str]:
    return ["data", "--json", str(tmp_path / "counts.json"), "data.dataset=imagefolder", f"data.root={folder}",
            "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2", *overrides]


def add_text_file(folder: Path) -> str:
    path = folder / "train" / "dog" / "notes.txt"
    path.write_text("not an image")
    return str(path)


def add_empty_class(folder: Path) -> str:
    for split in ("train", "test"):
        (folder / split / "zebra").mkdir()
    return "zebra"


def add_test_only_class(folder: Path) -> str:
    make_image_folder(folder, ["zebra"], {"test": 1})
    return "only in test: ['zebra']"


@pytest.mark.parametrize("corrupt", [add_text_file, add_empty_class, add_test_only_class])
def test_folder_problems_name_the_culprit(corrupt, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    culprit = corrupt(folder)
    code, err = ulfine(capsys, *data_args(tmp_path, folder))
    assert_clear_error(code, err, culprit)


def test_non_image_files_are_skipped_with_a_count(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    add_text_file(folder)
    code, err = ulfine(capsys, *data_args(tmp_path, folder, "data.bad_images=skip"))
    assert code == 0, err
    assert any("skipped 1 non-image file(s)" in r.getMessage() for r in caplog.records)


def test_dataset_smaller_than_the_protocol_names_the_class(folder: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    code, err = ulfine(capsys, *data_args(tmp_path, folder, "data.n1=20", "data.m1=10"))
    assert_clear_error(code, err, "class 'cat' has 24 training images but the split needs 30", "data.n1")


# --------------------------------------------------------------- config
@pytest.mark.parametrize("override, culprit", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
    ("method.threshold=1.5", "'method.threshold' = 1.5 is out of range"),
    ("method.threshold=0", "'method.threshold' = 0.0 is out of range"),
    ("optim.lr=-0.1", "'optim.lr' = -0.1 is out of range"),
    ("data.uratio=0", "'data.uratio' = 0 is out of range"),
    ("train.precision=fp64", "'train.precision' = 'fp64' is not one of"),
])
def test_config_errors_name_the_key(override: str, culprit: str, clip_dir: Path, folder: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path, override))
    assert_clear_error(code, err, culprit)


def test_missing_model_folder_is_named(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-model"
    code, err = ulfine(capsys, "train", *config_args(missing, folder, tmp_path))
    assert_clear_error(code, err, f"model folder '{missing}' does not exist")


def test_non_finite_loss_names_step_and_term_and_keeps_a_finite_checkpoint(
    clip_dir: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = ulfine(capsys, "train", *config_args(clip_dir, folder, tmp_path, "optim.lr=1e30"))
    assert_clear_error(code, err, "is nan at iteration", "the last good checkpoint is")
    kept = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert f"at iteration {kept['iteration']};" in err
    assert all(torch.isfinite(v).all() for v in kept["encoder"].values())


# --------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def finished_run(clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("finished")
    data = make_image_folder(root / "data", ["cat", "dog", "ship"], {"train": 24, "test": 4})
    args = config_args(clip_dir, data, root / "runs", "optim.iterations=3",  # evaluated at 2: best.pt
                       "data.val_per_class=1")  # chosen on a validation split
    assert main(["--log-level", "WARNING", "train", *args]) == 0
    return root / "runs" / "run", args


def copy_run(finished_run: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the finished run (in tmp_path/runs/run) and the arguments that point at it."""
    run, args = finished_run
    shutil.copytree(run, tmp_path / "runs" / "run")
    return tmp_path / "runs" / "run", [a if not a.startswith("output.dir=") else f"output.dir={tmp_path / 'runs'}"
                                       for a in args]


def test_resume_under_a_changed_config_names_the_keys(
    finished_run: tuple[Path, list[str]], clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    moved = shutil.copytree(clip_dir, tmp_path / "other-clip")
    code, err = ulfine(capsys, "train", *args, "output.resume=true", "data.n1=6", f"model.name=local-dir:{moved}")
    assert_clear_error(code, err, "cannot resume from", "data.n1: 8 -> 6", "model.name: ", str(moved))
    code, err = ulfine(capsys, "train", *args, "output.resume=true", "train.eval_every=5", "data.num_workers=1")
    assert code == 0, err


def test_restarting_over_a_checkpoint_is_refused(
    finished_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    code, err = ulfine(capsys, "train", *args)
    assert_clear_error(code, err, f"run folder '{run}' holds a finished run", f"ulfine report {run}")
    assert "output.resume=true" not in err  # nothing is left to continue
    (run / "metrics.json").unlink()  # an unfinished run
    code, err = ulfine(capsys, "train", *args)
    assert_clear_error(code, err, f"run folder '{run}' already holds", "output.resume=true")


@pytest.mark.parametrize("keep_best", [True, False])
def test_corrupt_last_checkpoint_is_named_with_the_alternatives(
    keep_best: bool, finished_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    if not keep_best:
        (run / "checkpoints" / "best.pt").unlink()
    code, err = ulfine(capsys, "train", *args, "output.resume=true")
    hint = "Other checkpoints in" if keep_best else "No other checkpoint exists"
    assert_clear_error(code, err, f"checkpoint '{last}' is unreadable or truncated", hint)
    assert ("best.pt" in err) == keep_best


# ------------------------------------------------------------- error types
@pytest.mark.parametrize("error", [KeyError("a bug"), ValueError("a bug"), FileNotFoundError("a bug")])
def test_only_project_errors_become_exit_2(error: Exception, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    """A built-in error is a bug: it propagates with its traceback instead of a one-line exit 2."""
    import ulfine.commands.data as data_command

    def broken(args: object) -> int:
        raise error

    monkeypatch.setattr(data_command, "run", broken)
    with pytest.raises(type(error), match="a bug"):
        main(["data"])


def test_project_errors_share_one_base() -> None:
    from ulfine.api import BaseModelMismatchError
    from ulfine.config import ConfigError
    from ulfine.data import DatasetError
    from ulfine.data.protocol import SplitError
    from ulfine.engine.checkpoint import CheckpointError
    from ulfine.engine.trainer import NonFiniteLossError
    from ulfine.errors import UlfineError
    from ulfine.models.foundation import ModelNotFoundError

    for error in (ConfigError, DatasetError, SplitError, CheckpointError, NonFiniteLossError, ModelNotFoundError,
                  BaseModelMismatchError):
        assert issubclass(error, UlfineError), error
    assert issubclass(ConfigError, ValueError) and issubclass(ModelNotFoundError, FileNotFoundError)


def test_a_finished_train_prints_what_to_run_next(
    finished_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    assert main(["--log-level", "WARNING", "train", *args, "output.resume=true"]) == 0
    out = capsys.readouterr().out
    for command in (f"ulfine report {run}", f"ulfine analyze {run} --out", f"ulfine predict --run {run}"):
        assert command in out
