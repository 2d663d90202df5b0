"""The real loop on SmolLM2 for a few interactions, from the CLI: the run log is complete and consistent."""

import json
import os
import re
import shutil
import subprocess

import yaml

from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, SampleRecord, TrainRecord, read_jsonl
from harness.config import RunConfig
from simulators.neutral import load_pool
from simulators.profile import load_profile

from conftest import HINDSIGHT
from stub_provider import StubProvider

WIDE = {**os.environ, "COLUMNS": "220"}  # rich wraps table headers at the default 80 columns


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
        assert m.profile is None
    samples = list(read_jsonl(run / "samples.jsonl", SampleRecord))
    assert len(samples) == 2 * len(evals)
    assert all(s.words <= 12 for s in samples)
    # the rule judge (default) compares every answer with the untrained model's answer to the same prompt
    initial = {s.prompt: s.answer for s in samples if s.arm == "initial"}
    assert all(s.verdict is None for s in samples if s.arm == "initial")
    for s in (s for s in samples if s.arm != "initial"):
        fails, ref_fails = len(s.failed_checks), len(profile.failures(initial[s.prompt]))
        assert s.verdict == ("A" if fails < ref_fails else "B" if fails > ref_fails else "tie") and len(s.verdict_raw) == 1
    for m in evals:
        if m.arm == "initial":
            assert m.win_rate is None and m.judge is None
            continue
        mine = [s for s in samples if (s.arm, s.interactions) == (m.arm, m.interactions)]
        expected = sum({"A": 1.0, "tie": 0.5, "B": 0.0}[s.verdict] for s in mine) / len(mine)
        assert m.judge == "rules:concise" and m.win_rate == expected and m.win_low <= m.win_rate <= m.win_high
        assert m.invalid_rate == 0 and m.ties == sum(s.verdict == "tie" for s in mine) / 2 and m.swap_agreement is None
    assert RunInfo.model_validate_json((run / "run.json").read_text()).llm_usage is None  # no LLM played any role

    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (run / "summary.md").read_text()
    assert "treated vs control" in summary or "beats" in summary
    assert "## Win rate vs the untrained model over interactions" in summary and "| win rate vs initial |" in summary
    assert (run / "checkpoints" / "treated-s0" / "model.safetensors").is_file()
    assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pt"))

    shown = subprocess.run([*HINDSIGHT, "show", "tiny", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120, env=WIDE)
    assert shown.returncode == 0 and "treated" in shown.stdout and "control" in shown.stdout and "win rate" in shown.stdout
    # a second, different run: this one's log with another learning rate, no control arm and 77-word answers at the end
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "config.yaml").write_text(yaml.safe_dump({**yaml.safe_load((run / "config.yaml").read_text()), "control": False,
                                                       "trainer": {**config.trainer.model_dump(mode="json"), "lr": 1e-4}}, sort_keys=False))
    kept = [m.model_copy(update={"mean_words": 77.0}) if (m.arm, m.interactions) == ("treated", 4) else m
            for m in metrics if m.arm != "control"]
    (other / "metrics.jsonl").write_text("".join(m.model_dump_json() + "\n" for m in kept))
    compared = subprocess.run([*HINDSIGHT, "compare", "tiny", str(other), "--markdown", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    table = [line for line in compared.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| run | control | trainer.lr | arm | n |"), table[0]  # the fields that differ, then the arms
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    column = cells[0].index("mean words")
    rows = {tuple(row[:5]): row[column].split(" [")[0] for row in cells[1:]}
    words = next(m.mean_words for m in evals if (m.arm, m.interactions) == ("treated", 4))
    assert rows == {("other", "False", "0.0001", "treated", "4"): "77", ("tiny", "True", "2e-05", "treated", "4"): f"{words:.3g}",
                    ("tiny", "True", "2e-05", "control", "4"): rows[("tiny", "True", "2e-05", "control", "4")]}, compared.stdout
    listed = subprocess.run([*HINDSIGHT, "runs", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "tiny" in listed.stdout

    # the written config reproduces the run's settings when fed back
    again = subprocess.run([*HINDSIGHT, "personalize", "--config", str(run / "config.yaml"), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout) == yaml.safe_load((run / "config.yaml").read_text())
    json.loads((run / "run.json").read_text())


REPLY = re.compile(r"Reply ([AB]):\n<<<\n(.*?)\n>>>", re.S)


def _shorter_wins(body: dict) -> tuple[str, int, int]:
    """An LLM judge that names the shorter reply (TIE when equal)."""
    shown = dict(REPLY.findall(body["messages"][-1]["content"]))
    a, b = len(shown["A"]), len(shown["B"])
    return ("A" if a < b else "B" if b < a else "TIE"), 10, 1


def test_an_llm_judge_over_http_judges_both_orders_and_its_usage_is_recorded(tmp_path):
    with StubProvider(_shorter_wins) as judge:
        args = [
            "personalize", "-n", "2", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "2", "--max-new-tokens", "12",
            "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=0", "--set", "save_checkpoint=false", "--no-control", "--jobs", "1",
            "--judge-model", "openai/stub", "--judge-api-base", judge.base,
            "--results", str(tmp_path), "--run-id", "judged",
        ]
        result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "judged"
    config = RunConfig.from_file(run / "config.yaml")
    assert config.judge.kind == "llm" and config.judge.llm.model == "openai/stub"
    samples = list(read_jsonl(run / "samples.jsonl", SampleRecord))
    initial = {s.prompt: s.answer.strip() for s in samples if s.arm == "initial"}
    judged = [s for s in samples if s.arm in ("oracle", "treated")]
    assert len(judged) == 4
    for s in judged:
        mine, theirs = len(s.answer.strip()), len(initial[s.prompt])
        assert s.verdict == ("A" if mine < theirs else "B" if mine > theirs else "tie")
        assert s.verdict_raw == [{"A": "A", "B": "B", "tie": "TIE"}[s.verdict], {"A": "B", "B": "A", "tie": "TIE"}[s.verdict]]  # second order swapped
    evals = [m for m in read_jsonl(run / "metrics.jsonl", METRIC) if isinstance(m, EvalRecord) and m.arm != "initial"]
    assert {m.judge for m in evals} == {"pairwise:litellm:openai/stub"} and all(m.swap_agreement == 1.0 for m in evals)
    usage = RunInfo.model_validate_json((run / "run.json").read_text()).llm_usage
    assert set(usage) == {"judge"}
    assert usage["judge"].calls == len(judge.requests) and usage["judge"].calls + usage["judge"].cache_hits == 2 * len(judged)
    assert usage["judge"].prompt_tokens == 10 * usage["judge"].calls
    assert "LLM judge:" in (run / "summary.md").read_text()


def test_flip_switches_the_user_at_the_flip_and_scores_both_preferences(tmp_path):
    args = [
        "flip", "--profile", "concise", "-n", "4", "--batch-size", "2", "--flip-at", "2", "--eval-every", "2", "--eval-prompts", "2",
        "--max-new-tokens", "12", "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=0", "--set", "save_checkpoint=false",
        "--no-control", "--jobs", "1", "--results", str(tmp_path), "--run-id", "flip",
    ]
    result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900, env=WIDE)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "flip"
    assert RunConfig.from_file(run / "config.yaml").flip_at == 2
    concise, detailed = load_profile("concise"), load_profile("detailed")
    said = {p.name: {line for c in p.checks for line in c.followup} | set(p.satisfied) for p in (concise, detailed)}
    interactions = sorted(read_jsonl(run / "interactions.jsonl", InteractionRecord), key=lambda r: r.index)
    assert [r.profile for r in interactions] == ["concise", "concise", "detailed", "detailed"]
    assert all(r.followup in said[r.profile] for r in interactions)
    assert all(r.followup in said["detailed"] and r.followup not in said["concise"] for r in interactions[2:])  # answers ≤ 12 tokens are too thin

    evals = [m for m in read_jsonl(run / "metrics.jsonl", METRIC) if isinstance(m, EvalRecord)]
    assert sorted((m.arm, m.interactions, m.profile) for m in evals) == [
        ("initial", 0, "concise"), ("initial", 0, "detailed"), ("oracle", 0, "concise"), ("oracle", 0, "detailed"),
        ("treated", 2, "concise"), ("treated", 2, "detailed"), ("treated", 4, "concise"), ("treated", 4, "detailed"),
    ]
    samples = list(read_jsonl(run / "samples.jsonl", SampleRecord))
    for m in evals:
        mine = [s for s in samples if (s.arm, s.interactions, s.profile) == (m.arm, m.interactions, m.profile)]
        profile = concise if m.profile == "concise" else detailed
        assert len(mine) == 2 and all(s.compliant == profile.complies(s.answer) for s in mine)
        assert m.compliance == sum(s.compliant for s in mine) / 2
        assert (m.win_rate is None) == (m.arm == "initial") and m.judge in (None, f"rules:{m.profile}")
    # at 12 tokens nothing is 120 words long: every answer fails the detailed user and passes the concise one
    assert all(m.compliance == (1.0 if m.profile == "concise" else 0.0) for m in evals)
    # one answer per prompt, scored for each preference (the oracle is told one preference at a time)
    treated = [s for s in samples if s.arm == "treated" and s.interactions == 4]
    assert {s.answer for s in treated if s.profile == "concise"} == {s.answer for s in treated if s.profile == "detailed"}

    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (run / "summary.md").read_text()
    assert "## Preference: concise" in summary and "## Preference: detailed" in summary and "flipped to its opposite at 2" in summary
    shown = subprocess.run([*HINDSIGHT, "show", "flip", "--results", str(tmp_path)], capture_output=True, text=True, timeout=120, env=WIDE)
    assert shown.returncode == 0 and "scored for concise" in shown.stdout and "scored for detailed" in shown.stdout


def test_flip_defaults_to_half_the_run_and_rejects_bad_flips(tmp_path):
    def flip(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*HINDSIGHT, "flip", *args, "--dry-run"], capture_output=True, text=True, timeout=120)

    assert yaml.safe_load(flip("-n", "10", "--batch-size", "2").stdout)["flip_at"] == 4
    assert yaml.safe_load(flip("-n", "64").stdout)["flip_at"] == 32
    assert yaml.safe_load(flip("-n", "64", "--flip-at", "8").stdout)["flip_at"] == 8
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\ndescription: I have no opposite at all.\nchecks: []\n")
    for args, message in [
        (["--profile", str(plain)], "profile 'plain' has no opposite to flip to"),
        (["-n", "8", "--batch-size", "4", "--flip-at", "6"], "must be a multiple of batch_size (4) below interactions (8)"),
        (["-n", "8", "--flip-at", "8"], "below interactions (8)"),
    ]:
        result = flip(*args)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    # personalize is unchanged: no flip unless asked for
    plain_run = subprocess.run([*HINDSIGHT, "personalize", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert yaml.safe_load(plain_run.stdout)["flip_at"] is None


def test_continual_adds_preferences_one_after_another_and_scores_each(tmp_path):
    names = ["concise", "no_emojis", "no_exclamation"]
    args = [
        "continual", "--profiles", ",".join(names), "-n", "6", "--batch-size", "2", "--stage", "2", "--eval-every", "2", "--eval-prompts", "2",
        "--max-new-tokens", "12", "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=0", "--set", "save_checkpoint=false",
        "--no-control", "--jobs", "1", "--results", str(tmp_path), "--run-id", "continual",
    ]
    result = subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=900, env=WIDE)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "continual"
    config = RunConfig.from_file(run / "config.yaml")
    assert (config.profile, config.continual.add, config.continual.stage, config.changes()) == ("concise", names[1:], 2, [2, 4])
    profiles = [load_profile(n) for n in names]
    interactions = sorted(read_jsonl(run / "interactions.jsonl", InteractionRecord), key=lambda r: r.index)
    held = ["concise", "concise_and_no_emojis", "concise_and_no_emojis_and_no_exclamation"]
    assert [r.profile for r in interactions] == [h for h in held for _ in range(2)]
    for r in interactions:  # the scripted user holds every preference added so far, and complains about the first one failed
        active = profiles[: held.index(r.profile) + 1]
        failed = [c for p in active for c in p.checks if not c.passes(r.response)]
        assert r.followup in (failed[0].followup if failed else active[0].satisfied) and r.satisfied == (not failed)

    evals = [m for m in read_jsonl(run / "metrics.jsonl", METRIC) if isinstance(m, EvalRecord)]
    expected = [(arm, x, n) for arm, x in [("initial", 0), ("oracle", 0), ("treated", 2), ("treated", 4), ("treated", 6)] for n in names]
    assert sorted((m.arm, m.interactions, m.profile) for m in evals) == sorted(expected)
    samples = list(read_jsonl(run / "samples.jsonl", SampleRecord))
    for m in evals:
        mine = [s for s in samples if (s.arm, s.interactions, s.profile) == (m.arm, m.interactions, m.profile)]
        profile = profiles[names.index(m.profile)]
        assert len(mine) == 2 and all(s.compliant == profile.complies(s.answer) for s in mine)
        assert m.compliance == sum(s.compliant for s in mine) / 2 and (m.win_rate is None) == (m.arm == "initial")
    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (run / "summary.md").read_text()
    assert all(f"## Preference: {n}" in summary for n in names) and "concise, + no_emojis at 2, + no_exclamation at 4" in summary


def test_continual_needs_two_different_profiles():
    for args, message in [
        (["--profiles", "concise"], "give at least two profiles"),
        (["--profiles", "concise,concise"], "continual profiles must differ"),
        ([], "--profiles is required"),
        (["--profiles", "concise,no_emojis", "--profile", "detailed"], "leave out --profile"),
        (["--profiles", "concise,no_emojis", "-n", "8", "--stage", "8"], "below interactions (8)"),
        (["--profiles", "concise,no_emojis", "--set", "flip_at=4"], "not both"),
    ]:
        result = subprocess.run([*HINDSIGHT, "continual", *args, "--dry-run"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
