"""Training guards on the real loop: --max-kl stops a drifting arm, keeps its last checkpoint within the limit, and the run still finishes."""

from __future__ import annotations

import subprocess

from safetensors.torch import load_file

from core.models import resolve_model
from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, read_jsonl

from conftest import HINDSIGHT
from stub_provider import StubProvider


def test_max_kl_stops_each_arm_at_its_first_evaluation_over_the_limit_and_keeps_the_last_good_checkpoint(tmp_path):
    """The LLM user fails on the first batch, so the treated arm's first evaluation (2) is of untrained weights (KL 0, within
    1e-6: its checkpoint is saved); the update after it drifts past the limit (evaluation 4: stopped, checkpoint left as it was).
    The control arm trains from the start and stops at 2 with no checkpoint; the report is still written."""
    with StubProvider(lambda body: ("Shorter, please.", 5, 3), faults=[500, 500]) as stub:
        args = [
            "personalize", "-n", "6", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "2", "--max-new-tokens", "12",
            "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=2", "--lr", "1e-4", "--max-kl", "1e-6", "--no-oracle", "--jobs", "1",
            "--simulator-model", "openai/stub", "--api-base", stub.base, "--set", "simulator.llm.retries=0", "--fail-budget", "2",
            "--results", str(tmp_path), "--run-id", "kl",
        ]
        result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "treated s0 stopped: KL to the initial policy" in result.stdout and "control s0 stopped" in result.stdout
    run = tmp_path / "kl"
    assert RunInfo.model_validate_json((run / "run.json").read_text()).status == "finished"
    evals = {(m.arm, m.interactions): m for m in read_jsonl(run / "metrics.jsonl", METRIC) if isinstance(m, EvalRecord)}
    assert sorted(evals) == [("control", 2), ("initial", 0), ("treated", 2), ("treated", 4)]
    assert evals["treated", 2].kl <= 1e-6 and evals["treated", 2].stopped is None
    assert evals["treated", 4].kl > 1e-6 and evals["treated", 4].stopped.endswith("> max_kl 1e-06 at 4 interactions; checkpoint kept from 2 interactions")
    assert evals["control", 2].kl > 1e-6 and "at 2 interactions" in evals["control", 2].stopped and "checkpoint" not in evals["control", 2].stopped
    interactions = list(read_jsonl(run / "interactions.jsonl", InteractionRecord))
    assert sorted(r.index for r in interactions if r.arm == "treated") == [0, 1, 2, 3]  # nothing after the stop
    assert sorted(r.index for r in interactions if r.arm == "control") == [0, 1]
    kept = load_file(run / "checkpoints" / "treated-s0" / "model.safetensors")
    initial = load_file(resolve_model("smollm2-135m") / "model.safetensors")
    assert all(kept[name].equal(tensor) for name, tensor in initial.items() if name in kept)  # the weights at 2: never updated
    assert not (run / "checkpoints" / "control-s0").exists()
    summary = (run / "summary.md").read_text()
    assert "**treated s0 stopped:**" in summary and "**control s0 stopped:**" in summary


def test_max_kl_stops_a_lora_arm(tmp_path):
    """Under --lora the KL to the initial policy is the adapter on against the adapter off: one update, then the stop."""
    args = [
        "personalize", "-n", "4", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "1", "--max-new-tokens", "8",
        "--set", "eval.max_new_tokens=8", "--set", "eval.kl_prompts=1", "--lora", "--lr", "1e-3", "--max-kl", "1e-9",
        "--no-control", "--no-oracle", "--jobs", "1", "--checkpoint-every", "0", "--results", str(tmp_path), "--run-id", "lora",
    ]
    result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "treated s0 stopped: KL to the initial policy" in result.stdout
    run = tmp_path / "lora"
    evals = {(m.arm, m.interactions): m for m in read_jsonl(run / "metrics.jsonl", METRIC) if isinstance(m, EvalRecord)}
    assert sorted(evals) == [("initial", 0), ("treated", 2)]
    assert evals["treated", 2].kl > 1e-9 and "> max_kl 1e-09 at 2 interactions" in evals["treated", 2].stopped
    assert sorted(r.index for r in read_jsonl(run / "interactions.jsonl", InteractionRecord)) == [0, 1]  # nothing after the stop
