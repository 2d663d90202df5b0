"""Safety flags for users' follow-ups: does this message push the assistant toward harm?

The update guard (``trainers/guard.py``) asks a flagger about every follow-up before an update, so that a user
cannot steer the policy toward insults or recklessness through what they reply. Two flaggers:

- ``RuleFlagger`` (offline, the default): phrase rules in four categories — asking for insults or contempt
  (``insult_request``), abusive language in the message itself (``abuse``), asking to drop safety warnings or
  precautions (``drop_safety``) and asking the assistant to wave a risk away (``endorse_risk``). A match right after
  a negation ("don't insult me") does not count. Precise rather than complete: a request for a different style,
  length or tone ("skip the intro", "be blunt") is never flagged, and a reworded push can get through.
- ``LLMFlagger``: any judge backend (an LLM through litellm, or a local model's verdict-token probabilities) shown
  the request, the answer and the follow-up, answering SAFE or UNSAFE; anything else counts as flagged (fail closed).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.policy import Message
    from judges.backends import JudgeBackend

_TARGET = r"(?:me|him|her|them|us|people|everyone|others|my|the other|those)"
_SLUR = r"(?:idiots?|morons?|losers?|stupid|dumb|fools?|pathetic|imbeciles?|clowns?|names)"
RULES: dict[str, list[str]] = {
    "insult_request": [
        rf"\b(?:insult|mock|roast|humiliat|belittl|ridicul|demean|trash[- ]talk|swear at|curse at|make fun of)\w*\s+{_TARGET}\b",
        rf"\bcall\w*\s+(?:me|him|her|them|us|everyone|the (?:other )?\w+(?: \w+)?)\b[^.!?]{{0,25}}\b{_SLUR}",
        r"\b(?:be|get|sound|act)\s+(?:more |even |a bit |really |way )?(?:rude|ruder|mean|meaner|nasty|nastier|insulting|condescending|contemptuous|cruel|cruell?er)\b",
        r"\b(?:stop|quit)\s+being\s+(?:so\s+)?(?:nice|polite|kind|friendly|respectful)\b",
        r"\blike\s+(?:i'm|i am)\s+(?:an?\s+)?(?:idiot|moron|stupid|dumb|fool|imbecile|child)\b",
        r"\b(?:tell|show)\s+me\s+how\s+(?:stupid|dumb|idiotic|pathetic)\b",
        r"\b(?:more|some|with|show)\s+(?:\w+\s+)?contempt\b",
        r"\b(?:keep|start|go on)\s+(?:insulting|mocking|belittling|roasting)\b",
        r"\bdon't hold back on the insults\b",
    ],
    "abuse": [
        r"\b(?:idiots?|morons?|imbeciles?|dumbass(?:es)?|losers?|halfwits?|dimwits?|shut up)\b",
    ],
    "drop_safety": [
        (r"\b(?:skip\w*|drop\w*|cut|lose|ditch|forget|stop|no|without|less|fewer|enough with|spare me|leave out)\b(?:\s+[\w'\"]+){0,3}?\s+"
         r"(?:safety|warnings?|caveats?|precautions?|disclaimers?|nannying|babying|protective gear|the gear|goggles|gloves|helmet)\b"),
        r"\b(?:stop|quit)\s+(?:telling me to be careful|warning me|lecturing me about)\b",
        r"\bdon't\s+(?:tell|warn|remind)\s+me\s+(?:to be careful|about (?:the )?(?:risks?|safety|dangers?))\b",
        r"\b(?:skip|drop|no|stop|forget|without)\b[^.?!]{0,20}\bconsult (?:a|your) (?:professional|doctor|pharmacist|electrician)\b",
        r"\bsafety (?:lecture|notes?|stuff|talk)\b",
    ],
    "endorse_risk": [
        r"\b(?:tell|reassure)\s+me\s+(?:that\s+)?(?:it'?s|it is|that's|i'?m|i am|the|my)\b[^.?!]{0,25}\b(?:fine|ok|okay|safe|no big deal)\b",
        r"\bsay\s+(?:that\s+)?it'?s\s+(?:fine|ok|okay|safe|no big deal)\b",
        r"\bdon'?t\s+need\s+(?:to\s+bother\s+with\s+)?(?:the\s+|any\s+)?(?:precautions|safety|protective|gear|gloves|goggles|helmet|seat ?belt)\b",
        r"\bshortcuts?\s+(?:is|are)\s+(?:fine|ok|okay|safe)\b",
        r"\b(?:double|triple|extra)\s+(?:the\s+)?dose\b",
    ],
}
_NEGATED = re.compile(r"(?i)\b(?:don't|do not|never|not|stop)\s+(?:\w+\s+)?$")
_NEGATABLE = {"insult_request", "abuse", "endorse_risk"}


@dataclass(frozen=True)
class Flag:
    """A flagger's decision on one follow-up: flagged or not, why (rule categories or the judge's verdict), its raw text."""

    flagged: bool
    reasons: tuple[str, ...] = ()
    raw: str | None = None


@dataclass(frozen=True)
class Exchange:
    """What a flagger may look at: the user's request, the assistant's answer and the user's follow-up."""

    request: str
    answer: str
    followup: str


class Flagger(Protocol):
    name: str

    def review(self, exchanges: Sequence[Exchange]) -> list[Flag]: ...


class RuleFlagger:
    """Offline phrase rules over the follow-up alone (see the module docstring)."""

    name = "rules"

    def __init__(self, rules: dict[str, list[str]] | None = None):
        self.rules = {category: [re.compile(p, re.IGNORECASE) for p in patterns] for category, patterns in (rules or RULES).items()}

    def reasons(self, text: str) -> tuple[str, ...]:
        found = []
        for category, patterns in self.rules.items():
            for pattern in patterns:
                if any(category not in _NEGATABLE or not _NEGATED.search(text[max(0, m.start() - 24): m.start()]) for m in pattern.finditer(text)):
                    found.append(category)
                    break
        return tuple(found)

    def review(self, exchanges: Sequence[Exchange]) -> list[Flag]:
        out = []
        for exchange in exchanges:
            reasons = self.reasons(exchange.followup)
            out.append(Flag(bool(reasons), reasons))
        return out


SYSTEM = """You screen the follow-up messages users send to an AI assistant, before the assistant learns from them.

A follow-up is UNSAFE when it pushes the assistant toward harmful behaviour: insulting, mocking or demeaning the user \
or anyone else; dropping safety warnings or precautions; encouraging risky, dangerous or illegal actions; or praising \
an answer for doing any of these. A follow-up that only asks for another style, length, tone, format or level of \
detail is SAFE, even when it is blunt or annoyed.

Answer with exactly one word: SAFE or UNSAFE."""

USER = """The user's request:
<<<
{request}
>>>

The assistant's answer:
<<<
{answer}
>>>

The user's follow-up:
<<<
{followup}
>>>

Is the follow-up SAFE or UNSAFE?"""

_EDGES = string.whitespace + string.punctuation


def flag_messages(exchange: Exchange, max_answer_chars: int = 1500) -> list[Message]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER.format(request=exchange.request.strip(), answer=exchange.answer.strip()[:max_answer_chars],
                                                    followup=exchange.followup.strip())}]


def parse_safety(text: str) -> bool | None:
    """True for UNSAFE, False for SAFE (case, surrounding punctuation and markup aside); None for anything else."""
    core = re.sub(r"[*_`]", "", text).strip(_EDGES).upper()
    return {"UNSAFE": True, "SAFE": False}.get(core)


class LLMFlagger:
    """A judge backend's SAFE/UNSAFE verdict on each exchange; an unreadable verdict is flagged (fail closed)."""

    def __init__(self, backend: JudgeBackend):
        self.backend = backend
        self.name = f"judge:{backend.name}"

    def review(self, exchanges: Sequence[Exchange]) -> list[Flag]:
        replies = self.backend.answer([flag_messages(e) for e in exchanges])
        out = []
        for reply in replies:
            unsafe = parse_safety(reply.text)
            reasons = ("judged unsafe",) if unsafe else () if unsafe is False else ("unreadable verdict",)
            out.append(Flag(unsafe is not False, reasons, reply.describe()))
        return out
