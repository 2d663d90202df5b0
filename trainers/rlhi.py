"""RLHI (RL from Human Interaction) and its ablation methods, from the paper's description, in the same online loop as SDPO.

Per batch of interactions (request x, the policy's answer y, the user's follow-up o):

1. **classify** each follow-up: new_request, reattempt_with_feedback, reattempt_without_feedback, positive_feedback
   (core/followups.py, judges/followup.py; recorded per interaction with who decided it);
2. **persona**: add the user's request and follow-up to their message history and summarize it into up to five
   points (judges/persona.py); the persona goes into the system prompt of every training context;
3. **pairs**, by method (see ``RECIPES``):
   - *rewrite*: for follow-ups labelled re-attempt with feedback, the policy rewrites its own answer given o (not
     longer unless asked, never mentioning the feedback, safe); pair (rewrite ≻ y);
   - *scratch*: the same, but the policy answers x afresh, seeing neither y nor o (the paper's "rewrites from
     scratch" ablation);
   - *candidates*: N fresh answers under the persona-conditioned context, scored by the reward; best ≻ worst;
4. **filter** (judges/reward.py scores): a rewrite is kept only when its persona-conditioned reward is at least the
   original's, then RIP-style thresholds (rejected length, rejected reward, reward gap), each optional;
5. **update**: persona-conditioned sigmoid DPO against the frozen initial policy (β), or SFT on the chosen side.

Everything each interaction went through (label, persona, rewrite, rewards, kept or why not, chosen, rejected) is
returned as its summary, which the loop writes into ``InteractionRecord.update``.

Each method (``RECIPES``) is registered in ``trainers.base.METHODS``: ``rlhi-rewrite`` and ``rlhi-reward``, and the
ablation methods ``rewrite-scratch``, ``rewrite-nofilter``, ``reward-agnostic``, ``sft`` and ``sft-reward``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.engine import Engine, Generation, SamplingParams
from core.followups import FollowupCase, FollowupClassifier, FollowupType, followup_type
from core.interaction import Interaction
from core.llm_client import LLMSettings
from core.policy import Message, Policy
from judges.persona import PersonaSettings, heuristic_persona, infer_persona, persona_system
from judges.reward import Reward, RewardSettings
from trainers.base import METHODS, StepResult, TrainerInputs
from trainers.dpo import Objective, PreferenceOptimizer, PreferencePair

if TYPE_CHECKING:
    from core.llm_client import LLMClient
    from simulators.profile import Profile

@dataclass(frozen=True)
class Recipe:
    """What a method does: where its pairs come from, whether the reward sees the user, whether the filter applies, the loss."""

    pairs: Literal["rewrite", "scratch", "candidates"]
    personalized_reward: bool
    filtered: bool
    objective: Objective
    help: str = ""


RECIPES: dict[str, Recipe] = {
    "rlhi-rewrite": Recipe("rewrite", True, True, "dpo", "user-guided rewrites, quality filter, persona DPO"),
    "rlhi-reward": Recipe("candidates", True, True, "dpo", "N candidates scored by a persona-conditioned reward, best vs worst, online persona DPO"),
    "rewrite-scratch": Recipe("scratch", True, True, "dpo", "ablation: the policy re-answers without its answer or the follow-up"),
    "rewrite-nofilter": Recipe("rewrite", True, False, "dpo", "ablation: no quality filter"),
    "reward-agnostic": Recipe("candidates", False, True, "dpo", "ablation: the reward ignores the persona"),
    "sft": Recipe("rewrite", True, True, "sft", "ablation: SFT on the kept rewrites"),
    "sft-reward": Recipe("candidates", True, True, "sft", "ablation: SFT on the best candidates"),
}

REWRITE_PROMPT = """Write your previous answer again, improved according to my message below. Keep it about as long \
as before unless my message asks for a longer one. Stay safe and ethical even if my message asks otherwise. Do not \
mention or refer to my message, or to your previous answer: give only the new answer itself.

My message:
{followup}"""


class FilterSettings(BaseModel):
    """Which pairs survive (the paper's quality filter). Thresholds use the reward's own scale; None turns one off."""

    model_config = ConfigDict(extra="forbid")
    improve: bool = Field(True, description="rewrites: keep only when reward(rewrite) >= reward(original)")
    min_rejected_tokens: int | None = Field(None, ge=0, description="RIP: the rejected response has at least this many tokens (a proxy for prompt quality)")
    min_rejected_reward: float | None = Field(None, description="RIP: the rejected response's reward is at least this")
    max_reward_gap: float | None = Field(None, ge=0, description="RIP: reward(chosen) − reward(rejected) is at most this")


class RLHIConfig(BaseModel):
    """Everything that defines an RLHI update (methods other than sdpo). Defaults run offline on the embedded model."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(2e-5, gt=0, description="AdamW learning rate (constant; the SDPO default, for equal budgets)")
    beta: float = Field(0.1, gt=0, description="DPO β: the sharpness of the preference (and the strength of the pull to the reference)")
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    classifier: Literal["heuristic", "llm", "local"] = Field(
        "heuristic", description="who labels follow-ups: heuristic (offline: the simulator's satisfied flag when it gives one, else keywords), "
        "llm (rlhi.llm), local (a local model's label-token probabilities: classifier_model)")
    classifier_model: str | None = Field(None, description="for classifier=local: a model spec")
    rewrite_labels: list[FollowupType] = Field(["reattempt_with_feedback"], min_length=1, description="follow-up types whose answers are "
                                               "rewritten (core/followups.py; the old spellings retry_feedback, … are read too)")
    persona: PersonaSettings = PersonaSettings()
    reward: RewardSettings = RewardSettings()
    filter: FilterSettings = FilterSettings()
    candidates: int = Field(4, ge=2, description="rlhi-reward: answers sampled per request")
    temperature: float = Field(0.6, ge=0, description="sampling temperature of rewrites and candidates (the paper's 0.6)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling of rewrites and candidates (the paper's 0.9)")
    llm: LLMSettings | None = Field(None, description="the LLM behind classifier=llm, persona.source=inferred and reward.kind=llm")

    @field_validator("rewrite_labels", mode="before")
    @classmethod
    def _old_spellings(cls, labels: object) -> object:
        return [followup_type(x) if isinstance(x, str) else x for x in labels] if isinstance(labels, list) else labels

    @model_validator(mode="after")
    def _complete(self) -> RLHIConfig:
        needs = [what for what, used in (("classifier llm", self.classifier == "llm"), ("persona inferred", self.persona.source == "inferred"),
                                         ("reward llm", self.reward.kind == "llm")) if used]
        if needs and self.llm is None:
            raise ValueError(f"{', '.join(needs)} need rlhi.llm (--rlhi-model, and --rlhi-api-base for a local server)")
        if self.classifier == "local" and not self.classifier_model:
            raise ValueError("classifier 'local' needs classifier_model")
        return self


@dataclass(frozen=True)
class _Holder:
    client: LLMClient


def _client(settings: LLMSettings, max_tokens: int) -> LLMClient:
    from core.llm_client import LLMClient

    return LLMClient(settings.model_copy(update={"max_tokens": max_tokens}))


class RLHITrainer:
    """One RLHI (or ablation) update per batch; ``user_at(index)`` is the simulated user's profile at an interaction
    (None for a control arm's neutral user), read by the profile persona and the rules reward."""

    def __init__(self, policy: Policy, engine: Engine, config: RLHIConfig, method: str, max_new_tokens: int,
                 user_at: Callable[[int], Profile | None], reward=None, classifier: FollowupClassifier | None = None):
        from judges.reward import build_reward

        if method not in RECIPES:
            raise ValueError(f"unknown RLHI method '{method}'")
        self.policy, self.engine, self.config, self.method = policy, engine, config, method
        self.recipe = RECIPES[method]
        self.user_at = user_at
        self.sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=config.temperature, top_p=config.top_p)
        self.persona_client = _client(config.llm, config.persona.max_tokens) if config.persona.source == "inferred" else None
        self.reward = reward or build_reward(config.reward, client=_client(config.llm, 8) if config.reward.kind == "llm" else None,
                                             embedder_device=policy.device)
        self.classifier = classifier or self._build_classifier()
        policy.snapshot_initial()  # the DPO reference: the policy before this trainer's first update
        self.optimizer = PreferenceOptimizer(policy, config.lr, config.beta, config.max_grad_norm, config.weight_decay)
        self.history: list[str] = []  # the user's messages, oldest first (requests and follow-ups)
        self.feedback: list[str] = []  # follow-ups labelled re-attempt with feedback (the heuristic persona's material)
        self.persona: str | None = None
        self.guard = None  # RLHI has no update guard

    def llm_parts(self) -> dict[str, list[object]]:
        """The parts that call an LLM (each holds its client as ``client`` or ``backend.client``), for the run's usage accounting."""
        persona = [_Holder(self.persona_client)] if self.persona_client is not None else []
        return {"rlhi": [*persona, self.classifier, self.reward]}

    def record_fields(self, summary: dict) -> dict:
        return {"update": summary, "label": summary.get("label")}

    def _build_classifier(self) -> FollowupClassifier:
        from judges.followup import build_classifier

        cfg = self.config
        return build_classifier(cfg.classifier, llm=cfg.llm, model=cfg.classifier_model, device=str(self.policy.device), max_tokens=8)

    # ----- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.optimizer.state_dict(), "history": list(self.history), "feedback": list(self.feedback), "persona": self.persona}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.history, self.feedback, self.persona = list(state["history"]), list(state["feedback"]), state["persona"]

    # ----- one update ------------------------------------------------------------------------------
    def step(self, batch: Sequence[Interaction]) -> StepResult:
        labels = self.classifier.judge([FollowupCase(i.prompt, i.response.text, i.followup.text, i.followup.satisfied) for i in batch])
        for interaction, label in zip(batch, labels):
            self.history += [interaction.prompt, interaction.followup.text]
            if label.label == "reattempt_with_feedback":
                self.feedback.append(interaction.followup.text)
        self.history = self.history[-self.config.persona.history :]
        self.persona, persona_source = self._persona(batch[-1].index)
        summaries = [{"label": lab.label, "label_source": lab.source, "persona_source": persona_source, "persona": self.persona} for lab in labels]
        contexts = [self.policy.encode_chat(self.training_messages(i)) for i in batch]
        if self.recipe.pairs == "candidates":
            pairs = self._candidate_pairs(batch, contexts, summaries)
        else:
            pairs = self._rewrite_pairs(batch, contexts, labels, summaries)
        update = self.optimizer.update(pairs, self.recipe.objective)
        metrics = {**update.metrics, "kept": float(sum(bool(s.get("kept")) for s in summaries)),
                   "feedback_labels": float(sum(lab.label == "reattempt_with_feedback" for lab in labels))}
        return StepResult(metrics=metrics, per_interaction=summaries, skipped=update.skipped, signals=self._signals(summaries, pairs, update.weights))

    def _signals(self, summaries: list[dict], pairs: list[PreferencePair], weights: tuple[float, ...]) -> list[dict]:
        """signals.jsonl rows: for each interaction whose pair was kept (pairs follow the interactions' order), the label, the
        rewards and both sides' tokens with the gradient weight on each token's log-prob (None: the update was not applied)."""
        out: list[dict] = [{} for _ in summaries]
        owners = [n for n, summary in enumerate(summaries) if summary.get("kept")]
        dpo = self.recipe.objective == "dpo"
        for n, pair, weight in zip(owners, pairs, weights or (None,) * len(pairs)):
            w = round(weight, 4) if weight is not None else None
            rejected_w = None if w is None else -w if dpo else 0.0
            sides = {side: {"tokens": [self.policy.tokenizer.decode([t]) for t in ids], "weight": sw}
                     for side, ids, sw in (("chosen", pair.chosen, w), ("rejected", pair.rejected, rejected_w))}
            rewards = {k: round(summaries[n][k], 4) for k in ("reward_chosen", "reward_rejected") if summaries[n].get(k) is not None}
            out[n] = {"pair": {"label": summaries[n]["label"], "objective": self.recipe.objective, **rewards, **sides}}
        return out

    def _persona(self, index: int) -> tuple[str | None, str]:
        source = self.config.persona.source
        if source == "none":
            return None, "none"
        if source == "profile":
            profile = self.user_at(index)
            return (profile.description.strip() if profile is not None else None), "profile (oracle)"
        if source == "heuristic":
            recent = set(self.history)
            return heuristic_persona([m for m in self.feedback if m in recent]), "heuristic"
        return infer_persona(self.persona_client, self.history), f"inferred ({self.config.llm.model})"

    def training_messages(self, interaction: Interaction) -> list[Message]:
        """The context both sides of a pair are scored in: the persona in the system prompt, then the request."""
        return self.policy.messages(interaction.prompt, system=persona_system(self.persona, self.policy.settings.system_prompt))

    def _rewards(self, prompts: list[str], texts: list[str], index: int) -> list[Reward]:
        personal = self.recipe.personalized_reward
        return self.reward.score(prompts, texts, self.persona if personal else None, self.user_at(index) if personal else None)

    def _rewards_each(self, requests: list[tuple[Interaction, list[str]]]) -> list[list[Reward]]:
        """The rewards of each interaction's texts. A reward marked ``concurrent`` (the LLM's) scores the whole batch in
        one call per user (its requests sent concurrently); others score one interaction at a time, as before."""
        if not getattr(self.reward, "concurrent", False):
            return [self._rewards([i.prompt] * len(texts), texts, i.index) for i, texts in requests]
        personal = self.recipe.personalized_reward
        users = [self.user_at(i.index) if personal else None for i, _ in requests]
        groups: dict[int, list[int]] = {}
        for n, user in enumerate(users):
            groups.setdefault(id(user), []).append(n)
        out: list[list[Reward]] = [[] for _ in requests]
        for members in groups.values():
            scored = iter(self.reward.score([requests[n][0].prompt for n in members for _ in requests[n][1]],
                                            [t for n in members for t in requests[n][1]], self.persona if personal else None, users[members[0]]))
            for n in members:
                out[n] = [next(scored) for _ in requests[n][1]]
        return out

    def _rewrite_pairs(self, batch: Sequence[Interaction], contexts: list[list[int]], labels, summaries: list[dict]) -> list[PreferencePair]:
        chosen_rows = [n for n, lab in enumerate(labels) if lab.label in self.config.rewrite_labels]
        for n, summary in enumerate(summaries):
            if n not in chosen_rows:
                summary.update(kept=False, why=f"label {labels[n].label}: not rewritten")
        if not chosen_rows:
            return []
        prompts = [self._rewrite_context(batch[n]) for n in chosen_rows]
        rewrites = self.engine.generate([self.policy.encode_chat(m) for m in prompts], self.sampling)
        scores = self._rewards_each([(batch[n], [rewrite.text, batch[n].response.text]) for n, rewrite in zip(chosen_rows, rewrites)])
        pairs = []
        for n, rewrite, rewards in zip(chosen_rows, rewrites, scores):
            interaction, summary = batch[n], summaries[n]
            original = interaction.response
            summary.update(rewrite=rewrite.text, reward_chosen=rewards[0].value, reward_rejected=rewards[1].value,
                           reward_parts={"chosen": rewards[0].parts, "rejected": rewards[1].parts})
            why = self._rejects(rewrite, original, rewards[0].value, rewards[1].value, improve=True)
            summary.update(kept=why is None, why=why or "kept")
            if why is None:
                summary.update(chosen=rewrite.text, rejected=original.text)
                pairs.append(PreferencePair(contexts[n], list(rewrite.token_ids), list(original.token_ids)))
        return pairs

    def _rewrite_context(self, interaction: Interaction) -> list[Message]:
        """Rewrite: the conversation so far plus the rewrite request holding the follow-up. Scratch: the request alone."""
        if self.recipe.pairs == "scratch":
            return list(interaction.messages)
        return [*interaction.conversation(), {"role": "user", "content": REWRITE_PROMPT.format(followup=interaction.followup.text.strip())}]

    def _candidate_pairs(self, batch: Sequence[Interaction], contexts: list[list[int]], summaries: list[dict]) -> list[PreferencePair]:
        k = self.config.candidates
        samples = self.engine.generate([c for c in contexts for _ in range(k)], self.sampling)
        groups = [samples[n * k : (n + 1) * k] for n in range(len(batch))]
        scores = self._rewards_each([(interaction, [g.text for g in group]) for interaction, group in zip(batch, groups)])
        pairs = []
        for n, (interaction, summary, group, rewards) in enumerate(zip(batch, summaries, groups, scores)):
            summary["candidates"] = [{"text": g.text, "reward": r.value, "parts": r.parts} for g, r in zip(group, rewards)]
            scored = [(r.value, m) for m, r in enumerate(rewards) if r.value is not None]
            if len(scored) < 2:
                summary.update(kept=False, why="fewer than two candidates with a usable reward")
                continue
            best, worst = max(scored)[1], min(scored)[1]
            chosen, rejected = group[best], group[worst]
            summary.update(reward_chosen=rewards[best].value, reward_rejected=rewards[worst].value)
            why = self._rejects(chosen, rejected, rewards[best].value, rewards[worst].value, improve=False)
            summary.update(kept=why is None, why=why or "kept")
            if why is None:
                summary.update(chosen=chosen.text, rejected=rejected.text)
                pairs.append(PreferencePair(contexts[n], list(chosen.token_ids), list(rejected.token_ids)))
        return pairs

    def _rejects(self, chosen: Generation, rejected: Generation, r_chosen: float | None, r_rejected: float | None, improve: bool) -> str | None:
        """Why a pair is dropped, or None to keep it. Pairs that cannot teach anything are dropped even unfiltered."""
        if not chosen.token_ids or not rejected.token_ids:
            return "empty response"
        if chosen.token_ids == rejected.token_ids:
            return "chosen and rejected are identical"
        if not self.recipe.filtered:
            return None
        return quality_filter(self.config.filter, len(rejected.token_ids), r_chosen, r_rejected, improve=improve)


def quality_filter(settings: FilterSettings, rejected_tokens: int, r_chosen: float | None, r_rejected: float | None, *, improve: bool) -> str | None:
    """Why the quality filter drops a pair (the first failed rule), or None to keep it. ``improve``: the chosen side is a
    rewrite of the rejected one and must score at least as well; for best-vs-worst pairs a tie teaches nothing."""
    if r_chosen is None or r_rejected is None:
        return "no usable reward"
    if improve and settings.improve and r_chosen < r_rejected:
        return f"rewrite scored below the original ({r_chosen:.3g} < {r_rejected:.3g})"
    if not improve and r_chosen <= r_rejected:
        return f"no reward gap between the candidates ({r_chosen:.3g})"
    if settings.min_rejected_tokens is not None and rejected_tokens < settings.min_rejected_tokens:
        return f"rejected response too short ({rejected_tokens} < {settings.min_rejected_tokens} tokens)"
    if settings.min_rejected_reward is not None and r_rejected < settings.min_rejected_reward:
        return f"rejected reward too low ({r_rejected:.3g} < {settings.min_rejected_reward:g})"
    if settings.max_reward_gap is not None and r_chosen - r_rejected > settings.max_reward_gap:
        return f"reward gap too large ({r_chosen - r_rejected:.3g} > {settings.max_reward_gap:g})"
    return None


def _summary(config) -> str:
    r = config.rlhi
    candidates = RECIPES[config.method].pairs == "candidates"
    return (f"rlhi: lr {r.lr:g}, beta {r.beta:g}, classifier {r.classifier}, persona {r.persona.source}, reward {r.reward.kind}"
            + (f", {r.candidates} candidates" if candidates else ""))


def rlhi(inputs: TrainerInputs) -> RLHITrainer:
    """The trainer of the RLHI method ``inputs.config.method`` (one of ``RECIPES``)."""
    config = inputs.config
    return RLHITrainer(inputs.policy, inputs.engine, config.rlhi, config.method, config.generation.max_new_tokens or 96, inputs.user_at)


for _name, _recipe in RECIPES.items():
    METHODS.add(_name, rlhi, help=f"{_recipe.help} (rlhi.*)", summary=_summary)
