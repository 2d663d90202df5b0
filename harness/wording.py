"""How hard each of a profile's follow-up lines pushes: ``hindsight profiles wording``.

SDPO's update on an answer is the per-token advantage A_t the follow-up gives it (trainers/sdpo.py), so a profile whose
complaints barely change how the model scores its own answers teaches little, however often the user complains. Here
every line a scripted user of the profile can send is scored on the same answers with the trainer's own code (nothing
is trained): each check's complaints on the answers that fail that check, the satisfied replies on the answers that pass
every check (on all answers when none does). Two numbers per line: the answer's mean A_t (how much the whole answer is
pushed up or down) and A_t of its end-of-turn token (whether stopping where it stopped is pushed: the lever of every
length preference), each averaged over the answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from core.policy import Policy
from simulators.profile import Profile
from trainers.sdpo import SDPOConfig, SDPOTrainer


@dataclass(frozen=True)
class Answer:
    prompt: str
    ids: tuple[int, ...]  # the answer's tokens, end-of-turn included when it finished


@dataclass
class Wording:
    """One follow-up line scored on ``answers`` answers."""

    kind: str  # "complaint: <check>" or "satisfied"
    text: str
    answers: int
    mean: float  # mean over answers of each answer's mean A_t
    eos: float | None  # mean A_t of the end-of-turn token over the answers that end on one (finished; cut ones too with cut_eos)
    on_all: bool = False  # satisfied lines scored on every answer, none having passed the checks


def score_wordings(policy: Policy, config: SDPOConfig, profile: Profile, answers: Sequence[Answer], neutral_pool: Sequence[str],
                   system: str | None = None) -> list[Wording]:
    """Every follow-up line of ``profile`` scored on its answers (see the module docstring), checks in file order."""
    from harness.signals import answer_interaction

    trainer = SDPOTrainer(policy, config, neutral_pool=neutral_pool)
    interactions = [answer_interaction(policy, a.prompt, a.ids, system) for a in answers]
    texts = [i.response.text for i in interactions]
    groups: list[tuple[str, list[str], list[int], bool]] = []
    for check in profile.checks:
        failing = [n for n, text in enumerate(texts) if not check.passes(text)]
        if failing:
            groups.append((f"complaint: {check.short()}", list(check.followup), failing, False))
    passing = [n for n, text in enumerate(texts) if profile.complies(text)]
    groups.append(("satisfied", list(profile.satisfied), passing or list(range(len(texts))), not passing))
    out = []
    for kind, lines, chosen, on_all in groups:
        for line in lines:
            rows = trainer.token_advantages([interactions[n] for n in chosen], [line] * len(chosen))
            eos = [values[-1] for n, values in zip(chosen, rows) if trainer.completion(interactions[n])[-1:] == [policy.eos_token_id]]
            out.append(Wording(kind, line, len(chosen), fmean(fmean(v) for v in rows if v), fmean(eos) if eos else None, on_all))
    return out


def spread(wordings: Sequence[Wording]) -> dict[str, float | None]:
    """Per profile: the complaints' weakest, mean and strongest mean A_t (most negative = strongest push down), and the satisfied
    replies' mean, for the summary table."""
    complaints = [w.mean for w in wordings if w.kind.startswith("complaint")]
    satisfied = [w.mean for w in wordings if w.kind == "satisfied"]
    eos = [w.eos for w in wordings if w.kind.startswith("complaint") and w.eos is not None]
    return {"complaint_weakest": max(complaints, default=None), "complaint_mean": fmean(complaints) if complaints else None,
            "complaint_strongest": min(complaints, default=None), "complaint_eos": fmean(eos) if eos else None,
            "satisfied_mean": fmean(satisfied) if satisfied else None}
