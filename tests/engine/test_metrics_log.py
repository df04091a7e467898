"""metrics.jsonl rewind on resume: steps after the checkpoint and a line cut short by a kill go."""
from __future__ import annotations

import json
from pathlib import Path

from ulfine.engine.metrics_log import count_records, read_metrics_log, rewind_metrics_log


def test_rewind_drops_later_records_and_a_partial_line(tmp_path: Path) -> None:
    lines = [json.dumps({"iteration": i, "loss": float(i)}) for i in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 5, "lo')
    assert rewind_metrics_log(tmp_path, 2) == 3
    assert [r["iteration"] for r in read_metrics_log(tmp_path)] == [1, 2]
    assert rewind_metrics_log(tmp_path, 2) == 0
    assert rewind_metrics_log(tmp_path / "absent", 2) == 0


def test_rewind_to_the_record_count_drops_a_final_record_of_the_same_iteration(tmp_path: Path) -> None:
    """A kill after the last checkpoint but during the final evaluation: the final record has
    the checkpoint's iteration, yet the resumed run writes it again, so it must go."""
    lines = [json.dumps({"iteration": 10, "loss": 1.0}), json.dumps({"iteration": 10, "test": {"top1": 50.0}})]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert count_records(tmp_path) == 2
    assert rewind_metrics_log(tmp_path, 10, records=1) == 1
    assert read_metrics_log(tmp_path) == [{"iteration": 10, "loss": 1.0}]


def _tb_points(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_logged_losses_are_exact_across_a_resume(tiny_clip_dir: Path, tiny_folder: Path, tmp_path: Path) -> None:
    """Killed after the record of iteration 4 with its checkpoint at 3, then resumed: the loss
    records (averaging iterations 3-4 and 5-6) and the TensorBoard points equal a straight run's.
    Was: the sums of iteration 3 were lost and the record still divided by log_every."""
    import shutil

    from tests.engine.test_trainer import tiny_config
    from ulfine.engine.trainer import Trainer

    def config(out: Path, *extra: str):
        return tiny_config(tiny_clip_dir, tiny_folder, out, "output.name=run", "output.tensorboard=true",
                           "train.log_every=2", "train.checkpoint_every=3", "train.eval_every=100", *extra)

    Trainer(config(tmp_path / "a")).fit()
    b = config(tmp_path / "b")
    Trainer(b).fit(until=3)
    saved = tmp_path / "at3.pt"
    shutil.copy(b.run_dir() / "checkpoints" / "last.pt", saved)
    Trainer(config(tmp_path / "b", "output.resume=true")).fit(until=5)  # logs iteration 4 ...
    shutil.copy(saved, b.run_dir() / "checkpoints" / "last.pt")  # ... then dies before checkpointing again
    Trainer(config(tmp_path / "b", "output.resume=true")).fit()

    def losses(run_dir: Path) -> list[dict]:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k.startswith("loss/") or k in ("iteration", "method_train")}
                for r in records if any(k.startswith("loss/") for k in r)]

    straight, resumed = losses(tmp_path / "a" / "run"), losses(b.run_dir())
    assert [r["iteration"] for r in resumed] == [2, 4, 6]
    assert "method_train" in straight[0]  # StepOutput.logs' window sums are checkpointed like the losses'
    assert resumed == straight
    tag = next(k for k in straight[0] if k.startswith("loss/"))
    points = _tb_points(b.run_dir(), tag)
    assert [step for step, _ in points] == [2, 4, 6]  # the killed run's point at 4 is purged
    assert points == _tb_points(tmp_path / "a" / "run", tag)
