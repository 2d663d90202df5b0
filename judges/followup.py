"""What a user's follow-up is, relative to the request it follows: the RLHI paper's four types (core/followups.py).

Two classifiers, one interface (``core.followups.FollowupClassifier``):

- ``HeuristicClassifier``: offline rules (English). A simulated user's own satisfied flag decides when it gave one;
  otherwise word lists and word overlap with the previous request. Named ``heuristic`` in every record it labels, so
  that its labels are never mistaken for a model's;
- ``LLMClassifier``: any judge backend (a litellm model, or a local model's label-token probabilities) asked for one
  word and parsed strictly; an answer that is not one of the four words falls back to the heuristic, and the record
  says so.

``build_classifier`` names them: ``heuristic``, or any judge backend kind (judges/backends.py) for the LLM classifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.followups import FollowupCase, FollowupClassifier, FollowupLabel, FollowupType
from core.policy import Message
from judges.backends import JudgeBackend

if TYPE_CHECKING:
    from core.llm_client import LLMSettings

__all__ = ["WORDS", "FollowupCase", "FollowupClassifier", "FollowupLabel", "HeuristicClassifier", "LLMClassifier", "build_classifier",
           "classifier_messages", "heuristic_label", "overlap", "parse_label"]

# The words the LLM classifier answers with; their first tokens differ (a local backend reads their probabilities).
WORDS: dict[str, FollowupType] = {"NEW": "new_request", "FEEDBACK": "reattempt_with_feedback", "REPEAT": "reattempt_without_feedback",
                                  "POSITIVE": "positive_feedback"}

SYSTEM = """You sort the messages a user sends to an AI assistant. You see the user's earlier request and the message \
the user sent after the assistant answered it, and you say how the second message relates to the first:

NEW - the user moves on: another topic or task, or a clearly different version of the earlier one.
FEEDBACK - the user wants the same thing done again, differently: they criticise or correct the answer, say what \
to change, add a constraint, or clarify what they meant (directly or by implication).
REPEAT - the user sends the same request again with nothing new in it.
POSITIVE - the user is pleased with the answer: thanks, praise, approval.

Answer with exactly one word: NEW, FEEDBACK, REPEAT or POSITIVE."""

USER = """Earlier request:
<<<
{request}
>>>

Next message from the same user:
<<<
{followup}
>>>

How does the next message relate to the earlier request? Answer NEW, FEEDBACK, REPEAT or POSITIVE."""

_WORD = re.compile(r"[a-z0-9']+")
_PRAISE = re.compile(
    r"\b(thanks?|thank you|thx|great|perfect|awesome|excellent|amazing|nice|brilliant|wonderful|love it|well done|good job|"
    r"that works|that helps|that helped|exactly what i|helpful|cool)\b"
)
_COMPLAINT = re.compile(
    r"\b(no|nope|not what|wrong|incorrect|mistake|error|too \w+|with (a |an |some |more )?(code|examples?|details?|sources|steps)|shorter|longer|"
    r"more detail|less detail|simpler|instead|rewrite|rephrase|redo|again but|you forgot|you missed|didn't|did not|doesn't|does not|"
    r"isn't|is not|don't|should|i meant|i said|i asked|make it|can you make|change|fix|only|without|please (use|add|remove|keep)|"
    r"add|remove|keep it|but)\b"
)
_REQUEST = re.compile(r"\b(write|give|tell|explain|list|create|generate|translate|summari[sz]e|can you|could you|now (write|give|tell|do|make|show|explain|list))\b")
_REGENERATE = re.compile(r"^(again|try again|regenerate|retry|redo|one more time|another one|repeat)[.!?]*$")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' word sets (0 when either has none)."""
    wa, wb = set(_words(a)), set(_words(b))
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


class _Classifier:
    name: str

    def classify(self, cases: Sequence[FollowupCase]) -> list[FollowupType]:
        return [label.label for label in self.judge(cases)]

    def judge(self, cases: Sequence[FollowupCase]) -> list[FollowupLabel]:
        raise NotImplementedError


class HeuristicClassifier(_Classifier):
    """Rules on the follow-up's words and its overlap with the previous request (English; a fallback, not a model).

    A case with the simulated user's satisfied flag: positive_feedback when satisfied, else reattempt_with_feedback.
    Otherwise, in order: the same request again (overlap ≥ ``repeat_overlap``, or a bare "try again") →
    reattempt_without_feedback; a short message of thanks or praise with no complaint, question or new request →
    positive_feedback; complaint or correction words, or a partial rewording of the request (overlap ≥
    ``rephrase_overlap``) → reattempt_with_feedback; else new_request.
    """

    name = "heuristic"

    def __init__(self, repeat_overlap: float = 0.8, rephrase_overlap: float = 0.4, short_words: int = 12):
        self.repeat_overlap, self.rephrase_overlap, self.short_words = repeat_overlap, rephrase_overlap, short_words

    def judge(self, cases: Sequence[FollowupCase]) -> list[FollowupLabel]:
        return [FollowupLabel(self.label(case), heuristic_source(case.satisfied)) for case in cases]

    def label(self, case: FollowupCase) -> FollowupType:
        if case.satisfied is not None:
            return "positive_feedback" if case.satisfied else "reattempt_with_feedback"
        text = " ".join(_words(case.followup))
        similar = overlap(case.request, case.followup)
        if similar >= self.repeat_overlap or _REGENERATE.match(text):
            return "reattempt_without_feedback"
        complaint = bool(_COMPLAINT.search(text))
        request = bool(_REQUEST.search(text)) or "?" in case.followup
        if _PRAISE.search(text) and not complaint and not request and len(text.split()) <= self.short_words:
            return "positive_feedback"
        if complaint or similar >= self.rephrase_overlap:
            return "reattempt_with_feedback"
        return "new_request"


def heuristic_label(request: str, followup: str, satisfied: bool | None = None) -> FollowupType:
    """The heuristic's type for one follow-up (no answer needed)."""
    return HeuristicClassifier().label(FollowupCase(request, "", followup, satisfied))


def heuristic_source(satisfied: bool | None) -> str:
    """How the heuristic decided: from the simulator's satisfied flag (scripted users give one), or from keywords."""
    return "heuristic (simulator's satisfied flag)" if satisfied is not None else "heuristic (keywords)"


def classifier_messages(request: str, followup: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(request=request.strip(), followup=followup.strip())}]


def parse_label(text: str) -> FollowupType | None:
    """The type when the reply is one of the four words (case, brackets, punctuation and a leading 'Answer:' aside), else None."""
    core = re.sub(r"(?i)^\s*(?:answer|label|classification)\s*:\s*", "", text.strip())
    core = re.sub(r"[\[\]*_`.!\"']", "", core).strip().upper()
    return WORDS.get(core)


class LLMClassifier(_Classifier):
    """Labels follow-ups with ``backend``; an unparsed reply falls back to ``fallback`` (the heuristic), and its source
    names the heuristic and the backend that failed."""

    def __init__(self, backend: JudgeBackend, fallback: HeuristicClassifier | None = None):
        self.backend = backend
        self.fallback = fallback or HeuristicClassifier()
        self.name = backend.name

    def judge(self, cases: Sequence[FollowupCase]) -> list[FollowupLabel]:
        replies = self.backend.answer([classifier_messages(c.request, c.followup) for c in cases])
        out = []
        for case, reply in zip(cases, replies):
            label = parse_label(reply.text)
            if label is None:
                source = f"{heuristic_source(case.satisfied)}; {self.name} unparsed"
                out.append(FollowupLabel(self.fallback.label(case), source, reply.describe()))
            else:
                out.append(FollowupLabel(label, self.name, reply.describe()))
        return out


def build_classifier(kind: str = "heuristic", *, llm: LLMSettings | None = None, model: str | None = None, device: str = "auto",
                     max_tokens: int | None = 8) -> FollowupClassifier:
    """``heuristic``, or the LLM classifier over the judge backend ``kind`` (``llm`` settings for kind llm, a ``model`` for
    kind local; see judges/backends.py ``build_backend``)."""
    if kind == "heuristic":
        return HeuristicClassifier()
    from judges.backends import BackendSpec, build_backend

    return LLMClassifier(build_backend(BackendSpec(kind, llm, model), device, labels=tuple(WORDS), max_tokens=max_tokens))
