"""Bad inputs give one line naming the file, line and field, exit 2 — from the real CLI."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserInputError
from core.prompts import PromptSettings, load_prompts
from simulators.profile import load_profile, load_profile_file

from conftest import HINDSIGHT


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def shown_flags(command) -> list[str]:
    """The command's options as flags, leaving out hidden ones (deprecated spellings such as --baseline)."""
    params = inspect.signature(command).parameters.values()
    return [p.name.replace("_", "-").rstrip("-") for p in params if not getattr(p.annotation.__metadata__[0], "hidden", False)]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_profile_with_a_bad_field_names_file_line_and_field(tmp_path):
    bad = write(tmp_path / "terse.yaml", "name: terse\ndescription: I like short answers, please.\nchecks:\n  - kind: max_words\n    value: -3\n    followup: shorter\n")
    with pytest.raises(UserInputError) as caught:
        load_profile_file(bad)
    message = caught.value.render()
    assert message.startswith(f"{bad}:5: field 'checks.0.value'")
    result = cli("profiles", "validate", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "checks.0.value" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        ("name: terse\ndescription: [unclosed\n", ":3", "invalid YAML"),
        ("name: terse\ndescription: I like short answers.\ncolour: blue\n", ":3: field 'colour'", "unknown field"),
        ("name: other\ndescription: I like short answers.\n", ": field 'name'", "must match the file name"),
        ("name: terse\ndescription: I like short answers.\nchecks:\n  - kind: forbid\n    pattern: '(('\n    followup: stop\n", ":5: field 'checks.0.pattern'", "regex"),
        ("name: terse\ndescription: I like short answers.\nchecks:\n  - kind: shout\n    followup: stop\n", ":4: field 'checks.0'", "kind"),
        ("- a list\n", ":1", "mapping"),
    ],
)
def test_profile_errors(tmp_path, text, where, needle):
    path = write(tmp_path / "terse.yaml", text)
    with pytest.raises(UserInputError) as caught:
        load_profile_file(path)
    message = caught.value.render()
    assert message.startswith(f"{path}{where}"), message
    assert needle in message


def test_profiles_list_fits_80_columns_with_whole_names_and_check_labels_not_regexes(tmp_path, monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    from harness import cli
    from harness.cli import profiles
    from simulators.profile import available_profiles

    mine = tmp_path / "mine"
    mine.mkdir()
    write(mine / "a_custom_user_with_a_rather_long_name.yaml", "name: a_custom_user_with_a_rather_long_name\ndescription: I dislike foo words.\n"
          "checks:\n  - kind: forbid\n    pattern: '(?i)\\bfoo[a-z]+$'\n    followup: no foo\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HINDSIGHT_PROFILES", str(mine))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(profiles, "console", Console())  # the module's console keeps the width it found at import
    result = CliRunner().invoke(cli.app, ["profiles", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80
    words = set(result.output.split())
    assert set(available_profiles()) <= words  # every name whole, on one line
    assert not set("\\[]{}^$|*+") & set(result.output) and "(?" not in result.output
    assert "forbid a custom regex" in result.output and "forbid a background-first opening" in result.output and "at most 40 words" in result.output


def test_unknown_profile_lists_where_to_look():
    with pytest.raises(UserInputError, match="profiles list"):
        load_profile("no-such-profile")


def test_profile_search_path_prefers_the_users_folder(tmp_path, monkeypatch):
    write(tmp_path / "concise.yaml", "name: concise\ndescription: My own concise, overriding the built-in one.\n")
    monkeypatch.setenv("HINDSIGHT_PROFILES", str(tmp_path))
    assert load_profile("concise").description.startswith("My own")


def test_prompt_file_errors_name_the_line(tmp_path):
    path = write(tmp_path / "p.jsonl", json.dumps({"prompt": "ok"}) + "\n" + "{broken\n")
    with pytest.raises(UserInputError, match=rf"^{path}:2: not valid JSON"):
        load_prompts(PromptSettings(source=str(path)))
    path = write(tmp_path / "p.jsonl", json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    with pytest.raises(UserInputError, match=rf"^{path}:2: field 'prompt'"):
        load_prompts(PromptSettings(source=str(path)))
    path = write(tmp_path / "p.jsonl", json.dumps({"prompt": "ok", "split": "dev"}) + "\n")
    with pytest.raises(UserInputError, match=rf"^{path}:1: field 'split'"):
        load_prompts(PromptSettings(source=str(path)))


def test_prompt_file_without_splits_holds_out_every_fourth(tmp_path):
    path = write(tmp_path / "p.jsonl", "".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(8)))
    prompts = load_prompts(PromptSettings(source=str(path), eval_prompts=2))
    assert prompts.heldout == ("question 3", "question 7")
    assert len(prompts.train) == 6
    # every training prompt once per epoch, in a seeded order
    assert sorted(prompts.draw(i, seed=1) for i in range(6)) == sorted(prompts.train)
    assert [prompts.draw(i, seed=1) for i in range(6)] == [prompts.draw(i, seed=1) for i in range(6)]


def test_hf_prompt_source_reads_a_dataset_through_datasets(tmp_path, monkeypatch):
    """prompts hf:NAME for real: `datasets` loads a local dataset folder (no hub); its test split is held out."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "asks"
    folder.mkdir()
    write(folder / "train.jsonl", "".join(json.dumps({"question": f"train question {i}", "id": i}) + "\n" for i in range(5)))
    write(folder / "test.jsonl", "".join(json.dumps({"question": f"held-out question {i}", "id": i}) + "\n" for i in range(3)))
    prompts = load_prompts(PromptSettings(source=f"hf:{folder}", eval_prompts=2))
    assert sorted(prompts.train) == [f"train question {i}" for i in range(5)]
    assert prompts.heldout == ("held-out question 0", "held-out question 1")
    labels = tmp_path / "labels"
    labels.mkdir()
    write(labels / "train.jsonl", "".join(json.dumps({"label": i}) + "\n" for i in range(3)))
    with pytest.raises(UserInputError, match=rf"^hf:{labels}: split 'train' has none of the columns prompt, instruction"):
        load_prompts(PromptSettings(source=f"hf:{labels}", eval_prompts=2))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: one line saying so
    with pytest.raises(UserInputError, match=rf"^hf:{folder} needs the `datasets` package"):
        load_prompts(PromptSettings(source=f"hf:{folder}"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "nobody"], "unknown profile 'nobody'"),
        (["--prompts", "/no/such.jsonl", "--dry-run"], "/no/such.jsonl: no such prompt file"),
        (["--batch-size", "3", "--eval-every", "4", "--dry-run"], "multiple of batch_size"),
        (["--loss", "hinge", "--dry-run"], "--loss"),
        (["--set", "trainer.lr", "--dry-run"], "expected KEY=VALUE"),
        (["--set", "trainer.nonsense=1", "--dry-run"], "trainer.nonsense"),
        (["--run-id", "../escape", "--dry-run"], "--run-id '../escape': use letters, digits"),
    ],
)
def test_bad_personalize_options_exit_2_with_one_line(args, needle):
    result = cli("personalize", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert needle in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("args", "needle"), [(["--interactions", "0"], "Invalid value"), (["--no-such-option"], "No such option")])
def test_usage_errors_are_one_line_exit_2(args, needle):
    """Unknown options and out-of-range values (click's usage errors) are one line too, pointing at --help."""
    result = cli("personalize", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert needle in result.stderr and "--help" in result.stderr


def test_run_id_cannot_escape_results():
    result = cli("personalize", "--run-id", "../escape")
    assert result.returncode == 2 and "letters, digits" in result.stderr


def test_dry_run_prints_a_config_that_validates_again(tmp_path):
    from harness.config import RunConfig

    result = cli("personalize", "--profile", "concise", "--lr", "1e-5", "--set", "trainer.epochs=2", "--no-control", "--dry-run")
    assert result.returncode == 0, result.stderr
    config = RunConfig.from_file(write(tmp_path / "config.yaml", result.stdout))
    assert config.trainer.lr == 1e-5 and config.trainer.epochs == 2 and config.control is False


def test_set_reads_values_with_yaml_1_2_booleans(tmp_path):
    from core.yamlio import load_value
    from harness.config import RunConfig

    assert [load_value(v) for v in ("off", "on", "yes", "no", "y", "n", "true", "False", "2", "1.5", "null")] == [
        "off", "on", "yes", "no", "y", "n", True, False, 2, 1.5, None]
    result = cli("personalize", "--set", "eval.persona=off", "--set", "eval.truncated_is_degenerate=true", "--dry-run")
    assert result.returncode == 0, result.stderr
    config = RunConfig.from_file(write(tmp_path / "config.yaml", result.stdout))
    assert config.eval.persona == "off" and config.eval.truncated_is_degenerate is True
    wrong = cli("personalize", "--set", "eval.persona=on", "--dry-run")  # a string, so the error lists the allowed values
    assert wrong.returncode == 2 and "'off', 'trainer' or 'profile'" in wrong.stderr, wrong.stderr
    by_hand = RunConfig.from_file(write(tmp_path / "by_hand.yaml", "eval:\n  persona: off\n  truncated_is_degenerate: true\n"))
    assert by_hand.eval.persona == "off" and by_hand.eval.truncated_is_degenerate is True  # a --config file reads YAML 1.2 too


def test_a_profile_without_checks_is_refused_under_the_scripted_user_before_any_model_loads(tmp_path):
    plain = write(tmp_path / "plain.yaml", "name: plain\ndescription: I like answers that suit me, whatever that means.\n")
    for extra in (["--dry-run"], ["--results", str(tmp_path / "results")], ["--simulator", "complain", "--dry-run"]):
        result = cli("personalize", "--profile", str(plain), *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "profile 'plain' has no checks" in result.stderr
        assert "add checks" in result.stderr and "--simulator llm" in result.stderr
    assert not (tmp_path / "results").exists()  # refused before the run folder (and any model)
    llm = cli("personalize", "--profile", str(plain), "--simulator-model", "openai/x", "--api-base", "http://127.0.0.1:9/v1", "--dry-run")
    assert llm.returncode == 0, llm.stderr


def test_personalize_help_documents_every_option_and_its_default():
    from harness.cli import personalize

    result = subprocess.run([*HINDSIGHT, "personalize", "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0
    flags = shown_flags(personalize)
    missing = [f for f in flags if f"--{f}" not in result.stdout]
    assert not missing, missing
    for shown in ("(default: 64)", "(default: concise)", "(default: 2e-5)", "(default: neutral)"):
        assert shown in result.stdout, shown


@pytest.mark.parametrize("command, own", [("flip", ["--flip-at", "the SDPO paper flipped after 250"]), ("continual", ["--profiles", "--stage"])])
def test_flip_and_continual_take_every_personalize_option(command, own):
    from harness.cli import personalize

    result = subprocess.run([*HINDSIGHT, command, "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0
    flags = shown_flags(personalize)
    missing = [f for f in [*flags, *own] if f"--{f}" not in result.stdout and f not in result.stdout]
    assert not missing, missing
    assert "Judge" in result.stdout and "(default: rules)" in result.stdout and "(default: 64)" in result.stdout
