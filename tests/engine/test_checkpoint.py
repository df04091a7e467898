"""Atomic checkpoint writes, readable errors for broken checkpoints, resume config comparison."""
from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from ulfine.engine import checkpoint as ckpt


class FailsHalfway:
    """Pickling it raises after torch.save has started writing, like a crash mid-write."""

    def __reduce__(self) -> tuple:
        raise OSError("disk full")


def test_failed_write_keeps_the_previous_checkpoint_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt.atomic_save({"config": {}, "weights": torch.arange(4)}, path)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_save({"config": {}, "weights": torch.zeros(1000), "bad": FailsHalfway()}, path)
    assert torch.equal(ckpt.load_checkpoint(path)["weights"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_stale_temps_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    ckpt.atomic_save({"config": {}}, tmp_path / "last.pt")
    (tmp_path / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    assert ckpt.remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, pickle.dumps([1, 2]), "half"])
def test_broken_checkpoint_names_the_file_and_the_alternatives(content: bytes | str, tmp_path: Path) -> None:
    ckpt.atomic_save({"config": {}, "weights": torch.randn(100)}, tmp_path / "best.pt")
    last = tmp_path / "last.pt"
    whole = (tmp_path / "best.pt").read_bytes()
    last.write_bytes(whole[: len(whole) // 2] if content == "half" else content)
    with pytest.raises(ckpt.CheckpointError, match="best.pt") as info:
        ckpt.load_checkpoint(last)
    assert str(last) in str(info.value)


def test_broken_checkpoint_without_alternatives_says_so(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="No other checkpoint exists"):
        ckpt.load_checkpoint(tmp_path / "last.pt")


def test_config_changes_lists_differing_dotted_keys_except_allowed() -> None:
    saved = {"data": {"n1": 8, "root": "a"}, "method": {"acr": {"tau_range": [0.0, 1.0, 2.0]}},
             "train": {"eval_every": 5}}
    current = {"data": {"n1": 6, "root": "a"}, "method": {"acr": {"tau_range": (0.0, 1.0, 2.0)}},
               "train": {"eval_every": 1, "new_key": 1}}
    assert ckpt.config_changes(saved, current, frozenset({"train.eval_every"})) == [
        "data.n1: 8 -> 6", "train.new_key: '<absent>' -> 1",
    ]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_files_follow_the_umask(mask: int, tmp_path: Path) -> None:
    old = os.umask(mask)
    try:
        ckpt.atomic_write_text(tmp_path / "metrics.json", "{}")
        ckpt.atomic_save({"config": {}}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    for name in ("metrics.json", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
