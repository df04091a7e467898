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
