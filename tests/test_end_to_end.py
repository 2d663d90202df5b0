"""End to end on the real SmolLM2, as small as they go: several seeds and their intervals, a LoRA run stopped, resumed and
evaluated by `hindsight eval`, and `hindsight regress` failing (exit 1) on a checkpoint that a learning rate broke."""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, TrainRecord, read_jsonl
from core.stats import interval
from harness.config import RunConfig
from harness.curves import curves
from suites.results import EvalResult
from suites.suite import SUITES

from conftest import HINDSIGHT
from stub_provider import StubProvider

TINY = ["-n", "2", "--batch-size", "2", "--eval-every", "2", "--max-new-tokens", "8", "--set", "eval.max_new_tokens=8", "--no-control", "--no-oracle",
        "--jobs", "1"]


def hindsight(*args: str, timeout: int = 900, cache=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"HINDSIGHT_EVAL_CACHE": str(cache)} if cache else {})}  # the suites' cache: the test's own
    return subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)


def small_suite(tmp_path, mc_limit: int | None = None, ifeval: int = 0) -> str:
    """The `quick` suite cut down: its log-likelihood entry (mc_mini: 30 four-way questions, seconds on CPU) and, with
    ``ifeval``, that many of its IFEval prompts answered in at most 64 tokens."""
    quick = yaml.safe_load((SUITES / "quick.yaml").read_text())
    entries = []
    for entry in quick["entries"]:
        if entry.get("task") == "mc_mini":
            entries.append({**entry, "path": str(SUITES / entry["path"]), **({"limit": mc_limit} if mc_limit else {})})
        elif entry.get("task") == "ifeval_mini" and ifeval:
            entries.append({**entry, "path": str(SUITES / entry["path"]), "limit": ifeval, "gen_kwargs": {"max_gen_toks": 64}})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({"name": "small", "entries": entries}))
    return str(path)


def test_seeds_are_each_recorded_and_the_curves_carry_intervals_over_them(tmp_path):
    done = hindsight("personalize", *TINY, "--seeds", "2", "--eval-prompts", "4", "--set", "eval.kl_prompts=1", "--set", "save_checkpoint=false",
                     "--checkpoint-every", "0", "--results", str(tmp_path), "--run-id", "seeds")
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "seeds"
    config = RunConfig.from_file(run / "config.yaml")
    assert config.seeds == 2 and config.arms() == [("treated", 0), ("treated", 1)]
    interactions = list(read_jsonl(run / "interactions.jsonl", InteractionRecord))
    assert sorted((r.seed, r.index) for r in interactions) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    by_seed = {s: [(r.prompt, r.response) for r in sorted(interactions, key=lambda r: r.index) if r.seed == s] for s in (0, 1)}
    assert by_seed[0] != by_seed[1]  # each seed its own draw of prompts and samples
    metrics = list(read_jsonl(run / "metrics.jsonl", METRIC))
    assert sorted((m.seed, m.interactions) for m in metrics if isinstance(m, TrainRecord)) == [(0, 2), (1, 2)]
    evals = [m for m in metrics if isinstance(m, EvalRecord)]
    assert sorted((m.arm, m.seed, m.interactions) for m in evals) == [("initial", 0, 0), ("treated", 0, 2), ("treated", 1, 2)]

    last = {m.seed: m for m in evals if m.arm == "treated"}
    for field, share in (("mean_words", False), ("clean", True), ("kl", False)):
        point = curves(evals, field, share)["treated"][-1]
        values = [getattr(last[s], field) for s in (0, 1)]
        mean, low, high = interval(values, 4, share)
        assert (point.interactions, point.seeds, point.mean) == (2, 2, mean), field
        assert (point.low, point.high) == (max(low, 0.0), high) and point.low <= point.mean <= point.high, field
        if values[0] != values[1]:
            assert point.high > point.low, field  # the spread between seeds shows
    start = curves(evals, "mean_words", False)["treated"][0]
    assert (start.interactions, start.seeds) == (0, 1)  # the untrained model, evaluated once
    summary = (run / "summary.md").read_text()
    assert "2 seed(s)" in summary and "### Last evaluation (95% intervals)" in summary


def test_lora_run_stopped_then_resumed_then_evaluated(tmp_path):
    """A LoRA run whose LLM user fails at interaction 2 (--fail-fast) stops after its first update's checkpoint; --resume
    finishes it with the adapter restored, and `hindsight eval` scores the run's adapter checkpoint."""
    with StubProvider(lambda body: ("Shorter, please.", 5, 3), faults=[None, None, 500]) as stub:
        first = hindsight("personalize", *TINY, "--lora", "--eval-prompts", "2", "--set", "eval.kl_prompts=1", "--checkpoint-every", "2",
                          "-n", "4", "--simulator-model", "openai/stub", "--api-base", stub.base, "--set", "simulator.llm.retries=0", "--fail-fast",
                          "--llm-concurrency", "1",  # the stub's faults go by arrival order: one request at a time
                          "--results", str(tmp_path), "--run-id", "lora")
        run = tmp_path / "lora"
        stopped = RunInfo.model_validate_json((run / "run.json").read_text())
        committed = json.loads((run / "state" / "treated-s0" / "latest.json").read_text())
        resumed = hindsight("personalize", "--resume", "lora", "--results", str(tmp_path))
    assert first.returncode == 1 and "--resume lora" in first.stderr, first.stdout + first.stderr
    assert stopped.status == "failed" and "interaction 2" in (stopped.error or ""), stopped.error
    assert committed["done"] == 2 and not committed.get("finished")  # the first update was committed, the run was not over
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    config = RunConfig.from_file(run / "config.yaml")
    assert config.policy.lora is not None and config.interactions == 4
    info = RunInfo.model_validate_json((run / "run.json").read_text())
    assert info.status == "finished" and len(info.resumed) == 1
    interactions = list(read_jsonl(run / "interactions.jsonl", InteractionRecord))
    assert sorted(r.index for r in interactions) == [0, 1, 2, 3] and all(r.failed is None for r in interactions)
    metrics = list(read_jsonl(run / "metrics.jsonl", METRIC))
    assert [m.interactions for m in metrics if isinstance(m, TrainRecord)] == [2, 4]
    assert sorted((m.arm, m.interactions) for m in metrics if isinstance(m, EvalRecord)) == [("initial", 0), ("treated", 2), ("treated", 4)]
    checkpoint = run / "checkpoints" / "treated-s0"
    assert (checkpoint / "adapter_config.json").is_file() and list(checkpoint.glob("*.safetensors"))

    out = tmp_path / "eval.json"
    scored = hindsight("eval", str(checkpoint), "--suite", small_suite(tmp_path, mc_limit=4), "--batch-size", "4", "--device", "cpu", "--out", str(out),
                       timeout=600, cache=tmp_path / "eval-cache")
    assert scored.returncode == 0, scored.stdout + scored.stderr
    result = EvalResult.model_validate_json(out.read_text())
    acc = result.entries[0].metrics["acc"]
    assert result.suite == "small" and acc.n == 4 and 0.0 <= acc.value <= 1.0 and len(acc.scores) == 4


def test_regress_exits_1_on_a_checkpoint_broken_by_its_learning_rate(tmp_path):
    """One SDPO update at lr 0.1 wrecks the model (mc_mini accuracy 0.50 → 0.30, about chance); against the untrained model
    `hindsight regress` reports the regression and exits 1. The shipped fixtures are small (30 questions), so the gate runs
    at --confidence 0.8: at 0.95 this drop is not significant (p ≈ 0.13), nor is IFEval's on 10 prompts (0.6 → 0.4)."""
    done = hindsight("personalize", *TINY, "--eval-prompts", "1", "--set", "eval.kl_prompts=0", "--lr", "0.1", "--checkpoint-every", "0",
                     "--results", str(tmp_path), "--run-id", "broken")
    assert done.returncode == 0, done.stdout + done.stderr
    checkpoint = tmp_path / "broken" / "checkpoints" / "treated-s0"
    report = tmp_path / "regress.md"
    gate = hindsight("regress", "--baseline", "smollm2-135m", "--candidate", str(checkpoint), "--suite", small_suite(tmp_path), "--batch-size", "8",
                     "--device", "cpu", "--confidence", "0.8", "--report", str(report), timeout=600, cache=tmp_path / "eval-cache")
    text = report.read_text() if report.is_file() else ""
    assert gate.returncode == 1, text or gate.stdout + gate.stderr
    row = next(line for line in text.splitlines() if line.startswith("| mc_mini | acc |"))
    assert row.endswith("| regressed |") and "(paired)" in row and "**1 regressed**: mc_mini/acc" in text, text
    lenient = hindsight("regress", "--baseline", "smollm2-135m", "--candidate", str(checkpoint), "--suite", small_suite(tmp_path), "--batch-size", "8",
                        "--device", "cpu", "--report", str(report), timeout=600, cache=tmp_path / "eval-cache")
    assert lenient.returncode == 0 and "no significant regression" in lenient.stdout, lenient.stdout + lenient.stderr  # from the cache
