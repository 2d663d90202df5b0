"""A deterministic, offline user that follows its profile's checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.errors import UserInputError
from core.interaction import Followup
from core.policy import Message
from core.text import Embedder, looping, words
from simulators.base import SIMULATORS, Simulator, last_turns
from simulators.profile import Profile, pick

if TYPE_CHECKING:
    from simulators import SimulatorSettings


# what a user who notices nonsense says to an answer that loops or is not about the request, whatever their profile
NONSENSE = {  # what a person says to an answer that misses the request, and to one that loops
    "off_topic": ("That doesn't make sense. Can you actually answer my question?", "You lost me: that isn't about what I asked."),
    "looping": ("You're going in circles. Just answer the question, please.", "You keep repeating yourself. Say it once, please."),
}


class ScriptedSimulator:
    """Complains with the first failed check's follow-up, else replies with one of the profile's satisfied lines.

    With ``notices_nonsense`` it first reads the answer as any person would: one that loops (``core.text.looping``) or is
    off the request (MiniLM cosine to it below ``min_similarity``, the evaluation's off-topic line) gets a ``NONSENSE`` line for that fault,
    whatever the profile's checks say. Without it, an answer that passes the checks is praised even when it is gibberish,
    and the praise reinforces the gibberish (docs/experiments.md §11).
    """

    def __init__(self, notices_nonsense: bool = False, min_similarity: float = 0.3):
        self.notices_nonsense = notices_nonsense
        self.min_similarity = min_similarity
        self._embedder: Embedder | None = None

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        if not profile.checks:
            raise UserInputError(f"profile '{profile.name}' has no checks, so a scripted user cannot judge it: use --simulator llm or local")
        turns = [last_turns(conversation) for conversation in conversations]
        faults = self.nonsense(turns) if self.notices_nonsense else [None] * len(turns)
        out = []
        for (prompt, answer), fault in zip(turns, faults):
            text, satisfied = (pick(list(NONSENSE[fault]), prompt + "\x00" + answer), False) if fault else profile.scripted_followup(prompt, answer)
            out.append(Followup(text=text, raw=text, satisfied=satisfied))
        return out

    def nonsense(self, turns: Sequence[tuple[str, str]]) -> list[str | None]:
        """Per (request, answer): the ``NONSENSE`` fault, "looping" or "off_topic", or None for a sensible answer."""
        if self._embedder is None:
            self._embedder = Embedder()
        similarity = self._embedder.similarity([answer for _, answer in turns], [prompt for prompt, _ in turns])
        return ["looping" if looping(words(answer)) else "off_topic" if value < self.min_similarity else None
                for (_, answer), value in zip(turns, similarity)]


class ComplainingSimulator:
    """A control user who complains whatever the answer: one of the profile's complaints, picked by hash.

    A method that improves as much under this user as under the real one learned from the complaint's
    presence, not from what it said about the answer.
    """

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        complaints = [line for check in profile.checks for line in check.followup]
        if not complaints:
            raise UserInputError(f"profile '{profile.name}' has no checks, so it has no complaints to repeat")
        out = []
        for conversation in conversations:
            text = pick(complaints, "\x00".join(last_turns(conversation)))
            out.append(Followup(text=text, raw=text, satisfied=False))
        return out


@SIMULATORS.register("scripted", help="the profile's scripted rules (offline)")
def scripted(settings: SimulatorSettings) -> Simulator:
    return ScriptedSimulator(notices_nonsense=settings.notices_nonsense)


@SIMULATORS.register("complain", help="a diagnostic user who complains (with the profile's own complaints) whatever the answer")
def complain(settings: object) -> Simulator:
    return ComplainingSimulator()
