"""A user simulated by a local Hugging Face model (its own frozen copy), with the same instructions as the LLM one."""

from __future__ import annotations

from collections.abc import Sequence

from core.engine import HFEngine, SamplingParams
from core.interaction import Followup
from core.policy import Message, Policy, PolicySettings
from simulators.base import SIMULATORS, Simulator, last_turns
from simulators.profile import Profile
from simulators.prompt import clean_reply, simulator_messages


class LocalSimulator:
    def __init__(self, model: str, device: str = "auto", temperature: float = 0.7, max_tokens: int = 64):
        self.policy = Policy.load(PolicySettings(model=model, device=device))
        self.policy.model.eval().requires_grad_(False)
        self.engine = HFEngine(self.policy)
        self.params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature)

    def respond(self, conversations: Sequence[Sequence[Message]], profile: Profile) -> list[Followup]:
        contexts = [self.policy.encode_chat(simulator_messages(profile, *last_turns(c))) for c in conversations]
        return [Followup(text=clean_reply(g.text), raw=g.text) for g in self.engine.generate(contexts, self.params)]


@SIMULATORS.register("local", help="a local model (settings.model, temperature, max_tokens)")
def local(settings) -> Simulator:
    return LocalSimulator(settings.model, temperature=settings.temperature, max_tokens=settings.max_tokens)
