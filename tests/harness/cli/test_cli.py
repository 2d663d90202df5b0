"""The CLI package: its layout, shared typed options, --version, --json documents, the shared --set parser, the renamed
options, and the defects found trying it as a new user (each exit 2 with one line that names what is wrong)."""

from __future__ import annotations

import json
import socket
import subprocess
import typing
from pathlib import Path

import pytest

from core.records import EvalRecord, RunInfo

from conftest import HINDSIGHT

ROOT = Path(__file__).resolve().parents[3]
BASE = dict(n=20, compliance=0.5, clean=0.5, degenerate=0.0, relevant=1.0, mean_words=10.0, apology=0.0, meta=0.0, looping=0.0,
            empty=0.0, truncated=0.0, repetition=0.0, distinct2=1.0, prompt_similarity=0.5, reference_similarity=0.5, kl=0.0, seconds=1.0)
LONG_ID = "20260101-120000-sdpo-a-rather-long-profile-name-that-does-not-fit"


def one_line(result, code: int = 2) -> str:
    assert result.code == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def fake_run(results: Path, name: str, status: str = "finished", clean: float = 0.5, evals: bool = True, profile: str = "concise") -> Path:
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"profile: {profile}\ninteractions: 8\nmethod: sdpo\n", encoding="utf-8")
    info = RunInfo(run_id=name, status=status, seconds=978.6 if status == "finished" else None)  # type: ignore[arg-type]
    (folder / "run.json").write_text(info.model_dump_json(), encoding="utf-8")
    records = [EvalRecord(arm="initial", seed=0, interactions=0, **BASE)]  # type: ignore[arg-type]
    if evals:
        records += [EvalRecord(arm=arm, seed=0, interactions=8, **{**BASE, "clean": clean}) for arm in ("treated", "control")]  # type: ignore[arg-type]
    (folder / "metrics.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# layout and options
# ---------------------------------------------------------------------------------------------------------------
def test_every_cli_module_is_small_with_short_lines():
    for path in sorted((ROOT / "harness" / "cli").glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) < 400, path
        assert max(map(len, lines)) <= 160, path


def test_the_enums_list_exactly_the_component_layers_choices():
    """The CLI mirrors the Literal types (importing them would load torch on every --help): they must not drift."""
    import harness.config
    import judges
    import simulators
    import trainers
    from core.runtime import DeviceName
    from harness.cli import options
    from suites.runner import Backend
    from trainers.guard import GuardMode
    from trainers.offline import OfflineConfig
    from trainers.rlhi import RLHIConfig
    from trainers.sdpo import SDPOConfig

    def values(enum) -> list[str]:
        return [m.value for m in enum]

    def field(model, name) -> list[str]:
        return list(typing.get_args(model.model_fields[name].annotation))

    reference = "advantage_reference" if "advantage_reference" in SDPOConfig.model_fields else "baseline"
    assert values(options.Loss) == field(SDPOConfig, "loss")
    assert values(options.Teacher) == field(SDPOConfig, "teacher")
    assert sorted(values(options.AdvantageReference)) == sorted(field(SDPOConfig, reference))
    assert options.method_names() == trainers.METHODS.names() and set(typing.get_args(trainers.Method)) <= set(options.method_names())
    assert options.simulator_names() == simulators.SIMULATORS.names() and set(field(simulators.SimulatorSettings, "kind")) <= set(options.simulator_names())
    assert options.judge_names() == judges.judge_kinds() and set(field(judges.JudgeSettings, "kind")) <= set(options.judge_names())
    assert values(options.Device) == list(typing.get_args(DeviceName))
    assert values(options.EvalPersona) == field(harness.config.EvalSettings, "persona")
    assert values(options.ClassifierKind) == field(RLHIConfig, "classifier")
    assert values(options.Guard) == [g for g in typing.get_args(GuardMode) if g != "none"]
    assert values(options.GuardMode) == list(typing.get_args(GuardMode))
    assert values(options.TrainMethod) == field(OfflineConfig, "method") and values(options.Schedule) == field(OfflineConfig, "schedule")
    assert values(options.Backend) == list(typing.get_args(Backend))


def test_help_lists_the_choices_and_the_new_names(cli):
    result = cli("personalize", "--help", columns=250)
    assert result.code == 0
    for shown in ("rlhi-reward", "sampled_token", "topk_kl", "--advantage-reference", "neutral|plain", "ablation method"):
        assert shown in result.stdout, shown
    assert "--baseline" not in result.stdout  # hidden, still accepted
    assert "--reference" in cli("regress", "--help", columns=250).stdout
    trained = cli("train", "--help", columns=250).stdout
    assert "--advantage-reference" in trained and "--baseline" not in trained and "sdpo|sft" in trained and "cosine|constant" in trained


@pytest.mark.parametrize("options, config", [("harness.cli.options:RunOptions", "harness.config:RunConfig"),
                                             ("harness.cli.train:TrainOptions", "harness.train:TrainConfig")])
def test_every_option_names_a_field_of_its_config(options, config):
    """The one table from options to config keys (each field's ``key``) points at fields that exist."""
    import dataclasses
    import importlib

    def load(spec: str):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)

    model = load(config)
    keys = [f.metadata["key"] for f in dataclasses.fields(load(options)) if f.metadata["key"]]
    assert len(keys) > 10
    for key in keys:
        node = model
        for part in key.split("."):
            assert part in node.model_fields, key
            annotation = node.model_fields[part].annotation
            node = next((a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and hasattr(a, "model_fields")), None)


def test_version(cli):
    from harness import __version__

    result = cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"hindsight {__version__}"
    launched = subprocess.run([*HINDSIGHT, "--version"], capture_output=True, text=True, timeout=60)  # the console script's entry point
    assert launched.returncode == 0 and launched.stdout == f"hindsight {__version__}\n" and launched.stderr == ""


# ---------------------------------------------------------------------------------------------------------------
# --set, --config, renamed options
# ---------------------------------------------------------------------------------------------------------------
def test_a_bad_set_value_is_one_line_on_train_as_on_personalize(cli):
    for command in (["train", "--data", "x.jsonl"], ["personalize"]):
        line = one_line(cli(*command, "--set", "trainer.lr=[1,", "--dry-run"))
        assert "--set trainer.lr=[1,: not a YAML value" in line, line


def test_errors_from_options_do_not_blame_a_valid_config_and_all_are_reported(cli, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("profile: concise\ninteractions: 8\n", encoding="utf-8")
    line = one_line(cli("personalize", "--config", str(config), "--set", "method=bogus", "--set", "rlhi.beta=x", "--dry-run"))
    assert str(config) not in line and "--set method=bogus" in line and "--set rlhi.beta=x" in line, line
    config.write_text("profile: concise\ninteractions: 0\nbogus: 1\n", encoding="utf-8")
    line = one_line(cli("personalize", "--config", str(config), "--dry-run"))
    assert f"{config}:2: field 'interactions'" in line and f"{config}:3: field 'bogus'" in line, line


def test_train_errors_name_the_option_not_the_config(cli, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("data: x.jsonl\n", encoding="utf-8")
    line = one_line(cli("train", "--config", str(config), "--set", "trainer.lr=abc", "--dry-run"))
    assert line.count("--set trainer.lr=abc") == 1 and str(config) not in line, line


@pytest.mark.parametrize("command", [["personalize"], ["train", "--data", "x.jsonl"]])
def test_advantage_reference_and_the_deprecated_baseline(cli, command):
    new = cli(*command, "--advantage-reference", "plain", "--dry-run")
    assert new.code == 0 and new.stderr == "", new.stderr
    old = cli(*command, "--baseline", "plain", "--dry-run")
    assert old.code == 0 and old.stdout == new.stdout
    assert old.stderr.strip().splitlines() == ["warning: --baseline is deprecated; use --advantage-reference"]
    assert "plain" in new.stdout


def test_learn_from_sets_the_trainer_field_and_refuses_other_values(cli):
    assert "learn_from: all" in cli("personalize", "--dry-run").stdout
    assert "learn_from: complaints" in cli("personalize", "--learn-from", "complaints", "--dry-run").stdout
    bad = cli("personalize", "--learn-from", "praise", "--dry-run")
    assert bad.code == 2 and "'praise' is not one of 'all', 'complaints'" in bad.stderr


def test_regress_baseline_is_the_deprecated_name_of_reference(cli, tmp_path):
    result = cli("regress", "--baseline", str(tmp_path / "a.json"), "--candidate", str(tmp_path / "b.json"))
    assert result.stderr.splitlines()[0] == "warning: --baseline is deprecated; use --reference"
    assert result.code == 2 and "--suite" in result.stderr.splitlines()[1]
    assert "--reference is required" in one_line(cli("regress", "--candidate", "b.json"))


def test_dry_run_checks_the_neutral_pool(cli, tmp_path):
    line = one_line(cli("personalize", "--neutral-pool", str(tmp_path / "missing.txt"), "--dry-run"))
    assert "missing.txt" in line and "neutral-pool" in line


def test_usage_errors_name_the_option(cli):
    result = cli("personalize", "--method", "bogus", "--dry-run")
    assert result.code == 2 and "--method" in result.stderr and "rlhi-reward" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# runs, show, compare
# ---------------------------------------------------------------------------------------------------------------
def test_json_documents_of_runs_show_and_compare(cli, tmp_path):
    fake_run(tmp_path, "a", clean=0.25)
    fake_run(tmp_path, "b", clean=0.75, profile="no_emojis")
    listed = json.loads(cli("runs", "--results", str(tmp_path), "--json").stdout)
    assert [(r["run"], r["status"], r["clean"]["treated"]) for r in listed["runs"]] == [("a", "finished", 0.25), ("b", "finished", 0.75)]
    shown = json.loads(cli("show", "a", "--results", str(tmp_path), "--json").stdout)
    arms = {row["arm"]: row for row in shown["preferences"][0]["arms"]}
    assert shown["status"] == "finished" and arms["treated"]["metrics"]["clean"]["mean"] == 0.25 and arms["treated"]["interactions"] == 8
    compared = cli("compare", "a", "b", "--results", str(tmp_path), "--json")
    document = json.loads(compared.stdout)
    assert document["differ"] == ["profile"] and document["dropped"] == [] and compared.stderr == ""
    assert {(r["run"], r["arm"], r["fields"]["profile"]) for r in document["rows"]} == {
        ("a", "treated", "concise"), ("a", "control", "concise"), ("b", "treated", "no_emojis"), ("b", "control", "no_emojis")}


def test_compare_says_which_run_it_leaves_out_and_why(cli, tmp_path):
    fake_run(tmp_path, "done")
    fake_run(tmp_path, "early", status="running", evals=False)
    result = cli("compare", "done", "early", "--results", str(tmp_path))
    assert result.code == 0 and "done" in result.stdout
    assert result.stderr.strip() == "warning: early left out: no evaluation of a trained arm in metrics.jsonl (running)"
    document = json.loads(cli("compare", "done", "early", "--results", str(tmp_path), "--json").stdout)
    assert [d["run"] for d in document["dropped"]] == ["early"]


def test_run_ids_are_never_cut_at_80_columns(cli, tmp_path):
    fake_run(tmp_path, LONG_ID)
    result = cli("runs", "--results", str(tmp_path), columns=80)
    assert result.code == 0 and LONG_ID in [line.strip() for line in result.stdout.splitlines()], result.stdout  # whole, on its own line
    wide = cli("runs", "--results", str(tmp_path), columns=200)
    assert any(LONG_ID in line and "finished" in line for line in wide.stdout.splitlines()), wide.stdout  # a table row when it fits


def test_show_and_compare_on_broken_files_name_file_and_line(cli, tmp_path):
    folder = fake_run(tmp_path, "bad")
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(lines[0] + "\n{not json\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")
    for command in (["show", "bad"], ["compare", "bad"]):
        line = one_line(cli(*command, "--results", str(tmp_path)))
        assert f"{folder / 'metrics.jsonl'}:2: not JSON" in line, line
    fake_run(tmp_path, "good")
    listed = cli("runs", "--results", str(tmp_path), "--json")
    assert listed.code == 0 and [r["run"] for r in json.loads(listed.stdout)["runs"]] == ["good"]
    assert listed.stderr.strip() == f"warning: left out: {folder / 'metrics.jsonl'}:2: not JSON (Expecting property name enclosed in double quotes)"
    (folder / "metrics.jsonl").write_text('{"kind": "eval", "arm": "treated"}\n', encoding="utf-8")
    assert f"{folder / 'metrics.jsonl'}:1: not a metrics record" in one_line(cli("show", "bad", "--results", str(tmp_path)))
    (folder / "config.yaml").write_text("profile: [concise\n", encoding="utf-8")
    for command in (["show", "bad"], ["compare", "bad"]):
        line = one_line(cli(*command, "--results", str(tmp_path)))
        assert line.startswith(f"error: {folder / 'config.yaml'}:") and "invalid YAML" in line, line


# ---------------------------------------------------------------------------------------------------------------
# resume, serve, API keys
# ---------------------------------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_changes_nothing(cli, tmp_path):
    folder = fake_run(tmp_path, "done")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    line = one_line(cli("personalize", "--resume", "done", "--results", str(tmp_path)))
    assert "done finished" in line and "nothing to resume" in line, line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_resume_takes_the_machines_share_and_names_the_experiments_own_command(cli, tmp_path):
    """--jobs and --threads are the machine's, not the experiment's: --resume takes them. A stopped flip run says to
    continue it with `hindsight flip --resume`, the command it was started with."""
    fake_run(tmp_path, "done")
    line = one_line(cli("personalize", "--resume", "done", "--threads", "2", "--jobs", "1", "--results", str(tmp_path)))
    assert "nothing to resume" in line, line
    folder = fake_run(tmp_path, "flipped", status="failed")
    (folder / "config.yaml").write_text("profile: concise\ninteractions: 8\nmethod: sdpo\nflip_at: 4\n", encoding="utf-8")
    shown = cli("show", "flipped", "--results", str(tmp_path))
    assert shown.code == 0 and "`hindsight flip --resume flipped` continues it" in shown.stdout, shown
    assert "personalize --resume" not in shown.stdout


def test_resume_refuses_other_options_including_a_variants_own(cli, tmp_path):
    fake_run(tmp_path, "stopped", status="failed")
    line = one_line(cli("flip", "--resume", "stopped", "--flip-at", "4", "--lr", "1e-5", "--results", str(tmp_path)))
    assert "leave out --flip-at, --lr" in line, line


def test_serve_on_a_port_in_use_fails_before_loading_the_model(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*HINDSIGHT, "serve", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_an_unset_api_key_variable_is_reported_at_once(monkeypatch, tmp_path):
    from core.errors import UserInputError
    from core.llm_client import LLMClient, LLMSettings, ResponseCache

    monkeypatch.delenv("HINDSIGHT_TEST_UNSET_KEY", raising=False)
    client = LLMClient(LLMSettings(model="openai/x", api_base="http://127.0.0.1:9/v1", api_key_env="HINDSIGHT_TEST_UNSET_KEY"), ResponseCache(tmp_path))
    with pytest.raises(UserInputError, match="HINDSIGHT_TEST_UNSET_KEY .*is not set"):
        client.complete([{"role": "user", "content": "hi"}])
    assert client.usage().retries == 0


def test_an_unset_api_key_variable_fails_the_dry_run(cli, monkeypatch):
    monkeypatch.delenv("HINDSIGHT_TEST_UNSET_KEY", raising=False)
    line = one_line(cli("personalize", "--judge-model", "openai/x", "--judge-api-key-env", "HINDSIGHT_TEST_UNSET_KEY", "--dry-run"))
    assert "HINDSIGHT_TEST_UNSET_KEY is not set" in line and "judge.llm.api_key_env" in line, line
    monkeypatch.setenv("HINDSIGHT_TEST_UNSET_KEY", "sk-test")
    assert cli("personalize", "--judge-model", "openai/x", "--judge-api-key-env", "HINDSIGHT_TEST_UNSET_KEY", "--dry-run").code == 0


def test_help_paragraphs_wrap_to_the_terminal_and_examples_keep_their_lines(cli):
    from harness.cli.base import reflow

    doc = "One sentence that\nwraps here.\n\nExamples:\n\n  hindsight a\n  hindsight b\n- item one\n- item two\ncontinued"
    assert reflow(doc) == "One sentence that wraps here.\n\nExamples:\n\n  hindsight a\n  hindsight b\n- item one\n- item two continued"
    wide = cli("sweep", "--help", columns=250).stdout
    # a paragraph the docstring breaks over several lines is one line on a wide terminal
    assert "The spec (YAML): profiles (a list, or `all`: every benign shipped profile), seeds (a count or a list), methods" in wide
    assert "  hindsight sweep status all_profiles" in wide
