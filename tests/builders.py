"""Test data shared by several test files: an interaction built from a fixed answer, the policy's weights as one vector."""

from __future__ import annotations

import torch

from core.engine import Generation
from core.interaction import Followup, Interaction


def make_interaction(policy, prompt: str, answer: str, followup: str) -> Interaction:
    messages = policy.messages(prompt)
    tokens = tuple(policy.tokenizer.encode(answer, add_special_tokens=False) + [policy.eos_token_id])
    return Interaction(0, prompt, messages, policy.encode_chat(messages), Generation(answer, tokens, True), Followup(followup, followup))


def weights(policy) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in policy.model.parameters()]).clone()


ANSWER = "Rice is a grain. Rinse it, add two cups of water per cup of rice, boil, then simmer covered for eighteen minutes."
