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
NONSENSE = (
    "That doesn't make sense. Can you actually answer my question?",
    "You lost me: that isn't about what I asked.",
    "You're going in circles. Just answer the question, please.",
)


class ScriptedSimulator:
    """Complains with the first failed check's follow-up, else replies with one of the profile's satisfied lines.

    With ``notices_nonsense`` it first reads the answer as any person would: one that loops (``core.text.looping``) or is
    off the request (MiniLM cosine to it below ``min_similarity``, the evaluation's off-topic line) gets a ``NONSENSE`` line,
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
        nonsense = self.nonsense(turns) if self.notices_nonsense else [False] * len(turns)
        out = []
        for (prompt, answer), bad in zip(turns, nonsense):
            text, satisfied = (pick(list(NONSENSE), prompt + "\x00" + answer), False) if bad else profile.scripted_followup(prompt, answer)
            out.append(Followup(text=text, raw=text, satisfied=satisfied))
        return out

    def nonsense(self, turns: Sequence[tuple[str, str]]) -> list[bool]:
        """Per (request, answer): does the answer loop or miss the request?"""
        if self._embedder is None:
            self._embedder = Embedder()
        similarity = self._embedder.similarity([answer for _, answer in turns], [prompt for prompt, _ in turns])
        return [looping(words(answer)) or value < self.min_similarity for (_, answer), value in zip(turns, similarity)]


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
