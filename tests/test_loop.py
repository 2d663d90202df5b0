"""The real loop on SmolLM2 for a few interactions, from the CLI: the run log is complete and consistent."""

import json
import subprocess
import sys

import yaml

from harness.config import RunConfig
from harness.records import METRIC, EvalRecord, InteractionRecord, RunInfo, SampleRecord, TrainRecord, read_jsonl
from simulators.neutral import load_pool
from simulators.profile import load_profile

HINDSIGHT = [sys.executable, "-c", "from harness.cli import run; run()"]


def test_personalize_writes_a_complete_consistent_run(tmp_path):
    args = [
        "personalize", "--profile", "concise", "-n", "4", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "2",
        "--max-new-tokens", "12", "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=2", "--control", "--oracle",
        "--jobs", "2", "--results", str(tmp_path), "--run-id", "tiny",
    ]
    result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "tiny"
    config = RunConfig.from_file(run / "config.yaml")
    assert (config.interactions, config.batch_size, config.control, config.oracle) == (4, 2, True, True)
    assert RunInfo.model_validate_json((run / "run.json").read_text()).status == "finished"

    interactions = list(read_jsonl(run / "interactions.jsonl", InteractionRecord))
    for arm in ("treated", "control"):
        mine = sorted((r for r in interactions if r.arm == arm), key=lambda r: r.index)
        assert [r.index for r in mine] == [0, 1, 2, 3]
        assert [r.step for r in mine] == [0, 0, 1, 1]
        assert all(r.response_tokens <= 12 and r.advantage.get("tokens") for r in mine)
    profile = load_profile("concise")
    complaints = {line for check in profile.checks for line in check.followup} | set(profile.satisfied)
    assert all(r.followup in complaints and r.satisfied is not None for r in interactions if r.arm == "treated")
    assert all(r.followup in load_pool() and r.satisfied is None for r in interactions if r.arm == "control")
    # the two arms saw the same prompts in the same order (same seed): only the user differs
    by_arm = {arm: [r.prompt for r in sorted((r for r in interactions if r.arm == arm), key=lambda r: r.index)] for arm in ("treated", "control")}
    assert by_arm["treated"] == by_arm["control"]

    metrics = list(read_jsonl(run / "metrics.jsonl", METRIC))
    train = [m for m in metrics if isinstance(m, TrainRecord)]
    evals = [m for m in metrics if isinstance(m, EvalRecord)]
    assert sorted((m.arm, m.interactions) for m in train) == [("control", 2), ("control", 4), ("treated", 2), ("treated", 4)]
    assert sorted((m.arm, m.interactions) for m in evals) == [("control", 2), ("control", 4), ("initial", 0), ("oracle", 0), ("treated", 2), ("treated", 4)]
    for m in evals:
        assert m.n == 2 and 0 <= m.clean <= m.compliance <= 1
        assert (m.kl is None) == (m.arm == "oracle")
    samples = list(read_jsonl(run / "samples.jsonl", SampleRecord))
    assert len(samples) == 2 * len(evals)
    assert all(s.words <= 12 for s in samples)

    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (run / "summary.md").read_text()
    assert "treated vs control" in summary or "beats" in summary
    assert (run / "checkpoints" / "treated-s0" / "model.safetensors").is_file()
    assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pt"))

    shown = subprocess.run([*HINDSIGHT, "show", "tiny", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "treated" in shown.stdout and "control" in shown.stdout
    compared = subprocess.run([*HINDSIGHT, "compare", "tiny", str(run), "--markdown", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0 and compared.stdout.count("| tiny | treated | 4 |") == 2, compared.stdout + compared.stderr
    listed = subprocess.run([*HINDSIGHT, "runs", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "tiny" in listed.stdout

    # the written config reproduces the run's settings when fed back
    again = subprocess.run([*HINDSIGHT, "personalize", "--config", str(run / "config.yaml"), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout) == yaml.safe_load((run / "config.yaml").read_text())
    json.loads((run / "run.json").read_text())
