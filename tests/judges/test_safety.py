"""Safe loading: safetensors only, no remote code unless asked, YAML without Python tags, run folders that stay under results/."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from core.errors import UserInputError
from core.models import resolve_model
from core.policy import Policy, PolicySettings
from harness.cli import check_run_id

from conftest import HINDSIGHT
from stub_provider import StubProvider


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*HINDSIGHT, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_a_folder_of_pickled_weights_is_refused_naming_the_file(tmp_path, weights):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / weights).write_bytes(b"\x80\x04not really a pickle")
    for load in (resolve_model, lambda spec: Policy.load(PolicySettings(model=spec, device="cpu"))):
        with pytest.raises(UserInputError) as caught:
            load(str(tmp_path))
        message = caught.value.render()
        assert message.startswith(f"{tmp_path / weights}: pickled weights") and "only safetensors" in message
    result = cli("models", "warm", str(tmp_path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and weights in result.stderr and "Traceback" not in result.stderr


def test_an_adapter_folder_needs_safetensors_too(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UserInputError, match="adapter_model.bin: pickled weights"):
        resolve_model(str(tmp_path))


def test_models_load_with_safetensors_only_and_no_remote_code_unless_asked(monkeypatch):
    import transformers

    seen: list[dict] = []

    def refuse(source, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    for trust in (False, True):
        with pytest.raises(RuntimeError, match="stop here"):
            Policy.load(PolicySettings(device="cpu", trust_remote_code=trust))
    assert [(k["use_safetensors"], k["trust_remote_code"]) for k in seen] == [(True, False), (True, True)]
    assert yaml.safe_load(cli("personalize", "--dry-run").stdout)["policy"]["trust_remote_code"] is False
    assert yaml.safe_load(cli("personalize", "--trust-remote-code", "--dry-run").stdout)["policy"]["trust_remote_code"] is True
    help_text = subprocess.run([*HINDSIGHT, "personalize", "--help"], capture_output=True, text=True, timeout=120, env={"COLUMNS": "300", "PATH": ""}).stdout
    assert "--trust-remote-code" in help_text and "DANGEROUS" in help_text


PYTHON_TAG = "!!python/object/apply:os.system ['touch {marker}']"


@pytest.mark.parametrize("where", ["profile", "config", "set"])
def test_python_yaml_tags_are_rejected_in_one_line_and_never_run(tmp_path, where):
    marker = tmp_path / "pwned"
    tag = PYTHON_TAG.format(marker=marker)
    if where == "profile":
        path = tmp_path / "evil.yaml"
        path.write_text(f"name: evil\ndescription: {tag}\n")
        result = cli("profiles", "validate", str(path))
    elif where == "config":
        path = tmp_path / "config.yaml"
        path.write_text(f"interactions: 8\ntrainer:\n  lr: {tag}\n")
        result = cli("personalize", "--config", str(path), "--dry-run")
    else:
        path = None
        result = cli("personalize", "--set", f"trainer.lr={tag}", "--dry-run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "python/object" in result.stderr and (path is None or str(path) in result.stderr)
    assert not marker.exists()


@pytest.mark.parametrize("run_id", ["../up", "a/b", "/etc/x", ".hidden", "a/../../b", "..", "x" * 200, "name\n", "c:\\x", ""])
def test_run_ids_that_could_leave_results_are_refused(run_id):
    with pytest.raises(UserInputError, match="letters, digits"):
        check_run_id(run_id)


def test_the_default_usereval_folder_stays_under_results(tmp_path):
    rows = tmp_path / "..evil name;$(x).jsonl"
    rows.write_text('{"prompt": "p", "response": "r", "reference": "s"}\n')
    with StubProvider(lambda body: ("A", 1, 1)) as judge:
        result = cli("usereval", str(rows), "--judge-api-base", judge.base, "--persona", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_dir()) == ["results", "results/usereval-..evil-name-x-"]
