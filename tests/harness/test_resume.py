"""Exact resume: a real run killed with SIGKILL at seeded random points and resumed ends with the log of an uninterrupted run."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.records import RunInfo
from core.state_io import flatten, unflatten
from harness.checkpoint import ArmCheckpoints, ArmState, repair_logs, rng_state, set_rng_state

from conftest import HINDSIGHT

TINY = [
    "personalize", "-n", "8", "--batch-size", "2", "--eval-every", "4", "--eval-prompts", "2", "--max-new-tokens", "12",
    "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=2", "--checkpoint-every", "2", "--control", "--oracle", "--jobs", "2",
]
VOLATILE = {"timings", "seconds", "peak_memory_gb"}  # wall-clock and process-memory measurements: the only fields allowed to differ


def _trained_optimizer() -> torch.optim.AdamW:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return optimizer


def test_nested_state_round_trips_through_safetensors_and_json(tmp_path):
    optimizer = _trained_optimizer()
    state = {"trainer": {"optimizer": optimizer.state_dict()}, "rng": rng_state(), "note": [1, "a", None, 2.5]}
    checkpoints = ArmCheckpoints(tmp_path / "treated-s0")
    checkpoints.save(ArmState(step=3, done=8, failures=1, kept=4), state)
    latest = checkpoints.latest()
    assert (latest.step, latest.done, latest.failures, latest.kept, latest.folder) == (3, 8, 1, 4, "step-000003")
    loaded = checkpoints.load(latest)
    saved_opt, loaded_opt = state["trainer"]["optimizer"], loaded["trainer"]["optimizer"]
    assert saved_opt["state"].keys() == loaded_opt["state"].keys() == {0, 1}  # parameter indices stay ints
    for index, slots in saved_opt["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, loaded_opt["state"][index][name])
    assert loaded["note"] == [1, "a", None, 2.5]
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict(loaded_opt)  # torch accepts what came back
    assert fresh.param_groups[0]["lr"] == 0.1


def test_rng_state_restores_every_generator():
    saved = rng_state()
    skeleton, tensors = flatten(saved)
    first = (random.random(), np.random.rand(), torch.rand(2).tolist())
    set_rng_state(unflatten(json.loads(json.dumps(skeleton)), tensors))
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first


def test_a_newer_commit_replaces_the_older_and_leftovers_go(tmp_path):
    checkpoints = ArmCheckpoints(tmp_path / "control-s1")
    checkpoints.save(ArmState(step=0, done=2), {"x": torch.zeros(2)})
    (checkpoints.folder / "step-000009").mkdir()  # a folder a kill left half-written: no pointer names it
    checkpoints.save(ArmState(step=1, done=4), {"x": torch.ones(2)})
    assert sorted(p.name for p in checkpoints.folder.iterdir()) == ["latest.json", "step-000001"]
    assert torch.equal(checkpoints.load(checkpoints.latest())["x"], torch.ones(2))
    checkpoints.finish(ArmState(step=3, done=8))
    assert checkpoints.latest().finished and [p.name for p in checkpoints.folder.iterdir()] == ["latest.json"]


def test_repair_drops_torn_lines_and_work_after_the_commit(tmp_path):
    rows = [
        {"arm": "initial", "seed": 0, "interactions": 0},
        {"arm": "treated", "seed": 0, "step": 0, "index": 0},
        {"arm": "treated", "seed": 0, "step": 1, "index": 2},  # after the commit (step 0)
        {"arm": "control", "seed": 0, "step": 1, "index": 2},  # control: nothing committed
        {"arm": "treated", "seed": 0, "interactions": 2},
        {"arm": "treated", "seed": 0, "interactions": 4},  # an evaluation after the commit
    ]
    (tmp_path / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"arm": "treated", "se')
    states = {("treated", 0): ArmState(step=0, done=2), ("control", 0): None}
    repair = repair_logs(tmp_path, states, untrained_done=True)
    kept = [json.loads(line) for line in (tmp_path / "interactions.jsonl").read_text().splitlines()]
    assert kept == [rows[0], rows[1], rows[4]] and (repair.torn, repair.dropped) == (1, 3)
    repair_logs(tmp_path, states, untrained_done=False)  # the untrained evaluation did not finish: it is redone too
    assert [json.loads(line) for line in (tmp_path / "interactions.jsonl").read_text().splitlines()] == [rows[1], rows[4]]


def _log(run) -> dict[str, list[str]]:
    """Each log's records, volatile fields removed, sorted (arms write concurrently, so line order may differ)."""
    out = {}
    for name in ("interactions.jsonl", "metrics.jsonl", "samples.jsonl", "signals.jsonl"):
        rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
        out[name] = sorted(json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True) for r in rows)
    return out


def _lines(path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


@pytest.mark.slow
def test_the_untrained_marker_keeps_its_old_name_in_old_runs(tmp_path):
    from harness.loop import _untrained_marker

    assert _untrained_marker(tmp_path) == tmp_path / "state" / "untrained.json"  # a new run writes the new name
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "baseline.json").write_text('{"reference": []}')
    assert _untrained_marker(tmp_path) == tmp_path / "state" / "baseline.json"  # a run from before the rename still resumes
    (tmp_path / "state" / "untrained.json").write_text('{"reference": []}')
    assert _untrained_marker(tmp_path) == tmp_path / "state" / "untrained.json"


@pytest.mark.timeout(3600)  # six starts of the real run: 18 min on 2 busy cores (measured), more than the suite's 1800 s
def test_kill_9_at_seeded_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    ref = subprocess.run([*HINDSIGHT, *TINY, "--results", str(tmp_path), "--run-id", "ref"], capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    # the kill points (targets and delays) come from this seed: fixed, so a failure reproduces; HINDSIGHT_KILL_SEED tries others
    seed = int(os.environ.get("HINDSIGHT_KILL_SEED", "0"))
    rng = random.Random(seed)
    run = tmp_path / "killed"
    total = _lines(tmp_path / "ref" / "interactions.jsonl")
    # each kill waits until the log holds this many interactions (0: during start-up and the untrained evaluation), then a random delay;
    # each target lies past the last one, so every resumed process has to redo what was cut and go further before it dies
    targets = [0]
    while len(targets) < 5:
        targets.append(targets[-1] + rng.randint(1, 3))
    assert targets[-1] < total - 1
    kills = []
    for n, target in enumerate(targets):
        args = [*TINY, "--results", str(tmp_path), "--run-id", "killed"] if n == 0 else ["personalize", "--resume", "killed", "--results", str(tmp_path)]
        with (tmp_path / f"attempt-{n}.log").open("w") as log:
            proc = subprocess.Popen([*HINDSIGHT, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and (_lines(run / "interactions.jsonl") < target or not (run / "config.yaml").is_file()):
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 3))
        assert proc.poll() is None, f"the run ended before kill {n + 1} (seed {seed}): {(tmp_path / f'attempt-{n}.log').read_text()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        committed = {p.parent.name: json.loads(p.read_text())["done"] for p in (run / "state").glob("*/latest.json")} if (run / "state").is_dir() else {}
        kills.append({"after_interaction_records": _lines(run / "interactions.jsonl"), "committed": committed})
        time.sleep(0.5)  # let the killed group's children go before the next start
    final = subprocess.run([*HINDSIGHT, "personalize", "--resume", "killed", "--results", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stdout + final.stderr
    print(f"kill seed {seed}: {json.dumps(kills)}")
    assert len(kills) == 5
    assert "resuming killed" in final.stdout
    assert _log(run) == _log(tmp_path / "ref"), f"kill seed {seed}"  # nothing lost, nothing duplicated, the same numbers
    info = RunInfo.model_validate_json((run / "run.json").read_text())
    assert info.status == "finished" and info.resumed  # (a process killed before it wrote run.json leaves no entry)
    from safetensors.torch import load_file

    for name in ("model.safetensors",):
        a, b = load_file(str(run / "checkpoints" / "treated-s0" / name)), load_file(str(tmp_path / "ref" / "checkpoints" / "treated-s0" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_finished_run_grown_by_seeds_equals_a_run_started_with_them(tmp_path):
    """--resume RUN --seeds 2 on a finished one-seed run trains seed 1 as a two-seed run would have (one arm at a time: --jobs
    changes no number): the same logs and report."""
    tiny = [a for a in TINY if a not in ("--control", "--oracle")] + ["--no-control", "--no-oracle", "--results", str(tmp_path)]
    ref = subprocess.run([*HINDSIGHT, *tiny, "--seeds", "2", "--run-id", "ref"], capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    one = subprocess.run([*HINDSIGHT, *tiny, "--run-id", "grown"], capture_output=True, text=True, timeout=1200)
    assert one.returncode == 0, one.stdout + one.stderr
    fewer = subprocess.run([*HINDSIGHT, "personalize", "--resume", "grown", "--seeds", "1", "--results", str(tmp_path)], capture_output=True, text=True)
    assert fewer.returncode == 2 and "nothing to resume" in fewer.stdout + fewer.stderr  # the same count: a finished run
    grow = subprocess.run([*HINDSIGHT, "personalize", "--resume", "grown", "--seeds", "2", "--jobs", "1", "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    assert grow.returncode == 0, grow.stdout + grow.stderr
    assert _log(tmp_path / "grown") == _log(tmp_path / "ref")
    assert "2 seed(s)" in (tmp_path / "grown" / "summary.md").read_text()
    assert RunInfo.model_validate_json((tmp_path / "grown" / "run.json").read_text()).status == "finished"
    drop = subprocess.run([*HINDSIGHT, "personalize", "--resume", "grown", "--seeds", "1", "--results", str(tmp_path)], capture_output=True, text=True)
    assert drop.returncode == 2 and "never drops seeds" in drop.stdout + drop.stderr


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _tiny_run_under_way(tmp_path, **popen) -> tuple[subprocess.Popen, set[int]]:
    """A TINY run in its own session, once it logged its first interaction: the process, and its arm workers and event
    queue's manager (not multiprocessing's resource tracker, which exits by itself once every holder has gone)."""
    proc = subprocess.Popen([*HINDSIGHT, *TINY, "--no-oracle", "--results", str(tmp_path), "--run-id", "r"], stderr=subprocess.STDOUT,
                            start_new_session=True, **popen)
    while proc.poll() is None and _lines(tmp_path / "r" / "interactions.jsonl") < 1:
        time.sleep(0.05)
    assert proc.poll() is None
    children = _children(proc.pid)
    return proc, children - {_tracker(c) for c in children}


def _outliving(workers: set[int], seconds: float = 10) -> set[int]:
    """The workers still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(c) for c in workers):
        time.sleep(0.1)
    return {c for c in workers if _alive(c)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dying with the parent is Linux's PR_SET_PDEATHSIG")
def test_arm_workers_die_with_a_run_killed_by_pid(tmp_path):
    """`kill -9 PID` of the run alone (not its group): its arm workers and event queue go with it, and nothing more is written."""
    proc, workers = _tiny_run_under_way(tmp_path, stdout=subprocess.DEVNULL)
    log = tmp_path / "r" / "interactions.jsonl"
    try:
        assert len(workers) >= 3  # two arm workers and the event queue's manager
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _outliving(workers)
        written = _lines(log)
        time.sleep(3)
        assert not _outliving(workers, 0), "an arm worker outlived its run"
        assert _lines(log) == written
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _tracker(pid: int) -> int | None:
    """``pid`` when it is multiprocessing's resource tracker (it exits by itself once every holder has gone)."""
    try:
        return pid if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except OSError:
        return None


def test_resume_refuses_other_options_and_unknown_runs(tmp_path):
    other = subprocess.run([*HINDSIGHT, "personalize", "--resume", "x", "-n", "4", "--results", str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 2 and "leave out --interactions" in other.stdout + other.stderr
    missing = subprocess.run([*HINDSIGHT, "personalize", "--resume", "nope", "--results", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and "not a run folder" in missing.stdout + missing.stderr


@pytest.mark.slow
def test_an_ema_teacher_run_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    """The EMA teacher's weights are trainer state: a run with --teacher ema (and a distribution loss at α = 0.5), killed once
    after its arms committed a checkpoint and resumed, ends with the log and weights of an uninterrupted run."""
    ema = [*TINY, "--teacher", "ema", "--set", "trainer.ema_rate=0.5", "--loss", "topk_kl", "--alpha", "0.5", "--no-oracle"]
    ref = subprocess.run([*HINDSIGHT, *ema, "--results", str(tmp_path), "--run-id", "ref"], capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    run = tmp_path / "killed"
    with (tmp_path / "attempt.log").open("w") as log:
        proc = subprocess.Popen([*HINDSIGHT, *ema, "--results", str(tmp_path), "--run-id", "killed"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    committed = run / "state" / "treated-s0" / "latest.json"
    while proc.poll() is None and not (committed.is_file() and json.loads(committed.read_text())["done"] >= 4):
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "attempt.log").read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    final = subprocess.run([*HINDSIGHT, "personalize", "--resume", "killed", "--results", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0 and "resuming killed" in final.stdout, final.stdout + final.stderr
    assert _log(run) == _log(tmp_path / "ref")
    from safetensors.torch import load_file

    a, b = (load_file(str(r / "checkpoints" / "treated-s0" / "model.safetensors")) for r in (run, tmp_path / "ref"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
def test_sigterm_stops_a_run_like_ctrl_c(tmp_path):
    """SIGTERM to the run's process alone (a scheduler's stop): its arm workers stop at once, run.json says the run was
    interrupted, the command says how to resume it and exits 130, and the resumed run finishes."""
    proc, workers = _tiny_run_under_way(tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
        assert "interrupted" in out and "`hindsight personalize --resume r` continues" in out
        assert not _outliving(workers), "an arm worker outlived its run"
        info = json.loads((tmp_path / "r" / "run.json").read_text())
        assert info["status"] == "failed" and info["error"] == "interrupted (Ctrl-C or SIGTERM)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    final = subprocess.run([*HINDSIGHT, "personalize", "--resume", "r", "--threads", "1", "--results", str(tmp_path)],
                           capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stdout + final.stderr
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "finished"
