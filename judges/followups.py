"""What kind of follow-up a user's next message is (the RLHI paper's four types), so logged tuples can be kept or weighted by it.

- ``new_request``: the user moves on (a new topic, a different request, an unrelated input);
- ``reattempt_with_feedback``: the user asks again with a correction, a clarification or a complaint about the answer;
- ``reattempt_without_feedback``: the user repeats the request with nothing new (or just asks to regenerate);
- ``positive_feedback``: the user is pleased (thanks, praise) and asks for nothing more.

``FollowupClassifier`` is the interface: a batch of ``FollowupCase`` in, one label each out. ``HeuristicClassifier`` is
the offline fallback (word lists and word overlap with the previous request, English only); an LLM classifier (the
RLHI paper prompts GPT-4o) implements the same ``classify`` and replaces it without touching the importer or trainer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from core.followups import FollowupCase, FollowupClassifier, FollowupType

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


class HeuristicClassifier:
    """Rules on the follow-up's words and its overlap with the previous request (English; a fallback, not a model).

    In order: the same request again (overlap ≥ ``repeat_overlap``, or a bare "try again") → reattempt_without_feedback;
    a short message of thanks or praise with no complaint, question or new request → positive_feedback; complaint or correction
    words, or a partial rewording of the request (overlap ≥ ``rephrase_overlap``) → reattempt_with_feedback; else new_request.
    """

    name = "heuristic"

    def __init__(self, repeat_overlap: float = 0.8, rephrase_overlap: float = 0.4, short_words: int = 12):
        self.repeat_overlap, self.rephrase_overlap, self.short_words = repeat_overlap, rephrase_overlap, short_words

    def classify(self, cases: Sequence[FollowupCase]) -> list[FollowupType]:
        return [self.label(case) for case in cases]

    def label(self, case: FollowupCase) -> FollowupType:
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


def build_classifier(kind: Literal["heuristic"] = "heuristic") -> FollowupClassifier:
    """The classifier named by ``kind`` (an LLM classifier from the RLHI work plugs in here)."""
    return HeuristicClassifier()
