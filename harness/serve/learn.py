"""`hindsight serve --learn`: one LoRA adapter per user on the shared base model, trained online by SDPO.

A request whose conversation ends with a request, the assistant's answer and a user message carries an interaction
for the key's user: it is journaled (harness/serve/journal.py, fsynced) before the request is answered. Between
generation batches, on the model thread, ``step`` takes a user whose pending interactions fill a batch (or have
waited ``idle`` seconds) and applies them: the follow-up classifier (judges/followup.py) leaves out follow-ups that
are new requests, not feedback; the SDPO trainer (the current defaults, trainers/sdpo.py) with its update guard and
safety flagger updates that user's adapter only (its own AdamW; other adapters are frozen); then the adapter, the
optimizer state and the user's applied position in the journal are committed together: a new folder
(``users/<id>/v-NNNNNN/``, safetensors, fsynced, renamed into place) and then the pointer ``users/<id>/current.json``
replaced atomically. A kill at any point leaves the old or the new pointer; on restart every adapter is reloaded and
the interactions past its applied position are applied again from that state: none lost, none applied twice.

KL per user is KL(π_user ‖ π_0) on fixed probe answers (the untrained model's greedy answers to held-out prompts),
with the user's adapter active and every adapter off for π_0.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from core.engine import Generation, HFEngine, SamplingParams
from core.followups import FollowupCase, FollowupType
from core.interaction import Followup, Interaction
from core.policy import LoraSettings, Message, Policy
from core.prompts import PromptSettings, load_prompts
from core.state_io import atomic_folder, load_state, save_state
from harness.checkpoint import write_atomic
from harness.evaluate import kl_to_initial
from harness.serve.batching import BASE
from harness.serve.journal import Journal, interaction_of
from judges.followup import HeuristicClassifier
from trainers.guard import GuardMode, GuardSettings
from trainers.sdpo import SDPOConfig, SDPOTrainer

FEEDBACK: tuple[FollowupType, ...] = ("reattempt_with_feedback", "reattempt_without_feedback", "positive_feedback")


class LearnSettings(BaseModel):
    """How the server learns (`hindsight serve --learn` options)."""

    model_config = ConfigDict(extra="forbid")
    state: Path = Field(description="folder of the journal and the users' adapters")
    batch: int = Field(4, ge=1, description="interactions per update of a user's adapter")
    idle: float = Field(5.0, ge=0, description="seconds after a user's last interaction before a partial batch is applied")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate of the adapters (LoRA's, as `personalize --lora --lr 2e-4`)")
    lora: LoraSettings = LoraSettings()
    guard: GuardMode = Field("skip_flagged", description="the update guard (trainers/guard.py): flagged follow-ups are left out by default")
    learn_from: tuple[FollowupType, ...] = Field(FEEDBACK, description="follow-up types that are feedback (new requests are not)")
    history: int = Field(5, ge=1, description="messages of the conversation kept before the answer")
    max_tokens: int = Field(1024, ge=16, description="interactions longer than this (context + answer tokens) are not trained on")
    probes: int = Field(4, ge=1, description="held-out prompts whose untrained answers measure each user's KL")


class UserState(BaseModel):
    """A user's committed state (``users/<id>/current.json``), written atomically with the adapter it describes."""

    model_config = ConfigDict(extra="forbid")
    folder: str | None = None
    applied_seq: int = -1
    applied: int = 0
    trained: int = 0
    skipped: dict[str, int] = {}
    updates: int = 0
    kl: float = 0.0
    kl_history: list[tuple[int, float]] = []
    resets: int = 0
    last: dict[str, Any] | None = None


class Learner:
    """The journal, every user's adapter and trainer, and the training step the model thread runs between batches."""

    def __init__(self, policy: Policy, settings: LearnSettings, on_update: Callable[[dict[str, Any]], None] | None = None):
        if not policy.uses_adapter:
            raise ValueError("the learner needs a policy loaded with a LoRA adapter slot")
        self.policy, self.settings = policy, settings
        self.root = settings.state
        self.journal = Journal(self.root / "journal.jsonl")
        self.lock = threading.Lock()
        self.states: dict[str, UserState] = {}
        self.trainers: dict[str, SDPOTrainer] = {}
        self.answers: dict[str, OrderedDict[str, list[int]]] = {}
        self.last_seen: dict[str, float] = {}
        self.classifier = HeuristicClassifier()
        self.config = SDPOConfig(lr=settings.lr, guard=GuardSettings(mode=settings.guard))
        self.probe: tuple[list[list[int]], list[tuple[int, ...]]] | None = None
        self.errors: list[str] = []  # failed updates (their interactions count as applied, skipped as "error")
        self.on_update = on_update  # told each user's stats after each commit (the CLI prints a line)
        for folder in sorted((self.root / "users").glob("*/current.json")):
            self._restore(folder.parent.name, UserState.model_validate_json(folder.read_text(encoding="utf-8")))

    # ----- request side (HTTP threads) -------------------------------------------------------------------
    def observe(self, user: str, messages: list[Message]) -> int | None:
        """Journal the interaction a conversation carries (fsynced before this returns); its sequence number, or None."""
        found = interaction_of(messages, self.settings.history)
        if found is None:
            return None
        context, answer, followup = found
        with self.lock:
            tokens = self.answers.get(user, {}).get(answer)
        seq = self.journal.append(user, context, answer, tokens, followup)
        if seq is not None:
            with self.lock:
                self.last_seen[user] = time.monotonic()
        return seq

    def remember(self, user: str, text: str, tokens: list[int]) -> None:
        """The token ids of an answer this server gave ``user`` (its interaction then trains on exactly those)."""
        with self.lock:
            recent = self.answers.setdefault(user, OrderedDict())
            recent[text] = list(tokens)
            while len(recent) > 64:
                recent.popitem(last=False)

    def adapter(self, user: str) -> str:
        """The adapter ``user``'s requests decode with (BASE until their first update)."""
        return user if user in self.trainers else BASE

    def stats(self, user: str) -> dict[str, Any]:
        """What ``/v1/learning`` and ``/admin/users`` show of a user (counts, KL, the last update's token advantages)."""
        with self.lock:
            state = self.states.get(user, UserState())
        journaled = self.journal.count(user)
        return {"user": user, "batch": self.settings.batch, "interactions": journaled, "applied": state.applied,
                "pending": journaled - state.applied, "trained": state.trained, "skipped": dict(state.skipped), "updates": state.updates,
                "kl": state.kl, "kl_history": [list(p) for p in state.kl_history], "resets": state.resets, "last_update": state.last}

    def users(self) -> list[str]:
        with self.lock:
            return sorted(set(self.journal.users()) | set(self.states))

    # ----- model thread ----------------------------------------------------------------------------------
    def step(self) -> bool:
        """Apply one due batch of one user's interactions and commit; False when none is due."""
        due = self._due()
        if due is None:
            return False
        user, entries = due
        try:
            self._apply(user, entries)
        except Exception as exc:  # keep serving: the batch is recorded as skipped, so that it cannot block the user for ever
            self.errors.append(f"{user}: {type(exc).__name__}: {exc}")
            state = self.states.get(user, UserState()).model_copy(deep=True)
            state.skipped["error"] = state.skipped.get("error", 0) + len(entries)
            state.applied, state.applied_seq = state.applied + len(entries), entries[-1]["seq"]
            self._commit(user, state)
        return True

    def _due(self) -> tuple[str, list[dict]] | None:
        now, best = time.monotonic(), None
        for user in self.journal.users():
            with self.lock:
                state = self.states.get(user, UserState())
                seen = self.last_seen.get(user, 0.0)
            pending = self.journal.pending(user, state.applied_seq)
            if pending and (len(pending) >= self.settings.batch or now - seen >= self.settings.idle):
                if best is None or pending[0]["seq"] < best[1][0]["seq"]:
                    best = (user, pending[: self.settings.batch])
        return best

    def _apply(self, user: str, entries: list[dict]) -> None:
        policy, state = self.policy, self.states.get(user, UserState()).model_copy(deep=True)
        trainer = self._trainer(user)
        batch, labels = [], {}
        for entry in entries:
            interaction = self._interaction(entry)
            request = interaction.messages[-1]["content"]
            label = self.classifier.label(FollowupCase(request, interaction.response.text, interaction.followup.text))
            labels[id(interaction)] = label
            if label not in self.settings.learn_from:
                state.skipped[label] = state.skipped.get(label, 0) + 1
            elif len(interaction.context_ids) + len(interaction.response.token_ids) > self.settings.max_tokens:
                state.skipped["too_long"] = state.skipped.get("too_long", 0) + 1
            else:
                batch.append(interaction)
        last = None
        if batch:
            policy.model.set_adapter(user)
            policy.model.train()
            try:
                result = trainer.step(batch)
            finally:
                policy.model.eval()
            flagged = [i for i in batch if i.guard is not None and i.guard.skipped]
            if flagged:
                state.skipped["flagged"] = state.skipped.get("flagged", 0) + len(flagged)
            learned = [i for i in batch if id(i) in trainer.token_advantages]
            if result.skipped is None and learned:
                state.trained += len(learned)
                state.updates += 1
                shown = learned[-1]
                pieces = [policy.tokenizer.decode([t]) for t in shown.response.token_ids]
                last = {"followup": shown.followup.text, "followup_type": labels[id(shown)], "loss": result.metrics.get("loss"),
                        "tokens": [[p, round(a, 4)] for p, a in zip(pieces, trainer.token_advantages[id(shown)])]}
            elif result.skipped is not None:
                state.skipped["update_skipped"] = state.skipped.get("update_skipped", 0) + len(batch) - len(flagged)
        state.applied += len(entries)
        state.applied_seq = entries[-1]["seq"]
        if last is not None:
            state.kl = self._kl(user)
            state.kl_history = [*state.kl_history, (state.applied, float(f"{state.kl:.6g}"))]
            state.last = {**last, "kl": state.kl}
        self._commit(user, state)

    def _interaction(self, entry: dict) -> Interaction:
        policy = self.policy
        context = entry["context"]
        tokens = entry["tokens"]
        if not tokens:  # an answer this server did not give (or no longer remembers): its tokens as the tokenizer splits it
            tokens = policy.tokenizer.encode(entry["answer"], add_special_tokens=False) + [policy.eos_token_id]
        generation = Generation(entry["answer"], tuple(tokens), bool(tokens) and tokens[-1] == policy.eos_token_id)
        followup = Followup(entry["followup"], entry["followup"])
        return Interaction(entry["seq"], context[-1]["content"], context, policy.encode_chat(context), generation, followup)

    def _trainer(self, user: str) -> SDPOTrainer:
        """The user's trainer, with their adapter added (initialised from a seed of the user id and resets) if new."""
        if user not in self.trainers:
            state = self.states.get(user, UserState())
            self._add_adapter(user, state.resets)
            self.trainers[user] = SDPOTrainer(self.policy, self.config, seed=0)
        return self.trainers[user]

    def _add_adapter(self, user: str, resets: int) -> None:
        from peft import LoraConfig

        lora = self.settings.lora
        seed = int.from_bytes(hashlib.sha256(f"{user}\x00{resets}".encode()).digest()[:8], "little")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notice, raised inside peft
            torch.manual_seed(seed)
            self.policy.model.add_adapter(user, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules="all-linear",
                                                           task_type="CAUSAL_LM"))
        self.policy.model.set_adapter(user)  # only this adapter is trainable: the trainer's optimizer holds its weights alone
        self.policy.model.eval()

    def _kl(self, user: str) -> float:
        if self.probe is None:
            policy = self.policy
            prompts = load_prompts(PromptSettings()).heldout[: self.settings.probes]
            contexts = [policy.encode_chat(policy.messages(p)) for p in prompts]
            with policy.initial() as initial:
                answers = HFEngine(initial, impl="fast").generate(contexts, SamplingParams(max_new_tokens=48, temperature=0.0))
            self.probe = (contexts, [a.token_ids for a in answers])
        self.policy.model.set_adapter(user)
        return kl_to_initial(self.policy, *self.probe)

    def _commit(self, user: str, state: UserState) -> None:
        from peft import get_peft_model_state_dict

        folder = self.root / "users" / user
        name = f"v-{state.applied_seq + 1:09d}-{state.resets}"
        with atomic_folder(folder / name) as tmp:
            from safetensors.torch import save_file

            weights = get_peft_model_state_dict(self.policy.model, adapter_name=user)
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "adapter.safetensors"))
            save_state(tmp, "trainer", self.trainers[user].state_dict())
        state.folder = name
        write_atomic(folder / "current.json", state.model_dump_json())
        with self.lock:
            self.states[user] = state
        for child in folder.iterdir():
            if child.is_dir() and child.name != name:
                shutil.rmtree(child, ignore_errors=True)
        if self.on_update is not None:
            self.on_update(self.stats(user))

    def _restore(self, user: str, state: UserState) -> None:
        """Rebuild a committed user's adapter and optimizer (model thread not running yet: called from __init__)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        self.states[user] = state
        if state.folder is None:
            return
        target = self.root / "users" / user / state.folder
        self._trainer(user)
        set_peft_model_state_dict(self.policy.model, load_file(str(target / "adapter.safetensors")), adapter_name=user)
        self.trainers[user].load_state_dict(load_state(target, "trainer"))

    def reset(self, user: str) -> dict[str, Any]:
        """A fresh adapter and optimizer for ``user``; interactions journaled so far count as applied (model thread)."""
        state = self.states.get(user, UserState()).model_copy(deep=True)
        if user in self.trainers:
            self.policy.model.delete_adapter(user)
            del self.trainers[user]
        state = UserState(resets=state.resets + 1, applied=self.journal.count(user), applied_seq=self.journal.last_seq(user))
        with self.lock:
            self.states[user] = state
        self._trainer(user)
        self._commit(user, state)
        return self.stats(user)

    def export(self, user: str) -> bytes:
        """The user's adapter as a zip of a peft adapter folder (adapter_config.json, adapter_model.safetensors) (model thread)."""
        if user not in self.trainers:
            raise KeyError(user)
        with tempfile.TemporaryDirectory() as tmp:
            self.policy.model.save_pretrained(tmp, selected_adapters=[user], safe_serialization=True)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(Path(tmp).rglob("*")):
                    if path.is_file():
                        archive.write(path, path.name)
            return buffer.getvalue()

    def close(self) -> None:
        self.journal.close()


def summary_line(stats: dict[str, Any]) -> str:
    """One line for the server's log: a user's counts and KL (a user id, never a key)."""
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats["skipped"].items())) or "none"
    return (f"{stats['user']}: {stats['applied']}/{stats['interactions']} interactions applied ({stats['trained']} trained on, skipped: {skipped}), "
            f"{stats['updates']} updates, KL {stats['kl']:.4g}")
