"""Sweeps: the plan and what its cells share, a shared control's records installed into a cell, the report's verdicts, and real
tiny sweeps: local, killed and resumed, with a failing cell, and on a two-node Ray cluster, each compared record by record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.errors import UserInputError
from core.records import EvalRecord, InteractionRecord, SampleRecord, SignalRecord, TrainRecord
from harness.checkpoint import ArmCheckpoints, ArmState
from harness.sweep.executors import GB, LocalExecutor, local_slots, reachable
from harness.sweep.report import load_cells, profile_row, table_lines, write_report
from harness.sweep.spec import control_key, make_plan
from harness.sweep.worker import control_records, install_control, locked

from conftest import HINDSIGHT

TINY = """name: tiny
profiles: [concise, no_emojis]
seeds: 1
set:
  interactions: 8
  batch_size: 4
  eval.every: 4
  prompts.eval_prompts: 2
  generation.max_new_tokens: 12
  eval.max_new_tokens: 12
  eval.kl_prompts: 2
  checkpoint_every: 4
"""
CELLS = ("sdpo-concise-s0", "sdpo-no_emojis-s0")
VOLATILE = {"timings", "seconds", "peak_memory_gb"}  # wall-clock and process-memory measurements: the only fields allowed to differ
BASE = dict(n=32, compliance=0.5, clean=0.5, degenerate=0.05, relevant=1.0, mean_words=50.0, apology=0.0, meta=0.0, looping=0.0, empty=0.0,
            truncated=0.0, repetition=0.0, distinct2=1.0, prompt_similarity=0.5, reference_similarity=0.5, kl=0.0, seconds=1.0)


def spec_file(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def records(folder: Path) -> dict[str, list[str]]:
    """A run's logs, wall-clock fields removed, sorted (arms write concurrently, so line order may differ)."""
    out = {}
    for name in ("interactions.jsonl", "metrics.jsonl", "samples.jsonl"):
        rows = [json.loads(line) for line in (folder / name).read_text().splitlines()]
        out[name] = sorted(json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True) for r in rows)
    return out


def runs(sweep: Path) -> list[Path]:
    return sorted([*sweep.glob("runs/*"), *sweep.glob("shared/*")])


# ----- the plan --------------------------------------------------------------------------------------------------
def test_the_plan_crosses_everything_and_shares_controls_only_where_the_run_would_be_the_same(tmp_path):
    spec = spec_file(tmp_path, "profiles: [concise, no_emojis, detailed]\nseeds: [0, 5]\ngrid:\n  trainer.lr: [1.0e-5, 2.0e-5]\n")
    plan = make_plan(spec)
    assert plan.name == "spec" and len(plan.cells) == 12
    assert plan.cells[0].id == "sdpo-concise-lr_1e-05-s0" and plan.cells[-1].id == "sdpo-detailed-lr_2e-05-s5"
    assert [c.seed for c in plan.cells] == [0] * 6 + [5] * 6  # seed by seed: one profile's cells do not start together
    cell = plan.cells[0]
    assert (cell.config.seeds, cell.config.seed, cell.config.jobs, cell.config.save_checkpoint, cell.config.trainer.lr) == (1, 0, 1, False, 1e-5)
    assert len(plan.controls) == 4  # per seed and lr, for concise and no_emojis; detailed needs longer answers: other budgets
    shared = plan.controls[0]
    assert shared.cells == ("sdpo-concise-lr_1e-05-s0", "sdpo-no_emojis-lr_1e-05-s0") and shared.config.control and not shared.config.oracle
    assert [p.name for p in shared.schedule.scored] == ["concise", "no_emojis"] and shared.label("no_emojis") == "no_emojis"
    detailed = next(c for c in plan.cells if c.profile == "detailed")
    assert detailed.control is None and detailed.config.generation.max_new_tokens > cell.config.generation.max_new_tokens
    assert (detailed.arms(), cell.arms()) == (2, 1)
    base = cell.config
    assert control_key(base) == control_key(base.model_copy(update={"profile": "no_emojis", "oracle": False, "jobs": 4}))
    assert control_key(base) != control_key(base.model_copy(update={"trainer": base.trainer.model_copy(update={"lr": 3e-5})}))
    users = make_plan(spec_file(tmp_path, "profiles: [concise]\ngrid:\n  simulator.kind: [scripted, complain]\n", "users.yaml"))
    (shared,) = users.controls  # the control arm's user is neutral whoever the treated arm's is: one control, scored once
    assert len(shared.cells) == 2 and [p.name for p in shared.schedule.scored] == ["concise"] and shared.label("concise") is None
    reordered = make_plan(spec_file(tmp_path, "profiles: [no_emojis, concise]\nseeds: [0]\ngrid:\n  trainer.lr: [1.0e-5]\n", "order.yaml"))
    assert reordered.controls[0].id == plan.controls[0].id  # the control's name does not hang on the spec's profile order


@pytest.mark.parametrize("extra", ["flip_at: 4", "eval.persona: profile", "control: false"])
def test_cells_whose_control_depends_on_the_profile_train_their_own(tmp_path, extra):
    spec = spec_file(tmp_path, f"profiles: [concise, casual]\nset:\n  interactions: 8\n  {extra}\n")
    assert make_plan(spec).controls == []


@pytest.mark.parametrize("spec", sorted(p.name for p in (Path(__file__).parents[2] / "sweeps").glob("*.yaml")))
def test_every_shipped_spec_plans(spec, monkeypatch):
    """The specs in sweeps/ (the held-out profiles by path from the project root, as the README runs them) make valid plans."""
    root = Path(__file__).parents[2]
    monkeypatch.chdir(root)
    plan = make_plan(root / "sweeps" / spec)
    assert plan.cells and all(c.config.interactions == 64 for c in plan.cells)
    if spec == "heldout_profiles.yaml":
        from harness.sweep.spec import shipped_profiles

        assert len(plan.cells) == 6 and not {c.profile for c in plan.cells} & set(shipped_profiles())  # held out: none is shipped


def test_the_local_executor_fits_arm_processes_to_cores_and_memory():
    slots, why = local_slots(1, 5.0, None)
    assert 1 <= slots <= (os.cpu_count() or 1) and "cores" in why and "GB available" in why and "~5 GB per arm process" in why
    assert local_slots(1, 1e6, None)[0] == 1  # a machine that holds one arm process runs one
    assert local_slots(1, 5.0, 3) == (3, "--parallel 3 (" + why + ")")
    assert GB == 1024**3
    one_gpu, why = local_slots(1, 5.0, None, gpus=1)
    assert one_gpu == 1 and "1 GPU(s)" in why  # on CUDA, one task per GPU whatever the cores


def test_local_tasks_on_cuda_spread_over_the_gpus():
    executor = LocalExecutor(4, "test", gpus=2)
    picked = []
    for task in ("a", "b", "c"):  # what submit records, without starting processes
        picked.append(executor.device())
        executor.devices[task] = picked[-1]
    assert picked == [0, 1, 0]
    del executor.devices["b"]  # b finished: its GPU is the least used again
    assert executor.device() == 1
    assert LocalExecutor(2, "test").device() is None  # CPU: no CUDA_VISIBLE_DEVICES


def test_a_ray_address_nothing_listens_at_is_refused_at_once():
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.perf_counter()
    with pytest.raises(UserInputError, match=f"--address 127.0.0.1:{port}: nothing answers there"):
        reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - start < 5
    reachable("auto")  # left to Ray


def test_a_ray_task_declares_cpus_memory_and_a_gpu_on_cuda(tmp_path):
    from types import SimpleNamespace

    from harness.sweep.driver import tasks
    from harness.sweep.executors import RayExecutor
    from harness.sweep.folder import SweepFolder

    plan = make_plan(spec_file(tmp_path, "profiles: [concise, detailed]\nset:\n  policy.device: cuda\n  threads: 2\n"))
    (tmp_path / "s").mkdir()
    concise, detailed = tasks(plan, SweepFolder(tmp_path / "s"), False, "")  # each alone in its budget group: no shared control
    assert (concise.control, concise.weight) == (None, 1)  # both arms, one after the other (jobs 1)
    ray = SimpleNamespace(memory_per_arm=3.0)
    assert RayExecutor.resources(ray, concise) == {"num_cpus": 2, "memory": 3 * GB, "num_gpus": 1}  # type: ignore[arg-type]
    two = make_plan(spec_file(tmp_path, "profiles: [concise]\nset:\n  jobs: 2\n", "two.yaml"))
    (task,) = tasks(two, SweepFolder(tmp_path / "s"), False, "")
    assert task.weight == 2 and RayExecutor.resources(ray, task)["memory"] == 6 * GB  # type: ignore[arg-type]


# ----- a shared control's records in a cell -------------------------------------------------------------------------
def _eval(arm: str, x: int, profile: str | None, **fields) -> EvalRecord:
    return EvalRecord(arm=arm, seed=0, interactions=x, profile=profile, **{**BASE, **fields})  # type: ignore[arg-type]


def _sample(arm: str, profile: str | None) -> SampleRecord:
    return SampleRecord(arm=arm, seed=0, interactions=4, prompt="p", answer="a", words=1, compliant=True, failed_checks=[], degeneration=[],
                        prompt_similarity=0.5, reference_similarity=0.5, novel_words=2, relevant=True, clean=True, profile=profile)  # type: ignore[arg-type]


def test_a_cell_takes_its_profiles_records_from_the_shared_control_once(tmp_path):
    shared, cell = tmp_path / "shared", tmp_path / "cell"
    shared.mkdir()
    interaction = InteractionRecord(arm="control", seed=0, index=0, step=0, prompt="p", response="r", response_tokens=3, finished=True,
                                    followup="ok", followup_raw="ok", satisfied=None)
    train = TrainRecord(arm="control", seed=0, step=0, interactions=4, metrics={"loss": 0.1}, timings={"step": 1.0})
    metrics = [_eval("initial", 0, "concise"), _eval("initial", 0, "no_emojis"), train, _eval("control", 4, "concise", clean=0.25),
               _eval("control", 4, "no_emojis", clean=0.75)]
    (shared / "metrics.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in metrics))
    (shared / "samples.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in (_sample("control", "concise"), _sample("control", "no_emojis"))))
    (shared / "interactions.jsonl").write_text(interaction.model_dump_json() + "\n")
    with pytest.raises(RuntimeError, match="has not finished"):
        control_records(shared, 0, "no_emojis")
    ArmCheckpoints.of(shared, "control", 0).finish(ArmState(step=0, done=4))
    install = control_records(shared, 0, "no_emojis")
    got = [json.loads(line) for line in install["logs"]["metrics.jsonl"]]
    assert [(r["arm"], r.get("clean"), r.get("profile")) for r in got] == [("control", None, None), ("control", 0.75, None)]  # relabelled as a lone run's
    assert len(install["logs"]["samples.jsonl"]) == 1 and len(install["logs"]["interactions.jsonl"]) == 1
    cell.mkdir()
    stale = _eval("control", 4, None, clean=0.0).model_dump_json()
    (cell / "metrics.jsonl").write_text(_eval("initial", 0, None).model_dump_json() + "\n" + stale + "\n" + '{"arm": "contr')  # a kill mid-install
    install_control(cell, install)
    lines = (cell / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["arm"] for line in lines] == ["initial", "control", "control"] and stale not in lines
    assert ArmCheckpoints.of(cell, "control", 0).latest().finished
    before = {p.name: p.read_text() for p in cell.glob("*.jsonl")}
    install_control(cell, install)  # a rerun: already installed, nothing changes
    assert {p.name: p.read_text() for p in cell.glob("*.jsonl")} == before


# ----- the report ----------------------------------------------------------------------------------------------------
def _fake_sweep(folder: Path, profiles: dict[str, dict[str, dict]]) -> None:
    cells = []
    for profile, arms in profiles.items():
        cell = f"sdpo-{profile}-s0"
        cells.append({"id": cell, "profile": profile, "seed": 0, "method": "sdpo", "grid": {}, "variant": "sdpo", "control": None,
                      "interactions": 8, "arms": 2})
        run = folder / "runs" / cell
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"profile: {profile}\n")
        rows = [_eval(arm, 0 if arm in ("initial", "oracle") else 8, None, **fields) for arm, fields in arms.items()]
        rows += [_eval(arm, 4, None) for arm in ("treated", "control")]
        (run / "metrics.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    (folder / "plan.json").write_text(json.dumps({"name": "fake", "spec": "fake.yaml", "cells": cells, "controls": []}))


def test_the_report_sorts_profiles_by_effect_and_reads_verdicts_off_the_intervals(tmp_path):
    low = {"compliance": 0.1, "clean": 0.1}
    _fake_sweep(tmp_path, {
        "learns": {"initial": low, "oracle": {"clean": 0.3}, "treated": {"clean": 0.9, "win_rate": 0.8, "win_low": 0.6, "win_high": 0.9},
                   "control": {"clean": 0.1}},
        "stuck": {"initial": low, "treated": {"clean": 0.2}, "control": {"clean": 0.15}},
        "satisfied": {"initial": {"compliance": 0.9, "clean": 0.9}, "treated": {"clean": 0.85}, "control": {"clean": 0.9}},
        "breaks": {"initial": low, "treated": {"clean": 0.6, "degenerate": 0.8}, "control": {"clean": 0.1}},
        # learned, with a degenerate share 15 points above the untrained model's: inside the intervals, outside the 10-point slack
        "drifts": {"initial": low, "treated": {"clean": 0.7, "degenerate": 0.2}, "control": {"clean": 0.1}},
        # treated kept what the untrained model had (0.40) while the control lost it: apart from the control, not from untrained
        "fell": {"initial": {"compliance": 0.4, "clean": 0.4}, "treated": {"clean": 0.45}, "control": {"clean": 0.0}},
    })
    plan, evals, _ = load_cells(tmp_path)
    rows = {p: profile_row(p, r) for p, r in evals["sdpo"].items()}
    assert {p: r.verdict for p, r in rows.items()} == {"learns": "learned", "stuck": "no effect", "satisfied": "already satisfied", "breaks": "degenerated",
                                                       "fell": "control fell", "drifts": "learned"}
    assert rows["learns"].x == 8 and rows["learns"].effect == pytest.approx(0.8)
    summary = write_report(tmp_path).read_text()
    table = [line for line in summary.splitlines() if line.startswith("| ") and line.endswith("** |")]  # the per-profile rows
    assert [line.split(" | ")[0][2:] for line in table] == ["learns", "drifts", "breaks", "fell", "stuck", "satisfied"]  # by treated − control
    assert "| **learned** |" in table[0] and "0.80 [0.60, 0.90]" in table[0]  # the win rate keeps its interval
    assert ("Treated beats control (95% intervals apart; with several seeds, the seed-by-seed difference's) on 3 of the 5 profile(s) where the untrained model leaves room (compliance ≤ 0.5), "
            "and the untrained model too on 2 of them; 2 of those 5 beat the control with a degenerate share within 10 points of the "
            "untrained model's") in summary
    assert "reads the same checks as the scripted user" in summary and "--judge llm" in summary
    for figure in ("curve.png", "heatmap.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("treated", "control", "verdict"), [
    ((0.44, 0.75, 0.78), (0.09, 0.00, 0.09), "learned"),  # above in every seed: the pooled intervals overlap, the paired one does not
    ((0.90, 0.10, 0.80), (0.10, 0.70, 0.10), "no effect"),  # above in two seeds, far below in one
])
def test_with_several_seeds_the_verdict_reads_the_seed_by_seed_differences(treated, control, verdict):
    records = []
    for seed, (t, c) in enumerate(zip(treated, control)):
        records += [_eval("initial", 0, None, compliance=0.03, clean=0.03).model_copy(update={"seed": seed}),
                    _eval("treated", 8, None, clean=t).model_copy(update={"seed": seed}),
                    _eval("control", 8, None, clean=c).model_copy(update={"seed": seed})]
    row = profile_row("p", records)
    assert row.seeds == 3 and row.verdict == verdict
    mean, low, high = row.paired["control"]
    diffs = [t - c for t, c in zip(treated, control)]
    assert mean == pytest.approx(sum(diffs) / 3) and low < mean < high
    if verdict == "learned":
        assert row.get("clean", "treated").low < row.get("clean", "control").high  # what the old rule read: "no effect"
    assert "[" in table_lines([row])[2].split(" | ")[7]  # treated − control carries its paired interval


# ----- real sweeps -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny sweep, uninterrupted, with the local executor (one task at a time)."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("reference")
    result = run_cli("sweep", str(spec_file(root, TINY)), "--results", str(root), "--parallel", "1")
    assert result.code == 0, result.stdout + result.stderr
    return root / "tiny"


@pytest.mark.slow
def test_a_tiny_sweep_writes_ordinary_runs_that_equal_a_plain_run_and_a_report(reference, cli, tmp_path):
    import harness

    assert sorted(p.name for p in reference.glob("runs/*")) == list(CELLS) and len(list(reference.glob("shared/*"))) == 1
    log = (reference / "sweep.log").read_text()
    assert "local: 1 arm process(es) at once" in log and sum(line.split(" ")[1] == "done" for line in log.splitlines()) == 3
    for cell in CELLS:
        assert json.loads((reference / "runs" / cell / "run.json").read_text())["status"] == "finished"
        assert cli("show", str(reference / "runs" / cell)).code == 0
    compared = json.loads(cli("compare", *(str(reference / "runs" / c) for c in CELLS), "--json").stdout)
    assert compared["differ"] == ["profile"] and {r["arm"] for r in compared["rows"]} == {"treated", "control"}
    # the shared control is what the cell would have trained itself: a plain run of the cell's config logs the same records
    plain = harness.personalize(config=reference / "runs" / CELLS[1] / "config.yaml", results=tmp_path, run_id="plain")
    assert records(plain.path) == records(reference / "runs" / CELLS[1])
    status = json.loads(cli("sweep", "status", str(reference), "--json").stdout)
    assert status["cells"]["done"] == 2 and all(r["progress"] == 1.0 for r in status["tasks"])
    summary = (reference / "summary.md").read_text()
    assert "1 shared control run(s) (`shared/`) served 2 of 2 cells" in summary and "| concise | 1 |" in summary and "| no_emojis | 1 |" in summary
    (shared,) = reference.glob("shared/*")  # the control arm alone, scored for each profile; no report of its own
    arms = {(r["arm"], r.get("profile")) for r in map(json.loads, (shared / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"}
    assert arms == {(a, p) for a in ("initial", "control") for p in ("concise", "no_emojis")} and not (shared / "summary.md").exists()
    assert "wrote" in cli("sweep", "report", str(reference)).stdout


@pytest.mark.slow
def test_a_sweep_adopts_the_cells_another_sweep_finished_with_the_same_config(reference, cli, tmp_path):
    import shutil

    from harness.sweep.driver import adopt_finished
    from harness.sweep.folder import SweepFolder

    shutil.copytree(reference, tmp_path / "tiny")
    changed = make_plan(spec_file(tmp_path, TINY.replace("name: tiny", "name: changed").replace("eval.kl_prompts: 2", "eval.kl_prompts: 1")))
    assert [c.id for c in changed.cells] == list(CELLS)
    assert adopt_finished(changed, SweepFolder(tmp_path / "changed")) == {} and not (tmp_path / "changed" / "runs").exists()
    # a grid point equal to the default: the same runs under other names
    again_spec = TINY.replace("name: tiny", "name: again") + "grid:\n  trainer.cut_eos: [false]\n"
    result = cli("sweep", str(spec_file(tmp_path, again_spec, "again.yaml")), "--results", str(tmp_path))
    assert result.code == 0 and "0 task(s) ran" in result.stdout, result.stdout + result.stderr
    again = tmp_path / "again"
    for cell in CELLS:
        renamed = again / "runs" / cell.replace("-s0", "-cut_eos_False-s0")
        assert records(renamed) == records(reference / "runs" / cell)
        assert json.loads((renamed / "run.json").read_text())["run_id"] == renamed.name
    assert not list(again.glob("shared/*"))  # every cell came finished: their shared control was not trained again
    status = json.loads(cli("sweep", "status", str(again), "--json").stdout)
    assert status["cells"]["done"] == 2 and {r["state"] for r in status["tasks"] if r["kind"] == "control"} == {"not needed"}
    assert "adopted sdpo-concise-cut_eos_False-s0 from" in (again / "sweep.log").read_text()
    assert "**Adopted**: 2 task(s)" in (again / "summary.md").read_text()


@pytest.mark.slow
def test_a_sweep_adopts_a_shared_control_another_sweep_finished_only_where_it_scored_every_profile(reference, tmp_path):
    import shutil

    from harness.sweep.driver import adopt_finished
    from harness.sweep.folder import SweepFolder

    shutil.copytree(reference, tmp_path / "tiny")
    # other users for the treated arms (cells to train), the same control arm, the profiles in another order
    users = TINY.replace("name: tiny", "name: users").replace("[concise, no_emojis]", "[no_emojis, concise]") + "  simulator.notices_nonsense: true\n"
    plan = make_plan(spec_file(tmp_path, users, "users.yaml"))
    (control,) = plan.controls
    folder = SweepFolder(tmp_path / "users")
    (old,) = (tmp_path / "tiny").glob("shared/*")
    assert adopt_finished(plan, folder) == {control.id: old}
    assert folder.status(control.id)["state"] == "done" and not list((tmp_path / "users").glob("runs/*"))
    for cell in CELLS:  # what a cell installs from the adopted control is what it would have installed from the original
        profile = cell.split("-")[1]
        assert control_records(folder.path("shared", control.id), 0, control.label(profile)) == control_records(old, 0, profile)
    # a control that scores a profile the finished one did not is trained
    more = make_plan(spec_file(tmp_path, users.replace("name: users", "name: more").replace("[no_emojis, concise]", "[no_emojis, concise, first_person]"), "more.yaml"))
    assert adopt_finished(more, SweepFolder(tmp_path / "more")) == {}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_sweep_killed_with_sigkill_resumes_to_the_same_records(reference, tmp_path):
    spec = spec_file(tmp_path, TINY)
    args = [*HINDSIGHT, "sweep", str(spec), "--results", str(tmp_path), "--parallel", "1"]
    sweep = tmp_path / "tiny"
    with (tmp_path / "killed.log").open("w") as out:
        driver = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    # kill once a cell has committed a checkpoint mid-run (4 of 8 interactions)
    while driver.poll() is None and not any(json.loads(p.read_text())["done"] == 4 for p in sweep.glob("runs/*/state/treated-s0/latest.json")):
        time.sleep(0.05)
    assert driver.poll() is None, (tmp_path / "killed.log").read_text()
    driver.send_signal(signal.SIGKILL)  # the driver alone: its workers must die with it
    driver.wait()
    time.sleep(2)
    assert not any(locked(p) for p in sweep.glob("locks/*.lock")), "a worker outlived its driver"
    interrupted = subprocess.run([*HINDSIGHT, "sweep", "status", str(sweep), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(interrupted.stdout)["cells"]["interrupted"] >= 1
    again = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = [p.parent.name for p in sweep.glob("runs/*/run.json") if json.loads(p.read_text())["resumed"]]
    assert resumed, "no cell continued from its checkpoint"
    assert [p.name for p in runs(sweep)] == [p.name for p in runs(reference)]
    for ours, theirs in zip(runs(sweep), runs(reference)):
        assert records(ours) == records(theirs), ours.name  # nothing lost, nothing twice, the same numbers


@pytest.mark.slow
def test_sigterm_stops_the_sweep_like_ctrl_c(tmp_path):
    """A scheduler's SIGTERM to the driver alone: its workers stop, the session is recorded, the log says how to resume."""
    spec = spec_file(tmp_path, TINY)
    sweep = tmp_path / "tiny"
    with (tmp_path / "driver.log").open("w") as out:
        driver = subprocess.Popen([*HINDSIGHT, "sweep", str(spec), "--results", str(tmp_path), "--parallel", "1"], stdout=out, stderr=subprocess.STDOUT)
    while driver.poll() is None and not ((sweep / "sweep.log").is_file() and " start " in (sweep / "sweep.log").read_text()):
        time.sleep(0.05)
    assert driver.poll() is None, (tmp_path / "driver.log").read_text()
    time.sleep(2)
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=60) != 0
    assert not any(locked(p) for p in sweep.glob("locks/*.lock")), "a worker outlived its driver"
    assert "driver interrupted: rerun the same command to resume" in (sweep / "sweep.log").read_text()
    (session,) = json.loads((sweep / "sessions.json").read_text())
    assert session["finished"] and session["seconds"] > 0


@pytest.mark.slow
def test_a_failed_cell_is_recorded_and_the_others_finish(cli, tmp_path):
    spec = spec_file(tmp_path, TINY.replace("name: tiny", "name: faulty").replace("[concise, no_emojis]", "[concise]")
                     + "  fail_budget: 0\n  simulator.llm: {model: openai/none, api_base: 'http://127.0.0.1:9/v1', retries: 0}\n"
                     + "grid:\n  simulator.kind: [scripted, llm]\n")
    result = cli("sweep", str(spec), "--results", str(tmp_path), "--parallel", "1")
    assert result.code == 1, result
    sweep = tmp_path / "faulty"
    assert "failed sdpo-concise-kind_llm-s0" in result.stdout
    status = json.loads(cli("sweep", "status", str(sweep), "--json").stdout)
    rows = {r["id"]: r for r in status["tasks"]}
    assert rows["sdpo-concise-kind_scripted-s0"]["state"] == "done" and rows["sdpo-concise-kind_llm-s0"]["state"] == "failed"
    assert "RunError" in rows["sdpo-concise-kind_llm-s0"]["error"] and "simulator calls failed" in rows["sdpo-concise-kind_llm-s0"]["error"]
    assert "## Failed" in (sweep / "summary.md").read_text() and "failed sdpo-concise-kind_llm-s0" in (sweep / "sweep.log").read_text()
    again = cli("sweep", str(spec), "--results", str(tmp_path), "--parallel", "1")  # finished cells are skipped, the failed one tried again
    assert again.code == 1 and "1 task(s) ran" in again.stdout


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_two_node_ray_cluster_runs_cells_on_both_nodes_and_gives_the_local_records(reference, cli, tmp_path):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # two nodes on this machine, at its own address: a driver asked for 127.0.0.1 connects to the machine's address instead (Ray's rule)
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2, "memory": 4 * 1024**3}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        result = cli("sweep", str(spec_file(tmp_path, TINY)), "--results", str(tmp_path / "results"), "--executor", "ray",
                     "--address", cluster.address, "--records-back", "--memory-per-arm", "3")
    finally:
        cluster.shutdown()
    assert result.code == 0, result.stdout + result.stderr
    sweep = tmp_path / "results" / "tiny"
    log = (sweep / "sweep.log").read_text()
    assert "ray at" in log and "2 node(s), 2 CPUs" in log
    nodes = {line.split(" on node ")[1].split()[0] for line in log.splitlines() if " start sdpo-" in line}
    assert len(nodes) == 2, log  # the two cells ran side by side, one on each node
    assert [p.name for p in runs(sweep)] == [p.name for p in runs(reference)]
    for ours, theirs in zip(runs(sweep), runs(reference)):  # the records came back to the driver and equal the local executor's
        assert records(ours) == records(theirs), ours.name
    assert (sweep / "summary.md").is_file() and (sweep / "curve.png").is_file()


def test_the_signal_table_splits_the_advantage_by_follow_up_and_counts_cut_answers(tmp_path):
    _fake_sweep(tmp_path, {"learns": {"initial": {"compliance": 0.1, "clean": 0.1}, "treated": {"clean": 0.9, "kl": 0.25, "looping": 0.4},
                                      "control": {"clean": 0.1}}})
    # 4 treated interactions: two complaints (one cut at the cap), two satisfied replies (one to a loop); a control interaction that
    # must not count
    rows = [(0, "Bananas grow in warm places", False, False, {"mean": -0.4, "eos": None}), (1, "Boil it", True, False, {"mean": -0.2, "eos": -1.0}),
            (2, "go on " * 8, True, True, {"mean": 0.1, "eos": 0.5}), (3, "Simmer the rice in salted water", True, True, {"mean": 0.3, "eos": 0.7})]
    lines = [InteractionRecord(arm="treated", seed=0, index=i, step=i // 2, prompt="How do I cook rice?", response=text, response_tokens=3, finished=done,
                               followup="f", followup_raw="f", satisfied=ok, advantage={k: v for k, v in adv.items() if v is not None})
             for i, text, done, ok, adv in rows]
    lines.append(InteractionRecord(arm="control", seed=0, index=0, step=0, prompt="p", response="x " * 50, response_tokens=50, finished=False,
                                   followup="f", followup_raw="f", satisfied=None, advantage={"mean": 9.0}))
    run = tmp_path / "runs" / "sdpo-learns-s0"
    (run / "interactions.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in lines))
    signals = [SignalRecord(arm="treated", seed=0, index=0, step=0, tokens=["a", "b"], ids=[1, 2], advantage=[3.0, -1.0]),
               SignalRecord(arm="treated", seed=0, index=1, step=0, tokens=["c"], ids=[3], advantage=[1.0]),
               SignalRecord(arm="control", seed=0, index=0, step=0, tokens=["d", "e"], ids=[4, 5], advantage=[0.5, -0.5])]
    (run / "signals.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in signals))
    summary = write_report(tmp_path).read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| learns | 4 |"))
    # complaints 2/4, finished 3/4, words first quarter 5 → last quarter 6, A −0.30 / +0.20, end-of-turn −1.00 / +0.60,
    # RMS √((9 + 1 + 1) / 3) = 1.91 for treated, 0.50 for control, KL 0.25
    # satisfied replies to looping or off-topic answers: 1 of 2 ("go on go on …"); off-topic (cosine to the prompt below 0.3): the
    # first answer (bananas), not the last (rice); looping: none of the last quarter's sampled answers (rice), 0.40 of the greedy
    # held-out answers at the last evaluation (8), not the one before (4)
    assert row == "| learns | 4 | 0.50 | 0.50 | 1.00 → 0.00 | 0.75 | 5 → 6 | -0.30 / +0.20 | -1.00 / +0.60 | 1.91 / 0.50 | 0.00 / 0.40 | 0.25 |"
