"""The Python API (harness/api.py): a tiny real run from Python, read back as records and a DataFrame; the CLI's checks."""

import subprocess
import sys

import pytest

import harness
from core.errors import UserInputError
from core.records import EvalRecord, InteractionRecord, TrainRecord

TINY = dict(
    interactions=4, batch_size=2, eval_every=2, eval_prompts=2, max_new_tokens=12, control=False, oracle=False, jobs=1,
    checkpoint_every=None, save_checkpoint=False,
)


def test_import_harness_stays_light() -> None:
    code = ("import sys, harness; assert harness.__version__; heavy = [m for m in ('torch', 'transformers', 'pydantic', 'harness.api') "
            "if m in sys.modules]; assert not heavy, heavy; assert callable(harness.personalize) and 'harness.api' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        harness.nope  # noqa: B018


def test_personalize_runs_and_load_run_reads_it_back(tmp_path) -> None:
    seen: list[dict] = []
    run = harness.personalize(profile="concise", **TINY, set={"eval.max_new_tokens": 12, "eval.kl_prompts": 1, "trainer.lr": 1e-5},
                              results=tmp_path, run_id="api", progress=seen.append)
    assert isinstance(run, harness.Run) and run.path == tmp_path / "api" and run.id == "api"
    assert (run.config.profile, run.config.interactions, run.config.batch_size, run.config.eval.every) == ("concise", 4, 2, 2)
    assert run.config.trainer.lr == 1e-5 and not run.config.control and not run.config.oracle
    assert run.info.status == "finished" and run.info.command.startswith("harness.personalize(")
    assert {e["type"] for e in seen} >= {"phase", "start", "step", "eval", "done"}

    assert all(isinstance(r, EvalRecord) for r in run.evals) and all(isinstance(r, TrainRecord) for r in run.train)
    assert sorted((r.arm, r.interactions) for r in run.evals) == [("initial", 0), ("treated", 2), ("treated", 4)]
    assert [(r.arm, r.interactions) for r in run.train] == [("treated", 2), ("treated", 4)]
    assert all(isinstance(r, InteractionRecord) for r in run.interactions)
    assert sorted(r.index for r in run.interactions) == [0, 1, 2, 3]
    assert len(run.samples) == 2 * len(run.evals)
    assert (run.path / "summary.md").is_file() and (run.path / "curve.png").is_file()

    again = harness.load_run(str(run.path))
    assert again.evals == run.evals and again.interactions == run.interactions and again.config == run.config

    pd = pytest.importorskip("pandas")
    frame = run.frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3
    assert {"arm", "seed", "interactions", "clean", "compliance", "win_rate", "kl", "mean_words"} <= set(frame.columns)
    assert frame.set_index(["arm", "interactions"]).loc[("treated", 4), "clean"] == next(r.clean for r in run.evals if r.interactions == 4)
    train = run.to_pandas("train")
    assert {"step", "interactions", "loss", "step_seconds"} <= set(train.columns) and len(train) == 2
    assert len(run.frame("interactions")) == 4


def test_personalize_refuses_what_the_cli_refuses(tmp_path) -> None:
    with pytest.raises(UserInputError, match="unknown profile 'no_such_profile'") as caught:
        harness.personalize(profile="no_such_profile", results=tmp_path)
    cli = subprocess.run([sys.executable, "-c", "from harness.cli import run; run()", "personalize", "--profile", "no_such_profile",
                          "--results", str(tmp_path), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and caught.value.render() in " ".join(cli.stderr.split())
    with pytest.raises(UserInputError, match="adversarial"):
        harness.personalize(profile="insulting", results=tmp_path)
    with pytest.raises(UserInputError, match="eval.every"):
        harness.personalize(interactions=4, batch_size=4, eval_every=2, results=tmp_path)
    with pytest.raises(UserInputError, match="field 'trainer.lrr'"):
        harness.personalize(set={"trainer.lrr": 1}, results=tmp_path)
    with pytest.raises(TypeError, match="did you mean 'profile'"):
        harness.personalize(profil="concise", results=tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserInputError, match="already exists"):
        harness.personalize(results=tmp_path, run_id="taken")
    with pytest.raises(UserInputError, match="not a run folder"):
        harness.load_run(tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing ran, nothing was written


def test_dry_run_and_a_config_are_resolved_as_the_cli_resolves_them(tmp_path) -> None:
    config = harness.personalize(profile="no_emojis", method="rlhi-rewrite", lr=3e-6, lora=True, dry_run=True)
    assert config.rlhi.lr == 3e-6 and config.policy.lora is not None and config.generation.max_new_tokens is not None
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    cli = subprocess.run([sys.executable, "-c", "from harness.cli import run; run()", "personalize", "--config", str(path), "--seeds", "2",
                          "--set", "trainer.lr=1e-5", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    import yaml

    assert harness.personalize(config=path, seeds=2, set={"trainer.lr": 1e-5}, dry_run=True).model_dump(mode="json") == yaml.safe_load(cli.stdout)
    assert harness.personalize(config=config, seeds=2, dry_run=True).seeds == 2


def test_progress_true_prints_plain_lines_to_stderr(capsys) -> None:
    from harness.api import _print_progress

    record = {"arm": "treated", "seed": 0, "interactions": 4, "profile": None, "clean": 0.5, "compliance": 0.75, "mean_words": 12.0, "kl": 0.01,
              "win_rate": 0.6}
    for event in [{"type": "phase", "text": "evaluating the untrained model"}, {"type": "step", "arm": "treated", "seed": 0, "done": 2},
                  {"type": "eval", "arm": "treated", "seed": 0, "record": record}, {"type": "done", "arm": "treated", "seed": 0}]:
        _print_progress(event)
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "evaluating the untrained model",
        "eval treated s0 @ 4: clean 50% · compliant 75% · 12 words · KL 0.010 · win rate 60%",
        "treated s0 done",
    ]
