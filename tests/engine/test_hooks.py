"""The trainer's periodic hooks: their order, StepOutput.logs in metrics.jsonl, the batched
finiteness check and the renamed best-selection counter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.engine.test_trainer import tiny_config
from ulfine.engine.hooks import EvaluateAndSelect, SaveCheckpoint, WriteMetrics, periodic_hooks
from ulfine.engine.trainer import NonFiniteLossError, Trainer, TrainState
from ulfine.methods.base import StepOutput


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_hooks_run_metrics_then_evaluation_then_checkpoint() -> None:
    assert [type(h) for h in periodic_hooks(log=None, bar=None)] == [WriteMetrics, EvaluateAndSelect, SaveCheckpoint]


def test_a_checkpoint_at_an_evaluation_step_holds_that_evaluation(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """Evaluation and checkpoint at iteration 3: last.pt written then carries the best selection
    of iteration 3 and counts its evaluation record, so a resume from it neither loses the
    selection nor logs the evaluation twice."""
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=run", "data.val_per_class=2",
                      "train.eval_every=3", "train.checkpoint_every=3")
    trainer = Trainer(cfg)
    saved: dict[int, dict] = {}
    real_save = trainer.save_checkpoint

    def save(name: str) -> None:
        real_save(name)
        if name == "last" and trainer.state.iteration == 3:
            saved[3] = torch.load(trainer.folder.last_checkpoint, weights_only=False)
            saved[3]["lines"] = len(records(trainer.run_dir))

    trainer.save_checkpoint = save
    trainer.fit()
    state = saved[3]
    assert state["train_state"]["best_iteration"] == 3 and state["train_state"]["best_val_class_mean"] >= 0
    assert state["metrics_records"] == state["lines"] and "val" in records(trainer.run_dir)[state["lines"] - 1]


def test_step_logs_are_averaged_per_window_into_metrics_jsonl(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_clip_dir, tiny_folder, tmp_path / "runs", "output.name=run", "method.name=fixmatch",
                      "train.log_every=2")
    trainer = Trainer(cfg)
    method, real_step, calls = trainer.learner.method, trainer.learner.method.step, []

    def step(*args) -> StepOutput:
        out = real_step(*args)
        calls.append(1)
        out.logs.update(probe=torch.tensor(float(len(calls))), pair=torch.tensor([1.0, 2.0]) * len(calls))
        return out

    method.step = step
    trainer.fit()
    windows = [r["method_train"] for r in records(trainer.run_dir) if "method_train" in r]
    assert [w["probe"] for w in windows] == [1.5, 3.5, 5.5]  # steps 1-2, 3-4, 5-6
    assert windows[0]["pair"] == [1.5, 3.0] and 0 <= windows[0]["mask_rate"] <= 1


def test_non_finite_terms_are_named_from_one_batched_check(
    tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(tiny_clip_dir, tiny_folder, tmp_path, "method.name=ulfine"))
    terms = [("sup_lp", torch.tensor(1.0)), ("unsup_lp", torch.tensor(float("inf"))),
             ("sup_lp", torch.tensor(2.0)), ("unsup_lp", torch.tensor(float("nan")))]
    with pytest.raises(NonFiniteLossError, match=r"^loss term 'unsup_lp' is inf at iteration 0; stopped"):
        trainer._check_finite(terms)

    checks = []
    real_isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda x: checks.append(x.shape) or real_isfinite(x))
    trainer.train_step()
    assert len(checks) == 1 and checks[0][0] > 1  # every loss term of the step in one check


def test_old_checkpoints_name_the_best_validation_accuracy_best_top1() -> None:
    state = TrainState.from_checkpoint({"iteration": 9, "best_top1": 41.5, "best_iteration": 6})
    assert state.best_val_class_mean == 41.5 and state.best_iteration == 6 and state.iteration == 9
