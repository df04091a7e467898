"""Reading a run folder's metric files (what the Trainer writes), without importing the engine.

``metrics.jsonl`` holds one record per write: training records ``{"iteration", "time",
"loss/<name>": ..., "lr"}`` and evaluation records ``{"iteration", "test": {...},
"pseudo": {...}, "method": {...}}``. ``series`` pulls one value out of them over iterations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ulfine.errors import RunFolderError
from ulfine.runfolder import RunFolder


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` in file order ([] when there is none).

    A cut-off last line (a run killed while writing it; its resume drops it too) is left out;
    a broken line elsewhere is an error naming it."""
    path = RunFolder(run_dir).metrics_log
    if not path.is_file():
        return []
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise RunFolderError(f"'{path}' line {number} is not valid JSON: {err}") from err
    return records


def read_final_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_dir/metrics.json`` (written when training finished), or None before that."""
    path = RunFolder(run_dir).final_metrics
    return json.loads(path.read_text()) if path.is_file() else None


def lookup(record: dict[str, Any], key: str) -> Any:
    """``record[key]`` when present as is (``"loss/total"``), else a '/'-separated path
    (``"test/top1"`` -> record["test"]["top1"]); None where missing."""
    if key in record:
        return record[key]
    value: Any = record
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[Any]]:
    """(iterations, values) of ``key`` over the records that have it (see ``lookup``)."""
    iterations, values = [], []
    for record in records:
        value = lookup(record, key)
        if value is not None:
            iterations.append(int(record["iteration"]))
            values.append(value)
    return iterations, values


def loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """The ``loss/<name>`` keys that occur in the records, in first-seen order."""
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(k for k in record if k.startswith("loss/")))
    return list(keys)
