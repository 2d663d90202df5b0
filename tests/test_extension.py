"""A new trainer method, judge backend, simulator and suite entry type are each one definition plus one registration.

Each is defined here with its single registration call and run through the public build path, the way a new file in
trainers/, judges/, simulators/ or suites/ would be (there, the one extra line is its import in the package's
__init__.py). No model is loaded.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from core.followups import FollowupCase
from core.interaction import Followup
from core.registry import registered
from harness.config import RunConfig
from harness.loop import _interaction_record, build_trainer
from harness.report import _trainer_line
from harness.schedule import build_schedule
from judges import BACKENDS, JudgeSettings, build_judge, judge_kinds
from judges.backends import BackendReply
from judges.base import Pair
from judges.followup import build_classifier
from simulators import SIMULATORS, SimulatorSettings, build_simulator
from suites.results import MetricResult
from suites.runner import EvalOptions, evaluate_checkpoint
from suites.suite import EntryRun, SuiteEntry, entry_type, load_suite, remove_entry_type
from trainers import METHODS, Method, StepResult


# ----- a trainer method: one factory, one registration ---------------------------------------------------------------
class CountingTrainer:
    """Learns nothing; counts the interactions it saw."""

    guard = None
    persona = "counts things"

    def __init__(self, scale: float):
        self.scale, self.seen = scale, 0

    def step(self, batch):
        self.seen += len(batch)
        return StepResult(metrics={"seen": self.scale * self.seen}, per_interaction=[{"n": self.seen} for _ in batch])

    def record_fields(self, summary: dict) -> dict:
        return {"update": summary}

    def llm_parts(self) -> dict[str, list[object]]:
        return {}

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]


def counting(inputs) -> CountingTrainer:
    return CountingTrainer(scale=inputs.config.rlhi.lr * 1e5)


# ----- a judge backend ----------------------------------------------------------------------------------------------
class TieBackend:
    """Answers TIE to a pairwise prompt, and the first verdict word when it is given its labels."""

    def __init__(self, labels):
        self.labels = labels
        self.name = "tie"

    def answer(self, prompts: Sequence[list]) -> list[BackendReply]:
        return [BackendReply(self.labels[0] if self.labels else "TIE") for _ in prompts]


def tie_backend(settings, device, labels, max_tokens) -> TieBackend:
    return TieBackend(labels)


# ----- a simulator ----------------------------------------------------------------------------------------------------
class ParrotSimulator:
    """Replies with the profile's name, satisfied."""

    def respond(self, conversations, profile) -> list[Followup]:
        return [Followup(text=profile.name, raw=profile.name, satisfied=True) for _ in conversations]


def parrot(settings) -> ParrotSimulator:
    return ParrotSimulator()


# ----- a suite entry type -----------------------------------------------------------------------------------------------
class WordCountEntry(SuiteEntry):
    """The mean word count of a list of texts written in the suite (no model needed)."""

    kind: Literal["word_count_test"]
    texts: list[str]

    def label(self) -> str:
        return self.name or "word_count"

    def run(self, run: EntryRun) -> tuple[dict[str, Any], dict[str, Any]]:
        counts = [float(len(t.split())) for t in self.texts]
        return {"words": MetricResult(value=sum(counts) / len(counts), stderr=None, n=len(counts))}, {"model": run.model_name}


@pytest.fixture
def registered_components():
    METHODS.register("counting-test", help="counts interactions", summary=lambda config: "counting: nothing to tune")(counting)
    BACKENDS.register("tie-test")(tie_backend)
    SIMULATORS.register("parrot-test")(parrot)
    entry_type(WordCountEntry)
    yield
    METHODS.remove("counting-test")
    BACKENDS.remove("tie-test")
    SIMULATORS.remove("parrot-test")
    remove_entry_type("word_count_test")


def test_registered_components_are_cli_choices(registered_components, cli):
    done = cli("personalize", "--method", "counting-test", "--simulator", "parrot-test", "--judge", "tie-test", "--dry-run")
    assert done.code == 0, done.stderr
    assert "method: counting-test" in done.stdout and "kind: parrot-test" in done.stdout and "kind: tie-test" in done.stdout
    refused = cli("personalize", "--method", "nope", "--dry-run")
    assert refused.code == 2 and "'nope' is not one of" in refused.stderr and "'counting-test'" in refused.stderr


def test_a_new_trainer_method(registered_components, tmp_path):
    config = RunConfig(method="counting-test", interactions=8, control=False)
    assert RunConfig.model_validate(config.model_dump(mode="json")).method == "counting-test"  # config.yaml round trip
    schedule = build_schedule(config)
    trainer = build_trainer(config, schedule, policy=None, engine=None, arm="treated", seed=0, neutral_pool=())  # type: ignore[arg-type]
    assert isinstance(trainer, CountingTrainer) and trainer.scale == pytest.approx(2.0)
    assert registered(trainer).registry == "trainer method" and registered(trainer).name == "counting-test"
    assert _trainer_line(config) == "counting: nothing to tune"
    assert "counting-test: counts interactions" in __import__("trainers").method_help()
    with pytest.raises(ValueError, match="method counting-test has none"):
        RunConfig(method="counting-test", redteam={"guard": "both"}, control=False)
    with pytest.raises(ValueError, match=r"unknown trainer method 'nope' \(known: .*counting-test"):
        RunConfig(method="nope")
    assert set(typing.get_args(Method)) <= set(METHODS.names())  # the built-in names the CLI lists


def test_the_built_in_methods_are_the_literal():
    assert set(typing.get_args(Method)) == set(METHODS.names())


def test_a_new_judge_backend(registered_components):
    settings = JudgeSettings(kind="tie-test")
    assert "tie-test" in judge_kinds()
    judge = build_judge(settings, profile=None)
    verdicts = judge.compare([Pair("Q?", "a", "b")], persona="anyone")
    assert [v.winner for v in verdicts] == ["tie"] and judge.name == "pairwise:tie"
    classifier = build_classifier("tie-test")  # the follow-up classifier takes any backend too
    assert classifier.classify([FollowupCase("Q?", "A.", "Something else?")]) == ["new_request"]
    with pytest.raises(ValueError, match="unknown judge 'nope'"):
        JudgeSettings(kind="nope")


def test_a_new_simulator(registered_components):
    simulator = build_simulator(SimulatorSettings(kind="parrot-test"))
    profile = build_schedule(RunConfig()).user_at(0)
    followups = simulator.respond([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]], profile)
    assert followups == [Followup(text="concise", raw="concise", satisfied=True)]
    assert registered(simulator).as_dict()["args"]["settings"]["kind"] == "parrot-test"


def test_a_new_suite_entry_type(registered_components, tmp_path, monkeypatch):
    path = tmp_path / "suite.yaml"
    path.write_text("name: t\nentries:\n  - kind: word_count_test\n    texts: [one two, three four five six]\n")
    monkeypatch.setenv("HINDSIGHT_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = evaluate_checkpoint("smollm2-135m", load_suite(str(path)), EvalOptions(device="cpu"))
    (entry,) = result.entries
    assert (entry.name, entry.kind, entry.metrics["words"].value, entry.details) == ("word_count", "word_count_test", 3.0, {"model": "smollm2-135m"})
    # the built-in kinds still load, and an unknown kind names the registered ones
    path.write_text("name: t\nentries:\n  - kind: nope\n")
    with pytest.raises(Exception, match="word_count_test"):
        load_suite(str(path))


def test_interaction_records_come_from_the_trainer(registered_components):
    from core.engine import Generation
    from core.interaction import Interaction

    trainer = CountingTrainer(1.0)
    interaction = Interaction(0, "Q?", [], [1], Generation("A.", (2,), True), Followup("ok", "ok", True))
    record = _interaction_record("counting-test", trainer, "treated", 0, 0, interaction, {"n": 1}, None)
    assert record.update == {"n": 1} and record.method == "counting-test" and record.advantage in (None, {})


def test_files_needed(registered_components):
    """The registration calls above are the whole extension: nothing else in the package names these components."""
    root = Path(__file__).resolve().parents[1]
    names = ("counting-test", "tie-test", "parrot-test", "word_count_test")
    for package in ("core", "harness", "judges", "simulators", "suites", "trainers"):
        for source in (root / package).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            assert not any(name in text for name in names), source
