"""Offline SDPO / SFT on logged tuples: the loss on hand-computed values, the trainer against an independent computation,
the real `hindsight train` with checkpoints and exact resume, 2 processes (accelerate, gloo) against 1, and the
WildChat-UserEval builder's suite judged by the existing UserEval code."""

from __future__ import annotations

import itertools
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.conversations import load_tuples
from core.llm_client import LLMClient, LLMSettings, ResponseCache
from core.state_io import atomic_folder, flatten, load_state, save_state, unflatten
from judges.backends import LiteLLMBackend
from judges.followup import HeuristicClassifier
from judges.usereval import PERSONA_SYSTEM, UserEval, load_rows
from trainers import losses
from trainers.offline import OfflineConfig, OfflineTrainer

from conftest import DATA, HINDSIGHT
from stub_provider import StubProvider

SAMPLE = DATA / "wildchat_sample.jsonl"
SMALL = ["--data", str(SAMPLE), "--device", "cpu", "--max-prompt-tokens", "128", "--max-completion-tokens", "32", "--lr", "1e-5", "--save-every", "1"]


# ----- pure parts ------------------------------------------------------------------------------------------
def test_offline_surrogate_on_hand_computed_values_and_where_it_differs_from_the_online_loss():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]], requires_grad=True)
    advantages = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    terms = losses.offline_surrogate(logprobs, advantages, mask)
    # row 0: −(0.5·−1 + −1·−2)/2 = −0.75; row 1 has no valid token: 0
    assert terms.tolist() == pytest.approx([-0.75, 0.0])
    terms[0].backward()
    offline_grad = logprobs.grad.clone()
    logprobs.grad = None
    online = losses.policy_gradient_loss(logprobs, logprobs.detach(), advantages, mask, clip_eps=0.2)
    assert online.item() == pytest.approx(0.25)  # −mean(A) at ratio 1: a different value …
    online.backward()
    assert torch.allclose(logprobs.grad, offline_grad) and offline_grad[0].tolist() == pytest.approx([-0.25, 0.5, 0.0])  # … the same gradient
    assert losses.nll(torch.tensor([[-1.0, -2.0, -9.0]]), torch.tensor([[True, True, False]])).tolist() == pytest.approx([1.5])


def test_schedule_warms_up_without_a_zero_step_then_cosine():
    cfg = OfflineConfig(lr=1.0, warmup_ratio=0.1)
    rates = [cfg.lr_at(s, 20) for s in range(20)]
    assert rates[:2] == pytest.approx([1 / 3, 2 / 3]) and rates[2] == pytest.approx(1.0)  # ceil(0.1·20) = 2 warm-up steps
    assert rates[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 18))) and 0 < rates[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(rates[2:]))
    assert OfflineConfig(lr=1.0, schedule="constant", warmup_ratio=0).lr_at(7, 20) == 1.0
    with pytest.raises(ValueError, match="template"):
        OfflineConfig(template="{prompt} only")


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    param = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([param], lr=1e-3, betas=(0.8, 0.95))
    param.grad = torch.randn(3, 2)
    optimizer.step()
    state = {"optimizer": optimizer.state_dict()}
    skeleton, tensors = flatten(state)
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert list(back["optimizer"]["state"]) == [0] and back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)
    with atomic_folder(tmp_path / "ckpt") as folder:
        save_state(folder, "optimizer", state)
    loaded = load_state(tmp_path / "ckpt", "optimizer")
    fresh = torch.optim.AdamW([param], lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg_sq"], optimizer.state_dict()["state"][0]["exp_avg_sq"])
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "broken") as folder:
        (folder / "half.json").write_text("{")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing half-written is left, under any name
    with pytest.raises(TypeError, match="cannot store"):
        flatten({"x": object()})


# ----- the trainer on the real SmolLM2 ----------------------------------------------------------------------
def _tuples(n: int):
    return load_tuples(str(SAMPLE), classifier=HeuristicClassifier()).tuples[:n]


def _weights(policy) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in policy.model.parameters()]).clone()


@pytest.mark.parametrize("method", ["sdpo", "sft"])
def test_a_step_takes_the_loss_an_independent_computation_gives(fresh_policy, method):
    from accelerate import Accelerator

    cfg = OfflineConfig(method=method, batch_size=2, micro_batch=1, lr=1e-5, max_prompt_tokens=128, max_completion_tokens=32)
    trainer = OfflineTrainer(fresh_policy, cfg, Accelerator(cpu=True))
    rows = _tuples(2)
    encoded = [trainer.encode(t) for t in rows]
    assert all(e.answer[-1] == fresh_policy.eos_token_id for e in encoded if not e.cut)
    expected = []
    with torch.no_grad():
        for e in encoded:  # one row at a time, no trainer code: the formulas of the module docstring
            student = fresh_policy.score([e.context], [e.answer]).logprobs[0]
            if method == "sft":
                expected.append(float(-student.mean()))
                continue
            teacher = fresh_policy.score([e.hindsight], [e.answer]).logprobs[0]
            k = cfg.ignore_first_k
            expected.append(float((-(teacher[k:] - student[k:]) * student[k:]).mean()))
    before = _weights(fresh_policy)
    metrics, skipped = trainer.step(rows, step=0, total=10, global_batch=2)
    assert skipped is None
    assert metrics["loss"] == pytest.approx(sum(expected) / 2, rel=1e-4)
    assert metrics["lr"] == pytest.approx(cfg.lr_at(0, 10)) and metrics["answer_tokens"] == sum(len(e.answer) for e in encoded)
    assert not torch.equal(_weights(fresh_policy), before)


def test_follow_up_weights_of_zero_leave_the_weights_alone(fresh_policy):
    from accelerate import Accelerator

    cfg = OfflineConfig(batch_size=2, micro_batch=2, lr=1e-3, max_prompt_tokens=128, max_completion_tokens=32,
                        followup_weights=dict.fromkeys(("new_request", "reattempt_with_feedback", "reattempt_without_feedback", "positive_feedback"), 0.0))
    trainer = OfflineTrainer(fresh_policy, cfg, Accelerator(cpu=True))
    before = _weights(fresh_policy)
    metrics, _ = trainer.step(_tuples(2), step=0, total=1, global_batch=2)
    assert metrics["loss"] == 0.0 and metrics["grad_norm"] == 0.0
    assert torch.equal(_weights(fresh_policy), before)


def test_follow_up_type_filter_keeps_only_those_tuples():
    from harness.train import TrainConfig, prepare_data

    data = prepare_data(TrainConfig(data=str(SAMPLE), trainer=OfflineConfig(followup_types=["reattempt_with_feedback"], batch_size=2)))
    assert data.tuples and {t.followup_type for t in data.tuples} == {"reattempt_with_feedback"}
    assert len(data.tuples) < len(_tuples(100))


# ----- the real command: checkpoints, exact resume, SFT, 2 processes -------------------------------------------
def _train(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([*(launcher or HINDSIGHT), *args], check=False, capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["metrics"]["loss"] for line in (run / "steps.jsonl").read_text().splitlines()]


def test_train_writes_safetensors_checkpoints_and_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    common = [*SMALL, "--steps", "3", "--batch-size", "2", "--micro-batch", "2", "--results", str(tmp_path)]
    _train("train", *common, "--run-id", "whole")
    _train("train", *common, "--run-id", "cut", "--stop-after", "2")
    assert [p.name for p in sorted((tmp_path / "cut" / "checkpoints").iterdir())] == ["step-000001", "step-000002"]
    refused = subprocess.run([*HINDSIGHT, "train", "--resume", str(tmp_path / "cut"), "--lr", "1"], check=False, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "leave out --lr" in refused.stderr
    _train("train", "--resume", str(tmp_path / "cut"))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert len(_losses(whole)) == 3 and _losses(cut) == _losses(whole)  # steps.jsonl holds each step once
    last = "checkpoints/step-000003"
    assert [p.name for p in sorted((whole / "checkpoints").iterdir())] == ["step-000002", "step-000003"]  # keep_checkpoints = 2
    a, b = load_file(whole / last / "model.safetensors"), load_file(cut / last / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = load_file(whole / last / "optimizer.safetensors"), load_file(cut / last / "optimizer.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {p.suffix for p in (whole / last).iterdir()} <= {".safetensors", ".json", ".jinja"}  # no pickle anywhere
    assert json.loads((whole / last / "trainer_state.json").read_text())["step"] == 3
    stats = json.loads((whole / "data.json").read_text())
    assert stats["tuples"] == 43 and len(stats["skipped"]) == 11


def test_sft_baseline_runs(tmp_path):
    _train("train", *SMALL, "--method", "sft", "--steps", "2", "--batch-size", "2", "--results", str(tmp_path), "--run-id", "sft")
    rows = [json.loads(line) for line in (tmp_path / "sft" / "steps.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["sft", "sft"] and all(r["metrics"]["loss"] > 0 for r in rows)
    assert "advantage_mean" not in rows[0]["metrics"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_take_the_same_steps_as_one(tmp_path):
    """accelerate launch, 2 CPU processes (DDP over gloo) with the same global batch: the loss per step agrees to 1e-5
    (relative) and the final weights to 1e-6; both hold exactly when each process's micro-batches are the one process's."""
    common = ["train", *SMALL, "--steps", "2", "--batch-size", "4", "--micro-batch", "2", "--results", str(tmp_path)]
    _train(*common, "--run-id", "one")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "harness"]
    done = _train(*common, "--run-id", "two", launcher=launcher)
    assert "on 2 process(es) (MULTI_CPU, backend gloo)" in done.stdout
    one, two = tmp_path / "one", tmp_path / "two"
    assert [json.loads(line)["processes"] for line in (two / "steps.jsonl").read_text().splitlines()] == [2, 2]
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)
    a, b = load_file(one / "checkpoints/step-000002/model.safetensors"), load_file(two / "checkpoints/step-000002/model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


# ----- WildChat-UserEval ---------------------------------------------------------------------------------
def test_usereval_builder_writes_rows_the_usereval_judge_consumes(tmp_path):
    suite = tmp_path / "suite.jsonl"
    done = _train("data", "usereval", str(SAMPLE), "-o", str(suite), "--max-new-tokens", "12", "--device", "cpu")
    assert "→ 2 users, 19 turns" in done.stdout
    rows = load_rows(suite)
    assert len(rows) == 19 and len({r.id for r in rows}) == 19
    first = next(r for r in rows if r.id == "u1-9f3a61c2:c106:1")  # the user's sixth conversation by timestamp is the first held out
    assert first.prompt == [{"role": "user", "content": "Best way to remove a coffee stain from a shirt?"}] and first.reference.startswith("Start by blotting")
    assert [c[0]["content"] for c in first.history] == ["How do I reset my router?", "What's a good stretch for lower back pain?", "Convert 15 miles to km.",
                                                          "Summarize the plot of Hamlet.", "Is it safe to eat raw cookie dough?"]
    assert all(r.response for r in rows) and all(r.prompt[-1]["role"] == "user" for r in rows)
    held_out = {r.reference for r in rows}
    assert not any(m["content"] in held_out for r in rows for c in r.history for m in c)  # nothing evaluated leaks into the history
    calls: list[dict] = []

    def reply(body: dict) -> tuple[str, int, int]:
        return ("Wants the shortest possible answer." if body["messages"][0]["content"] == PERSONA_SYSTEM else "B"), 5, 1

    with StubProvider(reply, calls) as judge:
        client = LLMClient(LLMSettings(model="openai/judge", api_base=judge.base, retries=0), ResponseCache(tmp_path / "cache"))
        result = UserEval(LiteLLMBackend(client), client).evaluate(rows)
    assert len(result.rows) == 19 and {r.persona for r in result.rows} == {"Wants the shortest possible answer."}
    assert sum(call["body"]["messages"][0]["content"] == PERSONA_SYSTEM for call in calls) == 2  # one persona per user
    assert result.axes["overall"].n == 19
