"""`hindsight serve --learn` with the real SmolLM2 behind a real uvicorn: keys and security, the journal, per-user SDPO
updates of LoRA adapters with their KL, no cross-talk between users, admin reset and export, and reload on restart."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch
from safetensors.torch import load

from core.engine import HFEngine, SamplingParams
from harness.evaluate import kl_to_initial
from harness.serve.batching import BASE
from harness.serve.keys import Keys
from harness.serve.learn import Learner, LearnSettings
from harness.serve.server import ServerThread, load_policy, make_service
from harness.serve.service import Limits

ALICE, BOB, ADMIN = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef", "admin-key-0123456789abcdef"
KEYS = Keys.of({ALICE: "alice", BOB: "bob"}, [ADMIN])
LONG = ("Rice is a grain that people cook in many ways. First rinse it under cold water, then add two cups of water for each cup "
        "of rice, bring it to the boil, lower the heat, cover the pot and let it simmer for eighteen minutes before resting it.")


def start(state, policy=None, **limits) -> ServerThread:
    policy = policy or load_policy("smollm2-135m", "cpu", threads=1, lora=True)
    learner = Learner(policy, LearnSettings(state=state, batch=1, idle=0))
    return ServerThread(make_service(policy, "smollm2", Limits(default_tokens=4, max_tokens=64, **limits), keys=KEYS, learner=learner)).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    server = start(tmp_path_factory.mktemp("learn") / "state")
    yield server
    server.stop()


def client(server: ServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)


def turn(server: ServerThread, key: str, followup: str, prompt: str = "How do I cook rice?", answer: str = LONG, **extra):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}, {"role": "user", "content": followup}]
    return client(server, key).chat.completions.create(model="smollm2", messages=messages, max_tokens=2, temperature=0, **extra)


def learning(server: ServerThread, key: str) -> dict:
    return httpx.get(server.url + "/learning", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()


def applied(server: ServerThread, key: str, count: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (stats := learning(server, key))["applied"] < count:
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    return stats


def on_model_thread(server: ServerThread, fn):
    return server.service.batcher.call(fn).result(timeout=120)


def adapter_weights(server: ServerThread, user: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    model = server.service.policy.model
    return on_model_thread(server, lambda: {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=user).items()})


def test_keys_guard_every_route(server):
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    missing = httpx.post(server.url + "/chat/completions", json=chat, timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(server, "not-a-key-0123456789").chat.completions.create(**chat)
    assert wrong.value.body["code"] == "invalid_api_key" and "not-a-key" not in wrong.value.body["message"]
    with pytest.raises(openai.PermissionDeniedError) as other:
        client(server, ALICE).chat.completions.create(**chat, user="bob")
    assert other.value.body["code"] == "user_mismatch"
    assert client(server, ALICE).chat.completions.create(**chat, user="alice").choices[0].message.content is not None
    for method, path in [("GET", "/admin/users"), ("POST", "/admin/users/bob/reset"), ("GET", "/admin/users/bob/adapter")]:
        denied = httpx.request(method, server.url.removesuffix("/v1") + path, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_only", path
    admin = {"Authorization": f"Bearer {ADMIN}"}
    listed = httpx.get(server.url.removesuffix("/v1") + "/admin/users", headers=admin, timeout=30).json()["data"]
    assert {u["user"] for u in listed} >= {"alice", "bob"}
    assert httpx.get(server.url + "/learning", headers=admin, timeout=30).status_code == 403
    assert httpx.get(server.url.removesuffix("/v1") + "/admin/users/nobody/adapter", headers=admin, timeout=30).status_code == 404


def test_rate_limits_are_per_user(policy):
    with ServerThread(make_service(policy, "smollm2", Limits(default_tokens=1, rate_per_minute=2), keys=KEYS)) as server:
        alice = client(server, ALICE)
        for _ in range(2):
            alice.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            alice.models.list()
        assert limited.value.body["code"] == "rate_limit_exceeded" and int(limited.value.response.headers["retry-after"]) >= 1
        assert client(server, BOB).models.list().data  # bob's own budget


def test_a_follow_up_is_journaled_then_trained_with_its_kl(server):
    before = learning(server, ALICE)
    turn(server, ALICE, "Way too long. One sentence, please.")
    stats = applied(server, ALICE, before["applied"] + 1)
    assert stats["interactions"] == before["interactions"] + 1 and stats["updates"] == before["updates"] + 1
    assert stats["kl"] > 0 and stats["kl_history"][-1][1] == pytest.approx(stats["kl"], abs=1e-6)
    last = stats["last_update"]
    assert last["followup_type"] == "reattempt_with_feedback" and last["tokens"] and all(len(t) == 2 for t in last["tokens"])
    assert "".join(p for p, _ in last["tokens"]).strip().startswith("Rice is a grain")
    turn(server, ALICE, "Way too long. One sentence, please.")  # a client retrying the same request: journaled once
    turn(server, ALICE, "Now write a haiku about the sea.")  # a new request, not feedback: journaled, not trained on
    stats = applied(server, ALICE, before["applied"] + 2)
    time.sleep(1)
    stats = learning(server, ALICE)
    assert stats["interactions"] == before["interactions"] + 2 and stats["skipped"].get("new_request") == 1
    assert stats["updates"] == before["updates"] + 1
    journal = [json.loads(line) for line in (server.service.learner.root / "journal.jsonl").read_text().splitlines()]
    assert [e["user"] for e in journal].count("alice") == stats["interactions"]


def test_kl_is_measured_with_the_users_own_adapter(server):
    turn(server, ALICE, "Shorter, please. Just the key point.")
    applied(server, ALICE, learning(server, ALICE)["interactions"])
    learner, model = server.service.learner, server.service.policy.model

    def both() -> tuple[float, float]:
        own = learner._kl("alice")
        model.set_adapter("default")  # the untrained slot every PeftModel starts with: measuring it reads 0
        untrained = kl_to_initial(learner.policy, *learner.probe)
        return own, untrained

    own, untrained = on_model_thread(server, both)
    assert own > 1e-6 and untrained == 0.0 and own == pytest.approx(learning(server, ALICE)["kl"], rel=1e-6)


def test_one_users_updates_leave_every_other_adapter_bit_identical(server):
    turn(server, BOB, "Too short. Walk me through it with an example.")
    applied(server, BOB, learning(server, BOB)["interactions"])
    bob, bob_kl = adapter_weights(server, "bob"), learning(server, BOB)["kl"]
    folder = server.service.learner.root / "users" / "bob"
    bob_files = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    alice = adapter_weights(server, "alice")
    start_count = learning(server, ALICE)["applied"]
    for followup in ("Too long. I just need the short version.", "Can you cut that down? Shorter."):
        turn(server, ALICE, followup, prompt="How do I boil an egg?")
    applied(server, ALICE, start_count + 2)
    after = adapter_weights(server, "bob")
    assert bob.keys() == after.keys() and all(torch.equal(bob[k], after[k]) for k in bob)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == bob_files
    assert learning(server, BOB)["kl"] == bob_kl
    assert any(not torch.equal(alice[k], v) for k, v in adapter_weights(server, "alice").items())  # alice's did move


def test_rows_of_different_adapters_share_a_batch_and_decode_as_each_would_alone(server):
    policy = server.service.policy
    context = policy.encode_chat([{"role": "user", "content": "How do I cook rice?"}])
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    engine = HFEngine(policy, impl="fast")
    from peft import LoraConfig

    # an adapter with random B (not zero): its rows surely decode differently from the base model's
    on_model_thread(server, lambda: policy.model.add_adapter("probe", LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)))
    try:
        names = ["alice", "probe", BASE, "bob"]
        mixed = on_model_thread(server, lambda: engine.generate([context] * 4, params, adapters=names))
        alone = [on_model_thread(server, lambda n=n: engine.generate([context], params, adapters=[n])[0]) for n in names]
    finally:
        on_model_thread(server, lambda: policy.model.delete_adapter("probe"))
    assert mixed == alone and alone[1] != alone[2]


def test_admin_export_reset_and_reload_on_restart(server, tmp_path):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    root = server.url.removesuffix("/v1")
    exported = httpx.get(root + "/admin/users/alice/adapter", headers=admin, timeout=60)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(archive.namelist())
        saved = load(archive.read("adapter_model.safetensors"))
    alice = adapter_weights(server, "alice")
    assert saved.keys() == alice.keys() and all(torch.equal(saved[k], alice[k]) for k in alice)
    stats = {u: learning(server, k) for u, k in (("alice", ALICE), ("bob", BOB))}
    weights = {u: adapter_weights(server, u) for u in stats}
    server.stop()
    restarted = start(server.service.learner.root)
    try:
        for user, key in (("alice", ALICE), ("bob", BOB)):
            assert learning(restarted, key) == stats[user]
            again = adapter_weights(restarted, user)
            assert all(torch.equal(again[k], v) for k, v in weights[user].items()), user
        reset = httpx.post(restarted.url.removesuffix("/v1") + "/admin/users/alice/reset", headers=admin, timeout=120).json()
        assert reset["updates"] == 0 and reset["kl"] == 0 and reset["resets"] == 1 and reset["applied"] == stats["alice"]["interactions"]
        assert learning(restarted, BOB) == stats["bob"]
    finally:
        restarted.stop()
