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
    """One call per conversation; a call that still fails after the client's retries gives a failed Followup."""

    def __init__(self, client: LLMClient):
        self.client = client

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        out = []
        for conversation in conversations:
            try:
                raw = self.client.complete(simulator_messages(profile, *last_turns(conversation)))
            except ProviderError as exc:
                out.append(Followup(text="", raw="", failed=str(exc)))
                continue
            out.append(Followup(text=clean_reply(raw), raw=raw))
        return out


@SIMULATORS.register("llm", help="any LLM through litellm (settings.llm)")
def llm(settings) -> Simulator:
    return LLMSimulator(LLMClient(settings.llm))
