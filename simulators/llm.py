"""A user simulated by any LLM that litellm reaches (a provider, or any OpenAI-compatible base URL)."""

from __future__ import annotations

from collections.abc import Sequence

from core.interaction import Followup
from core.llm_client import LLMClient, ProviderError
from core.policy import Message
from simulators.base import SIMULATORS, Simulator, last_turns
from simulators.profile import Profile
from simulators.prompt import clean_reply, simulator_messages


class LLMSimulator:
    """One call per conversation (sent concurrently, up to the client's ``concurrency``); a call that still fails after
    the client's retries gives a failed Followup."""

    def __init__(self, client: LLMClient):
        self.client = client

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        replies = self.client.complete_many([simulator_messages(profile, *last_turns(c)) for c in conversations], return_exceptions=True)
        out = []
        for raw in replies:
            if isinstance(raw, ProviderError):
                out.append(Followup(text="", raw="", failed=str(raw)))
            elif isinstance(raw, BaseException):
                raise raw  # not a provider fault (a setting to fix): as the sequential loop did
            else:
                out.append(Followup(text=clean_reply(raw), raw=raw))
        return out


@SIMULATORS.register("llm", help="any LLM through litellm (settings.llm)")
def llm(settings) -> Simulator:
    return LLMSimulator(LLMClient(settings.llm))
