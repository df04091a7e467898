"""One run per folder (an OS lock naming the holder), and the folder passed is the folder used."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.test_trainer import tiny_config
from ulfine.cli import main
from ulfine.engine.runlock import FolderBusyError, FolderLock, is_locked
from ulfine.engine.trainer import Trainer

HOLD = "import sys; from ulfine.engine.runlock import FolderLock; FolderLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); sys.stdin.read()"


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def test_second_process_gets_the_holders_pid(tmp_path: Path) -> None:
    proc = hold_lock(tmp_path / "run")
    try:
        assert is_locked(tmp_path / "run")
        with pytest.raises(FolderBusyError, match=f"in use by process {proc.pid}"):
            FolderLock(tmp_path / "run").acquire()
    finally:
        release(proc)
    assert not is_locked(tmp_path / "run")  # the kernel dropped it with the process
    with FolderLock(tmp_path / "run"):
        pass


def test_training_refuses_a_run_folder_another_process_holds(tiny_clip_dir: Path, tiny_folder: Path,
                                                             tmp_path: Path) -> None:
    """Before the first checkpoint exists (where the last.pt guard is still open) too."""
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=conc")
    proc = hold_lock(cfg.run_dir())
    try:
        trainer = Trainer(cfg)
        with pytest.raises(FolderBusyError, match=f"run folder '.*conc' is in use by process {proc.pid}"):
            trainer.fit()
        assert not (cfg.run_dir() / "config.yaml").exists() and not (cfg.run_dir() / "metrics.jsonl").exists()
    finally:
        release(proc)


def test_cli_names_the_holder(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=conc")
    args = [f"model.name=local-dir:{tiny_clip_dir}", "data.dataset=imagefolder", f"data.root={tiny_folder}",
            "data.n1=8", "data.m1=8", "data.gamma_l=2", "data.gamma_u=2", "data.batch_size=4",
            "data.num_workers=0", "optim.iterations=2", "train.precision=fp32",
            f"output.dir={tmp_path / 'runs'}", "output.name=conc", "output.tensorboard=false"]
    proc = hold_lock(cfg.run_dir())
    try:
        assert main(["train", *args]) == 2
    finally:
        release(proc)
    assert f"is in use by process {proc.pid}" in capsys.readouterr().err


def _iteration(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["iteration"]


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_run_resumes_where_it_now_lives(tiny_clip_dir: Path, tiny_folder: Path,
                                                          tmp_path: Path, how: str) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=orig")
    Trainer(cfg).fit(until=3)
    orig, there = cfg.run_dir(), tmp_path / "elsewhere" / "moved"
    there.parent.mkdir()
    (shutil.copytree if how == "copy" else shutil.move)(orig, there)
    assert main(["train", "--config", str(there)]) == 0
    assert _iteration(there) == 6 and (there / "metrics.json").is_file()
    if how == "copy":
        assert _iteration(orig) == 3 and not (orig / "metrics.json").exists()  # the original untouched
    else:
        assert not orig.exists()  # not started afresh at the old path


def test_a_runs_config_yaml_uses_its_own_folder(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=orig")
    Trainer(cfg).fit(until=3)
    copy = tmp_path / "copy"
    shutil.copytree(cfg.run_dir(), copy)
    assert main(["train", "--config", str(copy / "config.yaml"), "output.resume=true"]) == 0
    assert _iteration(copy) == 6 and _iteration(cfg.run_dir()) == 3
    assert json.loads((copy / "metrics.json").read_text())["iterations"] == 6


def test_run_folder_with_another_output_name_refuses(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=orig")
    Trainer(cfg).fit(until=3)
    assert main(["train", "--config", str(cfg.run_dir()), "output.name=other"]) == 2
    assert "drop the output.dir/output.name overrides" in capsys.readouterr().err


def test_skip_drops_bad_test_images_from_the_evaluation(tiny_clip_dir: Path, tiny_folder: Path,
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Was: the bad image replaced by the next readable one and counted again."""
    (tiny_folder / "test" / "dog" / "0001.png").write_bytes(b"not an image")
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "data.bad_images=skip",
                      "optim.iterations=0", "strategy.name=zeroshot")
    trainer = Trainer(cfg)
    item = trainer.data.test[5]  # dog's 0001.png (4 test images per class)
    assert item["label"] == -1 and item["index"] == 5
    with caplog.at_level("WARNING"):
        logits, targets = trainer.predict("test")
    assert len(targets) == 11 and torch.bincount(targets).tolist() == [4, 3, 4]
    assert "left 1 unreadable image(s) out (data.bad_images=skip); the metrics cover the other 11" in caplog.text
    assert trainer.evaluate("test")["dropped_images"] == 1


def _perturb(model_dir: Path) -> None:
    """Slightly different image-tower weights at the same place."""
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "open_clip_model.safetensors")
    weights["visual.proj"] = weights["visual.proj"] * 1.01
    save_file(weights, model_dir / "open_clip_model.safetensors")


def _perturbed_copy(model_dir: Path, out: Path) -> Path:
    shutil.copytree(model_dir, out)
    _perturb(out)
    return out


def test_resume_on_other_base_weights_is_refused(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    """The weights file under model.name was replaced between the runs (was: rc 0, other predictions)."""
    from ulfine.models.foundation import BaseModelMismatchError

    model_dir = shutil.copytree(tiny_clip_dir, tmp_path / "base")
    cfg = tiny_config(model_dir, tiny_folder, tmp_path / "runs", "output.name=run")
    Trainer(cfg).fit(until=3)
    original = (model_dir / "open_clip_model.safetensors").read_bytes()
    _perturb(model_dir)
    resumed = tiny_config(model_dir, tiny_folder, tmp_path / "runs", "output.name=run", "output.resume=true")
    with pytest.raises(BaseModelMismatchError, match=f"base model 'local-dir:{model_dir}' does not match"):
        Trainer(resumed).fit()
    assert _iteration(cfg.run_dir()) == 3
    (model_dir / "open_clip_model.safetensors").write_bytes(original)
    Trainer(resumed).fit()  # the same base resumes
    assert _iteration(cfg.run_dir()) == 6


def test_predict_run_with_another_base_model_is_refused(tiny_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = (tiny_run / "config.yaml").read_text()
    model_dir = Path(config.split("local-dir:")[1].split()[0])
    other = _perturbed_copy(model_dir, tmp_path / "other-clip")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    code = main(["predict", "--run", str(tiny_run), "--images", str(image), "--model", f"local-dir:{other}",
                 "--output", str(tmp_path / "p.csv"), "--workers", "0", "--device", "cpu"])
    assert code == 2 and "does not match" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
