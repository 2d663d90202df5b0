"""Held-out evaluation: greedy answers to fixed prompts, scored for the profile, degeneration, relevance and drift."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from core.engine import Engine, SamplingParams, cached_generate
from core.policy import Policy
from core.records import Arm, EvalRecord, SampleRecord, WinRate
from core.text import Embedder
from harness.config import EvalSettings, RunConfig
from judges.base import Judge, Pair, Verdict
from judges.degeneration import assess
from judges.pairwise import summarize
from judges.relevance import novel_content_words
from simulators.profile import Profile, words
from trainers.base import Trainer

ORACLE_SYSTEM = "Tailor every answer to this user, who describes themselves as follows:\n{description}"


def oracle_system(profile: Profile, base: str | None) -> str:
    """The in-context oracle's system prompt: the persona appended to the usual one."""
    persona = ORACLE_SYSTEM.format(description=profile.description.strip())
    return f"{base}\n\n{persona}" if base else persona


def eval_system(config: RunConfig, trainer: Trainer, profile: Profile) -> str | None:
    """The system prompt of a trained arm's evaluation: the configured one, or with ``eval.persona`` (persona-guided
    inference) a persona added in RLHI's wording: the trainer's current persona, or the profile's description (an oracle)."""
    from judges.persona import persona_system

    base = config.policy.system_prompt
    if config.eval.persona == "off":
        return base
    persona = profile.description if config.eval.persona == "profile" else trainer.persona
    return persona_system(persona, base)


@dataclass(frozen=True)
class Preference:
    """A preference scored at each evaluation: compliance with its profile's checks and, with a judge, the win rate
    against the untrained model for its persona. ``label`` names it in the records (None when a run scores one only)."""

    profile: Profile
    judge: Judge | None = None
    label: str | None = None


class Evaluator:
    """Scores a policy on the held-out prompts, once per preference; the untrained model's answers are the relevance reference."""

    def __init__(self, preferences: Sequence[Preference], prompts: Sequence[str], settings: EvalSettings, embedder: Embedder):
        self.preferences = list(preferences)
        self.prompts = list(prompts)
        self.settings = settings
        self.embedder = embedder
        self.prompt_vectors = embedder.embed(self.prompts)
        self.reference_vectors: torch.Tensor | None = None

    def set_reference(self, answers: Sequence[str]) -> None:
        self.reference_vectors = self.embedder.embed(answers)

    def run(self, policy: Policy, engine: Engine, *, arm: Arm, seed: int, interactions: int, system: str | None = None,
            against: Sequence[str] | None = None, preferences: Sequence[Preference] | None = None) -> tuple[list[EvalRecord], list[SampleRecord]]:
        """One record per preference (all, or ``preferences``) and one sample per answer and preference. With ``against``
        (the untrained model's answers, in prompt order) each preference's judge compares every answer with them."""
        start = time.perf_counter()
        s = self.settings
        contexts = [policy.encode_chat(policy.messages(p, system=system)) for p in self.prompts]
        params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=0.0)
        if arm in ("initial", "oracle") and s.cache_untrained:
            answers = cached_generate(policy, engine, contexts, params)
        else:
            answers = engine.generate(contexts, params)
        texts = [a.text for a in answers]
        vectors = self.embedder.embed(texts)
        prompt_sim = (vectors * self.prompt_vectors).sum(-1).tolist()
        ref_sim = (vectors * self.reference_vectors).sum(-1).tolist() if self.reference_vectors is not None else [1.0] * len(texts)
        kl = None  # the oracle's prompt differs from the policy's, so its drift is not measured
        if s.kl_prompts and arm in ("treated", "guarded", "control"):
            kl = kl_to_initial(policy, contexts[: s.kl_prompts], [a.token_ids for a in answers[: s.kl_prompts]])
        elif arm == "initial":
            kl = 0.0
        degeneration = [assess(a.text, a.finished, truncated_counts=s.truncated_is_degenerate) for a in answers]
        novel = [novel_content_words(a.text, p) for p, a in zip(self.prompts, answers)]
        relevant = [ps >= s.min_prompt_similarity and rs >= s.min_reference_similarity and rs - ps >= s.min_similarity_gain and nv >= s.min_novel_words
                    for ps, rs, nv in zip(prompt_sim, ref_sim, novel)]
        n = len(answers)

        def share(values) -> float:
            return sum(map(float, values)) / n

        records, samples = [], []
        for preference in self.preferences if preferences is None else preferences:
            failed = [[c.describe() for c in preference.profile.failures(t)] for t in texts]
            clean = [not f and not d.degenerate and r for f, d, r in zip(failed, degeneration, relevant)]
            verdicts: list[Verdict | None] = [None] * n
            win: dict = {}
            if preference.judge is not None and against is not None:
                pairs = [Pair(p, a, b) for p, a, b in zip(self.prompts, texts, against)]
                verdicts = list(preference.judge.compare(pairs, persona=preference.profile.description))
                win = _win_fields(summarize(verdicts), preference.judge.name)
            for prompt, answer, fails, degen, nv, ps, rs, rel, ok, verdict in zip(self.prompts, answers, failed, degeneration, novel, prompt_sim,
                                                                                 ref_sim, relevant, clean, verdicts):
                samples.append(SampleRecord(
                    arm=arm, seed=seed, interactions=interactions, prompt=prompt, answer=answer.text, words=words(answer.text),
                    compliant=not fails, failed_checks=fails, degeneration=degen.reasons(), prompt_similarity=round(ps, 4),
                    reference_similarity=round(rs, 4), novel_words=nv, relevant=rel, clean=ok, profile=preference.label,
                    verdict=verdict.winner if verdict else None, verdict_raw=list(verdict.raw) if verdict else None,
                ))
            records.append(EvalRecord(
                arm=arm, seed=seed, interactions=interactions, n=n,
                compliance=share(not f for f in failed),
                clean=share(clean),
                degenerate=share(d.degenerate for d in degeneration),
                relevant=share(relevant),
                mean_words=share(words(t) for t in texts),
                apology=share(d.apology for d in degeneration),
                meta=share(d.meta for d in degeneration),
                looping=share(d.looping for d in degeneration),
                empty=share(d.empty for d in degeneration),
                truncated=share(d.truncated for d in degeneration),
                repetition=share(d.repetition for d in degeneration),
                distinct2=share(d.distinct2 for d in degeneration),
                prompt_similarity=share(prompt_sim),
                reference_similarity=share(ref_sim),
                kl=kl,
                seconds=time.perf_counter() - start,
                profile=preference.label,
                **win,
            ))
        return records, samples


@torch.no_grad()
def kl_to_initial(policy: Policy, contexts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], chunk: int = 2) -> float:
    """Mean over completions of the per-token full-vocabulary KL(π_θ ‖ π_0) along each: π_θ is the policy as it is (under
    LoRA: its active adapter on), π_0 the initial policy (the adapter off, or the snapshot). ``chunk`` completions at a
    time: their full logits, two models' worth, dominate an arm's peak memory (8 at a time added 1.6 GB, 2 add 0.2)."""
    per_answer: list[float] = []
    for i in range(0, len(contexts), chunk):
        ctx, ys = contexts[i : i + chunk], completions[i : i + chunk]
        current = policy.score(ctx, ys, full_logits=True)  # outside initial(): under LoRA that switches the adapter off
        with policy.initial() as initial:
            before = initial.score(ctx, ys, full_logits=True)
        log_p, log_q = current.logits.log_softmax(-1), before.logits.log_softmax(-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1) * current.mask
        per_answer += (kl.sum(-1) / current.mask.sum(-1)).tolist()
    return sum(per_answer) / len(per_answer)


def _win_fields(summary: WinRate, judge: str) -> dict:
    low, high = summary.ci or (None, None)
    return {"judge": judge, "win_rate": summary.win_rate, "win_low": low, "win_high": high, "decisive": summary.decisive,
            "ties": summary.ties / summary.n if summary.n else None, "invalid_rate": summary.invalid_rate, "swap_agreement": summary.swap_agreement}
