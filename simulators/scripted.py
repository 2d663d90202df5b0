"""A deterministic, offline user that follows its profile's checks."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import UserInputError
from core.interaction import Followup
from core.policy import Message
from simulators.base import SIMULATORS, Simulator, last_turns
from simulators.profile import Profile, pick


class ScriptedSimulator:
    """Complains with the first failed check's follow-up, else replies with one of the profile's satisfied lines."""

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        if not profile.checks:
            raise UserInputError(f"profile '{profile.name}' has no checks, so a scripted user cannot judge it: use --simulator llm or local")
        out = []
        for conversation in conversations:
            text, satisfied = profile.scripted_followup(*last_turns(conversation))
            out.append(Followup(text=text, raw=text, satisfied=satisfied))
        return out


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
def scripted(settings: object) -> Simulator:
    return ScriptedSimulator()


@SIMULATORS.register("complain", help="a diagnostic user who complains (with the profile's own complaints) whatever the answer")
def complain(settings: object) -> Simulator:
    return ComplainingSimulator()
