"""`ulfine train` in a subprocess, killed (SIGKILL) or stopped (SIGINT/SIGTERM) part-way and
resumed: the finished run must equal an uninterrupted one, parameter for parameter."""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import make_image_folder, make_tiny_clip, save_local_dir
from ulfine.config import load_config
from ulfine.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 10
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP, a 3-class image folder and the config of a 10-iteration run that logs and
    checkpoints every iteration."""
    root = tmp_path_factory.mktemp("interrupt")
    save_local_dir(make_tiny_clip(), root / "clip")
    make_image_folder(root / "data", ["cat", "dog", "ship"], {"train": 24, "test": 4})
    config = {
        "model": {"name": f"local-dir:{root / 'clip'}"},
        "data": {"dataset": "imagefolder", "root": str(root / "data"), "n1": 8, "m1": 8, "gamma_l": 2,
                 "gamma_u": 2, "batch_size": 4, "num_workers": 0, "eval_batch_size": 16},
        "strategy": {"name": "lft", "adapter_dim": 4},
        "method": {"name": "fixmatch", "threshold": 0.34},
        "optim": {"iterations": ITERATIONS, "warmup_iterations": 1, "lr": 0.05, "ema": 0.9},
        "train": {"eval_every": 4, "log_every": 1, "checkpoint_every": 1, "precision": "fp32", "device": "cpu"},
        "output": {"dir": str(root / "runs"), "tensorboard": False},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def reference(workspace: Path) -> Path:
    """The uninterrupted run (in this process)."""
    cfg = load_config(workspace / "config.yaml", ["output.name=reference"])
    Trainer(cfg).fit()
    return cfg.run_dir()


def start(*args: str) -> subprocess.Popen:
    """`python -m ulfine train ARGS` in its own process group (as a shell job would be)."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "ulfine", "--log-level", "WARNING", "train", *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )


def logged_iteration(run_dir: Path, since: float) -> int:
    """The last iteration in metrics.jsonl logged after time ``since`` (0 if none yet)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    done = 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line still being written
            continue
        if record["time"] >= since:
            done = max(done, record["iteration"])
    return done


def wait_for(proc: subprocess.Popen, run_dir: Path, iteration: int, since: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while logged_iteration(run_dir, since) < iteration:
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before iteration {iteration}:\n"
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no iteration {iteration} within {timeout} s")
        time.sleep(0.01)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


def tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=False)
    flat: dict[str, torch.Tensor] = {}
    for part in ("encoder", "method", "ema"):
        flat.update({f"{part}.{k}": v for k, v in state[part].items() if isinstance(v, torch.Tensor)})
    return flat


def metrics_without_time(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    final = json.loads((run_dir / "metrics.json").read_text())
    final.pop("train_seconds")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("time")
        record.get("cost", {}).pop("train_seconds", None)  # wall clock; images and FLOPs must match
    return final, records


def assert_same_run(run_dir: Path, reference: Path, story: str) -> None:
    ours, theirs = tensors(run_dir / "checkpoints" / "last.pt"), tensors(reference / "checkpoints" / "last.pt")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), f"{key} differs after {story}"
    final, records = metrics_without_time(run_dir)
    ref_final, ref_records = metrics_without_time(reference)
    assert final["top1"] == ref_final["top1"] and final["per_class"] == ref_final["per_class"], story
    assert final == ref_final, story
    assert records == ref_records, f"metrics.jsonl differs after {story}"


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(workspace: Path, reference: Path) -> None:
    config = str(workspace / "config.yaml")
    run_dir = workspace / "runs" / "killed"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    story = [f"seed {seed}"]
    target = rng.randint(1, 4)
    for _ in range(2):
        since = time.time()
        proc = start("--config", config, "output.name=killed", "output.resume=true")
        wait_for(proc, run_dir, target, since)
        delay = rng.uniform(0.0, 0.3)  # lands anywhere in a step, an evaluation or a checkpoint write
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        killed_after = logged_iteration(run_dir, since)
        story.append(f"SIGKILL {delay:.2f} s after iteration {killed_after}")
        target = min(killed_after + rng.randint(1, 3), ITERATIONS - 2)
    proc = start("--config", config, "output.name=killed", "output.resume=true")
    returncode, stderr = finish(proc)
    assert returncode == 0, stderr
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "a partial checkpoint was left behind"
    assert_same_run(run_dir, reference, ", ".join(story))


def test_sigint_and_sigterm_stop_with_a_checkpoint_and_the_resume_command(workspace: Path, reference: Path) -> None:
    """Ctrl-C reaches the whole process group, loader workers included; SIGTERM the main process."""
    run_dir = workspace / "runs" / "stopped"
    since = time.time()
    proc = start("--config", str(workspace / "config.yaml"), "output.name=stopped", "data.num_workers=2")
    wait_for(proc, run_dir, 2, since)
    os.killpg(proc.pid, signal.SIGINT)
    returncode, stderr = finish(proc)
    assert returncode == 130, stderr
    assert "SIGINT received: stopped at iteration" in stderr
    assert stderr.count("SIGINT") == 2, stderr  # the handler's notice once (not per loader worker), the summary
    stopped_at = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["iteration"]
    assert f"stopped at iteration {stopped_at} of {ITERATIONS}" in stderr
    command = stderr.rsplit("Resume with: ", 1)[1].strip()
    assert command == f"ulfine train --config {run_dir / 'config.yaml'} output.resume=true"

    since = time.time()
    proc = start("--config", str(run_dir))  # a run folder resumes it
    wait_for(proc, run_dir, stopped_at + 1, since)
    proc.send_signal(signal.SIGTERM)
    returncode, stderr = finish(proc)
    assert returncode == 143, stderr
    assert "SIGTERM received: stopped at iteration" in stderr

    proc = start(*shlex.split(command)[2:])  # the printed command, after `ulfine train`
    returncode, stderr = finish(proc)
    assert returncode == 0, stderr
    assert_same_run(run_dir, reference, "SIGINT, then SIGTERM")
