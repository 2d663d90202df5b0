"""One client for every LLM call a simulator or judge makes, through litellm (imported lazily: it is slow)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from harness.policy import Message


class LLMSettings(BaseModel):
    """Which LLM to call. The API key is read from the environment variable named here, never stored."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="litellm model name, e.g. 'openai/gpt-4o-mini' or 'openai/local' with api_base")
    api_base: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    temperature: float = 0.0
    max_tokens: int = 64
    timeout_s: float = 60.0
    retries: int = 3


class LLMClient:
    def __init__(self, settings: LLMSettings):
        self.settings = settings

    def complete(self, messages: list[Message]) -> str:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        s = self.settings
        response = litellm.completion(
            model=s.model,
            messages=messages,
            api_base=s.api_base,
            api_key=os.environ.get(s.api_key_env) if s.api_key_env else (None if s.api_base is None else "none"),
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            timeout=s.timeout_s,
            num_retries=s.retries,
        )
        return response.choices[0].message.content or ""
