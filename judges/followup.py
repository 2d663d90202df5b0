"""What a user's follow-up is, relative to the request it follows (after the RLHI paper's four types).

- ``new``: a different request (another topic or task, or a substantially different variant);
- ``retry_feedback``: the same task again with feedback on the answer, a correction or a clarification;
- ``retry_no_feedback``: the same request repeated, nothing added;
- ``positive``: praise or satisfaction with the answer.

Two classifiers share one interface: an LLM asked through any judge backend (a litellm model, or a local model's
label-token probabilities) and parsed strictly, and an offline keyword heuristic, named ``heuristic`` in every
record it labels so that its labels are never mistaken for a model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.policy import Message
from judges.backends import JudgeBackend

Label = Literal["new", "retry_feedback", "retry_no_feedback", "positive"]
LABELS: tuple[Label, ...] = ("new", "retry_feedback", "retry_no_feedback", "positive")
# The words the classifier answers with; their first tokens differ (a local backend reads their probabilities).
WORDS: dict[str, Label] = {"NEW": "new", "FEEDBACK": "retry_feedback", "REPEAT": "retry_no_feedback", "POSITIVE": "positive"}

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

_POSITIVE = re.compile(r"(?i)^\W*(?:thanks|thank you|thx|perfect|great|awesome|excellent|nice|good|love it|exactly|that works|that's (?:it|great|perfect)"
                       r"|got it|brilliant|wonderful|amazing|cool)\b")
_FEEDBACK = re.compile(r"(?i)\b(?:too|shorter|longer|less|more|instead|don'?t|do not|didn'?t|without|no |stop|again|rather|please|wrong|not what"
                       r"|incorrect|simpler|briefly|brief|short|detail|just)\b")
_CUE = re.compile(r"[\w']+")


@dataclass(frozen=True)
class FollowupLabel:
    """A follow-up's type, who decided it (``heuristic`` or the backend's name) and what it answered."""

    label: Label
    source: str
    raw: str


def classifier_messages(request: str, followup: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(request=request.strip(), followup=followup.strip())}]


def parse_label(text: str) -> Label | None:
    """The label when the reply is one of the four words (case, brackets, punctuation and a leading 'Answer:' aside), else None."""
    core = re.sub(r"(?i)^\s*(?:answer|label|classification)\s*:\s*", "", text.strip())
    core = re.sub(r"[\[\]*_`.!\"']", "", core).strip().upper()
    return WORDS.get(core)


def heuristic_label(request: str, followup: str, satisfied: bool | None = None) -> Label:
    """Offline stand-in: the simulator's own satisfied flag when it gave one; else praise words, an exact repeat,
    feedback cue words, and otherwise a new request."""
    if satisfied is not None:
        return "positive" if satisfied else "retry_feedback"
    norm = " ".join(_CUE.findall(followup.lower()))
    if norm and norm == " ".join(_CUE.findall(request.lower())):
        return "retry_no_feedback"
    if _POSITIVE.search(followup) and not _FEEDBACK.search(followup):
        return "positive"
    return "retry_feedback" if _FEEDBACK.search(followup) else "new"


def heuristic_source(satisfied: bool | None) -> str:
    """How the heuristic decided: from the simulator's satisfied flag (scripted users give one), or from keywords."""
    return "heuristic (simulator's satisfied flag)" if satisfied is not None else "heuristic (keywords)"


class FollowupClassifier:
    """Labels follow-ups with ``backend`` (None: the offline heuristic). An LLM reply that is not one of the four
    words falls back to the heuristic, and the record says so (its source names the heuristic and the backend that failed)."""

    def __init__(self, backend: JudgeBackend | None = None):
        self.backend = backend
        self.name = backend.name if backend is not None else "heuristic"

    def classify(self, items: Sequence[tuple[str, str, bool | None]]) -> list[FollowupLabel]:
        """One label per (request, follow-up, satisfied flag or None)."""
        if self.backend is None:
            return [FollowupLabel(heuristic_label(r, f, s), heuristic_source(s), "") for r, f, s in items]
        replies = self.backend.answer([classifier_messages(r, f) for r, f, _ in items])
        out = []
        for (request, followup, satisfied), reply in zip(items, replies):
            label = parse_label(reply.text)
            if label is None:
                source = f"{heuristic_source(satisfied)}; {self.name} unparsed"
                out.append(FollowupLabel(heuristic_label(request, followup, satisfied), source, reply.describe()))
            else:
                out.append(FollowupLabel(label, self.name, reply.describe()))
        return out
