"""bench/compare.py: cell plan, skip-finished logic, override order and the table, without training."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.scripts import load_script
from ulfine.config import load_config


@pytest.fixture(scope="module")
def compare():
    return load_script("compare")


def _finish(run_dir: Path, top1: float) -> None:
    run_dir.mkdir(parents=True)
    metrics = {"top1": top1, "head": top1, "medium": top1, "tail": top1, "train_seconds": 120.0}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_every_cell_and_setting_is_a_valid_config(compare, tmp_path: Path) -> None:
    for job in compare.plan(list(compare.SETTINGS), list(compare.CELLS), [0]):
        cfg = load_config(compare.BASE_CONFIG, job.overrides(tmp_path, 7, []))
        assert cfg.run_dir() == job.run_dir(tmp_path)
        assert cfg.optim.iterations == (0 if job.cell == "zeroshot" else 7)


def test_cell_overrides_win_and_settings_apply(compare, tmp_path: Path) -> None:
    cfg = load_config(compare.BASE_CONFIG,
                      compare.Job("uniform", "ulfine-text-only", 1).overrides(tmp_path, None, ["method.name=acr"]))
    assert (cfg.method.name, cfg.method.options.fusion, cfg.strategy.name) == ("ulfine", "text", "lft")
    assert (cfg.data.distribution, cfg.data.gamma_u, cfg.train.seed) == ("uniform", 1.0, 1)


def test_finished_cells_are_skipped(compare, tmp_path: Path) -> None:
    jobs = compare.plan(["consistent", "reversed"], ["lp-fixmatch", "ulfine"], [0, 1])
    _finish(compare.Job("consistent", "ulfine", 1).run_dir(tmp_path), 80.0)
    (compare.Job("reversed", "lp-fixmatch", 0).run_dir(tmp_path) / "checkpoints").mkdir(parents=True)  # unfinished
    todo = compare.pending(jobs, tmp_path)
    assert len(todo) == 7 and compare.Job("consistent", "ulfine", 1) not in todo
    assert compare.Job("reversed", "lp-fixmatch", 0) in todo


def test_dry_run_prints_only_missing_commands(compare, tmp_path: Path, capsys) -> None:
    _finish(compare.Job("consistent", "lp-acr", 0).run_dir(tmp_path), 70.0)
    args = ["--cells", "lp-acr,zeroshot", "--settings", "consistent", "--seeds", "0", "--out", str(tmp_path),
            "--iterations", "5", "--dry-run"]
    assert compare.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "-m ulfine train --config" in lines[0]
    assert lines[0].endswith("strategy.name=zeroshot optim.iterations=0 method.name=fixmatch")


def test_unknown_cell_names_the_culprit(compare) -> None:
    with pytest.raises(SystemExit, match="lp-fixmach"):
        compare.choose("lp-fixmach", compare.CELLS, "cells")


def test_table_only_aggregates_finished_seeds(compare, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compare, "RESULTS", tmp_path / "results")
    for seed, top1 in ((0, 70.0), (1, 74.0)):
        _finish(compare.Job("reversed", "fft-acr", seed).run_dir(tmp_path / "runs"), top1)
    args = ["--table-only", "--cells", "fft-acr,ulfine", "--settings", "reversed", "--out", str(tmp_path / "runs"),
            "--tag", "t"]
    assert compare.main(args) == 0
    text = (tmp_path / "results" / "compare-t.md").read_text()
    assert "| fft-acr | 2 | 72.00 ± 2.83 | 72.00 ± 2.83 | 72.00 ± 2.83 | 72.00 ± 2.83 | n/a | n/a | n/a | n/a | 2.00 ± 0.00 |" in text
    assert "| ulfine | 0 | n/a |" in text
    # each seed's own values are kept beside the mean, so the table can be pooled later
    assert "| fft-acr | 0 | 70.00 | 70.00 | 70.00 | 70.00 | n/a | n/a | n/a | n/a | 2.00 |" in text
    assert "| fft-acr | 1 | 74.00 | 74.00 | 74.00 | 74.00 | n/a | n/a | n/a | n/a | 2.00 |" in text
    assert "| ulfine |" not in text.split("## Each seed's values")[1]
    assert "- commit: `" in text and "CPUs" in text
    # the command line names how the cells are trained, not the rebuild
    command = f"python bench/compare.py --cells fft-acr,ulfine --settings reversed --out {tmp_path / 'runs'} --tag t"
    assert f"- command: `{command}`" in text


def test_a_failing_cell_does_not_stop_the_others(compare, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compare, "RESULTS", tmp_path / "results")
    crash = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    finish = [sys.executable, "-c", "import sys, pathlib; p = pathlib.Path(sys.argv[1]); "
              "p.mkdir(parents=True, exist_ok=True); (p / 'metrics.json').write_text('{\"top1\": 50.0}')"]
    jobs = compare.plan(["consistent"], ["lp-acr", "lft-acr"], [0])
    commands = {jobs[0]: crash, jobs[1]: [*finish, str(jobs[1].run_dir(tmp_path))]}
    failed, interrupted = compare.run_pending(jobs, tmp_path, commands.__getitem__)
    assert failed == [jobs[0]] and not interrupted
    assert "boom" in (jobs[0].run_dir(tmp_path) / "compare.log").read_text()
    assert compare.pending(jobs, tmp_path) == [jobs[0]]


def test_a_cell_finished_by_another_process_meanwhile_is_not_run_again(compare, tmp_path: Path) -> None:
    # two processes sharing --out plan the same cell; the second to reach it must not train it again
    first, second = compare.plan(["consistent"], ["lp-acr", "lft-acr"], [0])
    write = [sys.executable, "-c", "import sys, pathlib; p = pathlib.Path(sys.argv[1]); "
             "p.mkdir(parents=True, exist_ok=True); (p / 'metrics.json').write_text('{\"top1\": 50.0}')"]
    launched = []

    def command_of(job):
        launched.append(job)
        if job == first:  # while the first cell trains, "another process" finishes the second
            _finish(second.run_dir(tmp_path), 60.0)
        return [*write, str(job.run_dir(tmp_path))]

    failed, interrupted = compare.run_pending([first, second], tmp_path, command_of)
    assert launched == [first] and not failed and not interrupted
    assert json.loads((second.run_dir(tmp_path) / "metrics.json").read_text())["top1"] == 60.0


def test_provenance_lists_each_commit_that_trained_a_finished_cell(compare, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compare, "RESULTS", tmp_path / "results")
    runs = tmp_path / "runs"
    monkeypatch.setattr(compare, "git_commit", lambda: "aaa111")
    compare.record_launch(compare.Job("consistent", "lp-acr", 0).run_dir(runs), ["python", "-m", "ulfine", "train"])
    monkeypatch.setattr(compare, "git_commit", lambda: "bbb222")  # resumed under a later commit
    compare.record_launch(compare.Job("consistent", "lp-acr", 0).run_dir(runs), ["python", "-m", "ulfine", "train"])
    _finish_existing = compare.Job("consistent", "lp-acr", 0).run_dir(runs) / "metrics.json"
    _finish_existing.write_text(json.dumps({"top1": 1.0, "head": 1.0, "medium": 1.0, "tail": 1.0}))
    _finish(compare.Job("consistent", "zeroshot", 0).run_dir(runs), 30.0)  # no provenance file
    compare.record_launch(compare.Job("consistent", "lp-fixmatch", 0).run_dir(runs), ["x"])  # unfinished: not listed
    args = ["--table-only", "--cells", "zeroshot,lp-fixmatch,lp-acr", "--settings", "consistent", "--seeds", "0",
            "--out", str(runs), "--tag", "p"]
    assert compare.main(args) == 0
    text = (tmp_path / "results" / "compare-p.md").read_text()
    assert "- `aaa111`: consistent/lp-acr/s0" in text and "- `bbb222`: consistent/lp-acr/s0" in text
    assert "- `not recorded`: consistent/zeroshot/s0" in text
    assert "lp-fixmatch/s0" not in text.split("Which commit")[1]


def test_cells_are_rows_of_the_data_file(compare, tmp_path: Path) -> None:
    """A cell is a name and its overrides in compare_cells.yaml; a malformed row is named."""
    import yaml

    table = yaml.safe_load(compare.CELLS_FILE.read_text())
    assert list(compare.CELLS) == list(table["cells"]) and compare.CELLS["lp-acr"] == table["cells"]["lp-acr"]
    bad = tmp_path / "cells.yaml"
    bad.write_text("settings: {consistent: []}\ncells: {lp-acr: strategy.name=lp}\n")
    with pytest.raises(SystemExit, match="cells.lp-acr must be a list of key=value"):
        compare.load_table(bad)
    extended = tmp_path / "more.yaml"
    extended.write_text("settings: {consistent: []}\ncells: {lp-new: [strategy.name=lp, method.name=acr]}\n")
    assert compare.load_table(extended) == ({"consistent": []}, {"lp-new": ["strategy.name=lp", "method.name=acr"]})


def test_commit_is_dirty_for_code_changes_but_not_for_the_benchmarks_own_results(compare, tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "table.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    clean = compare.git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "bench" / "results" / "table.md").write_text("rewritten by a running benchmark\n")
    assert compare.git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert compare.git_commit(tmp_path) == clean + "-dirty"
