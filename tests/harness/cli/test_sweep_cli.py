"""`hindsight sweep` on bad input: every spec error is one line naming file:line and the spec field, exit 2, before any model
loads; the dry run lists the cells and what they share."""

from __future__ import annotations

import json

import pytest

SPECS = [
    # (spec text, line, field, part of the message)
    ("profiles: [concise]\nseed: 3\n", 2, "seed", "unknown field (allowed here: grid, methods, name, profiles, seeds, set)"),
    ("profiles: concise\n", 1, "profiles", "a list of profile names or paths, or 'all'"),
    ("profiles:\n  - concise\n  - nosuch\n", 3, "profiles.1", "unknown profile 'nosuch'"),
    ("profiles:\n  - concise\n  - concise\n", 2, "profiles", "'concise' is listed twice"),
    ("profiles: [no_emojis, insulting]\n", 1, "profiles.1", "adversarial"),
    ("profiles: [concise]\nseeds: 0\n", 2, "seeds", "a count (at least 1) or a list of distinct integer seeds"),
    ("profiles: [concise]\nseeds: [1, 1]\n", 2, "seeds", "distinct"),
    ("profiles: [concise]\nmethods:\n  - sdpo\n  - nope\n", 4, "methods.1", "unknown trainer method 'nope'"),
    ("profiles: [concise]\nset:\n  interactions: 64\n  trainer.lr: fast\n", 4, "set.trainer.lr", "valid number"),
    ("profiles: [concise]\nset:\n  trainer.lrr: 1\n", 3, "set.trainer.lrr", "unknown field (allowed here:"),
    ("profiles: [concise]\nset:\n  seed: 3\n", 3, "set.seed", "'seed' is set by the spec's own 'seeds' field"),
    ("profiles: [concise]\nset:\n  batch_size: 4\n  eval.every: 6\n", 3, "set", "eval.every (6) must be a multiple of batch_size (4)"),
    ("profiles: [concise]\ngrid:\n  trainer.lr: 1e-5\n", 3, "grid.trainer.lr", "valid list"),
    ("profiles: [concise]\ngrid:\n  trainer.lr:\n    - 1e-5\n    - fast\n", 5, "grid.trainer.lr", "valid number"),
    ("profiles: [concise]\ngrid:\n  trainer.lr: []\n", 3, "grid.trainer.lr", "give at least one value"),
    ("profiles: [concise\n", 2, None, "invalid YAML"),
    ("name: my sweep\nprofiles: [concise]\n", 1, "name", "sweep name 'my sweep': use letters, digits"),
]


def one_line(result) -> str:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("text, line, field, message", SPECS)
def test_a_bad_spec_is_one_line_with_file_line_and_field(cli, tmp_path, text, line, field, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text, encoding="utf-8")
    error = one_line(cli("sweep", str(spec), "--results", str(tmp_path / "results")))
    assert f"{spec}:{line}:" in error, error
    if field:
        assert f"field '{field}'" in error, error
    assert message in error, error
    assert not (tmp_path / "results").exists()  # nothing was started


def test_command_line_mistakes_name_the_option(cli, tmp_path):
    spec = tmp_path / "ok.yaml"
    spec.write_text("profiles: [concise]\n", encoding="utf-8")
    assert "--set trainer.lr=fast" in one_line(cli("sweep", str(spec), "--set", "trainer.lr=fast", "--dry-run"))
    assert "'seed' is set by the spec's own 'seeds'" in one_line(cli("sweep", str(spec), "--set", "seed=2", "--dry-run"))
    assert "--executor ray needs --address" in one_line(cli("sweep", str(spec), "--executor", "ray"))
    assert "no such spec file" in one_line(cli("sweep", str(tmp_path / "missing.yaml")))
    assert "name the sweep" in one_line(cli("sweep", "status"))
    assert "not a sweep folder" in one_line(cli("sweep", "status", "nosuch", "--results", str(tmp_path)))
    assert "sweep name 'bad name': use letters" in one_line(cli("sweep", str(spec), "--name", "bad name", "--dry-run"))


def test_dry_run_lists_every_cell_and_the_shared_controls(cli, tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("name: g\nprofiles: [concise, no_emojis, detailed]\nseeds: [0, 5]\ngrid:\n  trainer.lr: [1.0e-5, 2.0e-5]\n", encoding="utf-8")
    result = cli("sweep", str(spec), "--dry-run", "--results", str(tmp_path), columns=250)
    assert result.code == 0, result
    assert "12 cells (3 profiles × 2 seed(s) × 2 method/grid point(s)); 4 shared control arm(s) for 8 cells" in result.stdout
    assert "sdpo-detailed-lr_2e-05-s5" in result.stdout and "its own" in result.stdout  # alone in its budget group
    assert not (tmp_path / "g").exists()


def test_all_is_every_benign_shipped_profile(cli, tmp_path):
    spec = tmp_path / "all.yaml"
    spec.write_text("profiles: all\n", encoding="utf-8")
    result = cli("sweep", str(spec), "--dry-run", columns=250)
    assert result.code == 0, result
    assert "34 cells (34 profiles × 1 seed(s)" in result.stdout and "insulting" not in result.stdout and "reckless" not in result.stdout


def test_status_of_a_sweep_reads_its_folder(cli, tmp_path):
    folder = tmp_path / "s"
    (folder / "status").mkdir(parents=True)
    plan = {"name": "s", "spec": "s.yaml", "controls": [], "cells": [
        {"id": "sdpo-concise-s0", "profile": "concise", "seed": 0, "method": "sdpo", "grid": {}, "variant": "sdpo", "control": None,
         "interactions": 8, "arms": 2},
        {"id": "sdpo-no_emojis-s0", "profile": "no_emojis", "seed": 0, "method": "sdpo", "grid": {}, "variant": "sdpo", "control": None,
         "interactions": 8, "arms": 2}]}
    (folder / "plan.json").write_text(json.dumps(plan))
    (folder / "status" / "sdpo-concise-s0.json").write_text(json.dumps({"state": "failed", "error": "RunError: the provider", "node": "n1"}))
    (folder / "status" / "sdpo-no_emojis-s0.json").write_text(json.dumps({"state": "running", "node": "n2"}))
    (folder / "runs" / "sdpo-no_emojis-s0").mkdir(parents=True)
    (folder / "runs" / "sdpo-no_emojis-s0" / "interactions.jsonl").write_text("{}\n" * 4)
    result = cli("sweep", "status", "s", "--results", str(tmp_path), "--json")
    status = json.loads(result.stdout)
    assert status["cells"]["failed"] == 1 and status["cells"]["interrupted"] == 1  # no driver holds the lock: it stopped
    rows = {r["id"]: r for r in status["tasks"]}
    assert rows["sdpo-concise-s0"]["error"] == "RunError: the provider" and rows["sdpo-no_emojis-s0"]["progress"] == 0.25
    table = cli("sweep", "status", str(folder), columns=200).stdout
    assert "failed" in table and "interrupted" in table and "25%" in table and "rerun the sweep's command" in table
