"""metrics.jsonl rewind on resume: steps after the checkpoint and a line cut short by a kill go."""
from __future__ import annotations

import json
from pathlib import Path

from ulfine.engine.metrics_log import read_metrics_log, rewind_metrics_log


def test_rewind_drops_later_records_and_a_partial_line(tmp_path: Path) -> None:
    lines = [json.dumps({"iteration": i, "loss": float(i)}) for i in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 5, "lo')
    assert rewind_metrics_log(tmp_path, 2) == 3
    assert [r["iteration"] for r in read_metrics_log(tmp_path)] == [1, 2]
    assert rewind_metrics_log(tmp_path, 2) == 0
    assert rewind_metrics_log(tmp_path / "absent", 2) == 0
