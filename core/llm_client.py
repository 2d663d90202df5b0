"""One client for every LLM call a simulator or judge makes, through litellm (imported lazily: it is slow).

Replies are cached on disk, one JSON file per request under ``cache_dir()/llm`` (``$HINDSIGHT_LLM_CACHE`` overrides), keyed by the sha256 of what
decides the output (model, api_base, messages, temperature, max_tokens), never the API key. Re-running an
evaluation therefore makes no new calls; with ``temperature > 0`` the cached sample is replayed.

Faults are handled here, not by litellm (its own retries are off): each attempt has ``timeout_s``; 429s, 5xx,
timeouts, connection errors and unusable bodies (not JSON, no choices) are retried up to ``retries`` times after
exponential backoff with full jitter (a 429's Retry-After is honoured, capped at ``max_backoff_s``); then
``ProviderError``. A 400/401/403/404/422 is a setting to fix, not a fault: a one-line UserInputError at once.

``complete_many`` sends independent requests concurrently, at most ``concurrency`` at a time (a thread pool), and
answers in input order with what the same ``complete`` calls made one after another would give: identical requests
in one batch are sent once and the rest count as cache hits (with the cache off each is sent, as sequentially); the
usage counters are guarded by a lock; the error raised is the first one in input order.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import RunError, UserInputError
from core.policy import Message
from core.runtime import cache_dir

SETTINGS_ERRORS = {
    400: "the provider rejected the request: check the model name and the settings",
    401: "the provider refused the API key: check that --api-key-env names a variable holding a valid key",
    403: "the provider refused the API key for this model: check the key's permissions",
    404: "not found: check the model name, and that the base URL is an OpenAI-compatible one ending in /v1",
    422: "the provider rejected the request: check the model name and the settings",
}


class ProviderError(RunError):
    """An LLM call that still failed after every retry (the provider is down, overloaded or answering garbage)."""


class EmptyReply(Exception):
    """A 200 whose body holds no usable choice."""


class LLMSettings(BaseModel):
    """Which LLM to call. The API key is read from the environment variable named here, never stored."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="litellm model name, e.g. 'openai/gpt-4o-mini' or 'openai/local' with api_base")
    api_base: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    temperature: float = 0.0
    max_tokens: int = 64
    timeout_s: float = Field(60.0, gt=0, description="seconds one attempt may take")
    retries: int = Field(3, ge=0, description="attempts after the first, on 429, 5xx, timeouts, connection errors and unusable bodies")
    backoff_s: float = Field(1.0, ge=0, description="first backoff; attempt k waits a uniform random time up to backoff_s·2^k")
    max_backoff_s: float = Field(30.0, ge=0, description="cap on one backoff, and on a 429's Retry-After")
    cache: bool = Field(True, description="reuse replies cached on disk for identical requests")
    concurrency: int = Field(8, ge=1, description="requests of one batch in flight at once (complete_many); 1: one after another")


@dataclass(frozen=True)
class LLMUsage:
    """What a client has spent: new calls and their tokens and cost; cache hits cost nothing.

    ``cost_usd`` is None when litellm does not know the price of a model that was called. ``retries`` counts attempts
    after a fault, ``failures`` calls that failed after every retry.
    """

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    retries: int = 0
    failures: int = 0

    def __add__(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(
            calls=self.calls + other.calls,
            cache_hits=self.cache_hits + other.cache_hits,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd,
            retries=self.retries + other.retries,
            failures=self.failures + other.failures,
        )


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    per_model: dict[str, int]


class ResponseCache:
    """One JSON file per request; written to a temporary file and renamed, so concurrent processes never see half an entry."""

    def __init__(self, root: Path | None = None):
        self.root = root if root is not None else Path(os.environ.get("HINDSIGHT_LLM_CACHE") or cache_dir() / "llm")

    @staticmethod
    def key(settings: LLMSettings, messages: list[Message]) -> str:
        request = {"model": settings.model, "api_base": settings.api_base, "messages": messages,
                   "temperature": settings.temperature, "max_tokens": settings.max_tokens}
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None when absent or unreadable (a damaged entry is simply fetched again)."""
        try:
            entry = json.loads((self.root / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("text"), str) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.root, prefix=f".{key}.", suffix=".tmp", delete=False, encoding="utf-8") as tmp:
            json.dump(entry, tmp, ensure_ascii=False)
        os.replace(tmp.name, self.root / f"{key}.json")

    def _entries(self) -> list[tuple[Path, str]]:
        out = []
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                model = str(json.loads(path.read_text(encoding="utf-8")).get("model", "?"))
            except (OSError, ValueError, AttributeError):
                model = "?"
            out.append((path, model))
        return out

    def stats(self) -> CacheStats:
        entries = self._entries()
        size = sum(p.stat().st_size for p, _ in entries)
        return CacheStats(entries=len(entries), bytes=size, per_model=dict(Counter(m for _, m in entries).most_common()))

    def clear(self, model: str | None = None) -> tuple[int, int]:
        """Remove every entry (and stray temporary files), or only ``model``'s; returns (entries, bytes) removed."""
        doomed = [p for p, m in self._entries() if model is None or m == model]
        if model is None and self.root.is_dir():
            doomed += list(self.root.glob(".*.tmp"))
        size = 0
        for path in doomed:
            size += path.stat().st_size
            path.unlink(missing_ok=True)
        return sum(p.suffix == ".json" for p in doomed), size


class LLMClient:
    """Chat completions through litellm, with the disk cache, retries and per-client token and cost accounting.

    ``sleep`` and ``rng`` make the backoff testable (defaults: ``time.sleep`` and an unseeded generator).
    """

    def __init__(self, settings: LLMSettings, cache: ResponseCache | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.settings = settings
        self.cache = cache if cache is not None else ResponseCache()
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()
        self._usage = LLMUsage()
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """The model and its endpoint, as error messages name them."""
        return f"{self.settings.model} at {self.settings.api_base or 'the provider default URL'}"

    def complete(self, messages: list[Message]) -> str:
        s = self.settings
        key = ResponseCache.key(s, messages)
        if s.cache and (hit := self.cache.get(key)) is not None:
            self._count(cache_hit=True)
            return hit["text"]
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        response, text = self._call(litellm, messages)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            cost: float | None = float(litellm.completion_cost(completion_response=response))
        except Exception:  # litellm raises assorted errors for models it has no price for
            cost = None
        self._count(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost)
        if s.cache:
            self.cache.put(key, {"model": s.model, "api_base": s.api_base, "messages": messages, "temperature": s.temperature,
                                 "max_tokens": s.max_tokens, "text": text, "prompt_tokens": prompt_tokens,
                                 "completion_tokens": completion_tokens, "cost_usd": cost})
        return text

    def complete_many(self, batch: Sequence[list[Message]], *, return_exceptions: bool = False) -> list[Any]:
        """``complete`` of each request, at most ``settings.concurrency`` in flight, results in input order.

        Same texts, cache entries and usage counts as the calls made one after another: a request repeated in the
        batch is sent once, its repeats counted as cache hits (each is sent when the cache is off). An error raises the
        first failing request's exception (in input order), as the sequential loop would; requests after it that have
        not started are not sent. ``return_exceptions``: every request is made and a failed one's exception stands in
        its place (for callers that record failures per request, like the LLM simulator).
        """
        requests = [list(m) for m in batch]
        if not requests:
            return []
        keys = [ResponseCache.key(self.settings, m) for m in requests]
        results: list[Any] = [None] * len(requests)
        pending = list(range(len(requests)))
        while pending:  # waves: the first request of each key, then repeats of keys whose first request failed
            first: dict[str, int] = {}
            if self.settings.cache:
                for i in pending:
                    first.setdefault(keys[i], i)
                wave = sorted(first.values())
            else:
                wave = pending
            outcomes = self._run(requests, wave, stop_early=not return_exceptions)
            for i, outcome in outcomes.items():
                results[i] = outcome
            failed = [i for i in wave if isinstance(outcomes.get(i), BaseException)]
            if failed and not return_exceptions:
                raise outcomes[failed[0]]
            rest = []
            for i in pending:
                if i in outcomes:
                    continue
                origin = first.get(keys[i])
                if origin is not None and not isinstance(results[origin], BaseException):
                    self._count(cache_hit=True)  # what complete() would have read from the cache the origin filled
                    results[i] = results[origin]
                else:
                    rest.append(i)
            pending = rest
        return results

    def _run(self, requests: list[list[Message]], indices: list[int], *, stop_early: bool) -> dict[int, Any]:
        """``complete`` of ``requests[i]`` for each i in ``indices`` (distinct requests) on the pool: {i: text or exception}.
        ``stop_early``: once a request fails, requests after it that have not started are cancelled (left out)."""
        workers = min(self.settings.concurrency, len(indices))
        if workers == 1:
            out: dict[int, Any] = {}
            for i in indices:
                try:
                    out[i] = self.complete(requests[i])
                except Exception as exc:
                    out[i] = exc
                    if stop_early:
                        break
            return out
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm  # noqa: F401  (imported once here, not raced for by the workers)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
            futures: dict[Future, int] = {pool.submit(self.complete, requests[i]): i for i in indices}
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_EXCEPTION if stop_early else ALL_COMPLETED)
                failed = [futures[f] for f in done if not f.cancelled() and f.exception() is not None]
                if stop_early and failed:
                    for f in remaining:
                        if futures[f] > min(failed):
                            f.cancel()
        return {i: (f.exception() if f.exception() is not None else f.result()) for f, i in futures.items() if not f.cancelled()}

    def _call(self, litellm, messages: list[Message]) -> tuple[Any, str]:
        """One completion with our retry policy: (response, text), a ProviderError after the last retry, or a UserInputError."""
        import openai

        s = self.settings
        secret = os.environ.get(s.api_key_env) if s.api_key_env else None
        if s.api_key_env and not secret:  # no retry can fix it: say so now, not "the provider may be down" after the retries
            raise UserInputError(f"{self.where}: the environment variable {s.api_key_env} (api_key_env) is not set or empty; "
                                 f"export {s.api_key_env}=YOUR_KEY or give another --…-api-key-env")
        api_key = secret if s.api_key_env else (None if s.api_base is None else "none")
        attempt = 0
        while True:
            try:
                response = litellm.completion(model=s.model, messages=messages, api_base=s.api_base, api_key=api_key, temperature=s.temperature,
                                              max_tokens=s.max_tokens, timeout=s.timeout_s, num_retries=0, max_retries=0)
                choices = getattr(response, "choices", None)
                if not choices:
                    raise EmptyReply("a reply with no choices")
                return response, choices[0].message.content or ""
            except (openai.OpenAIError, EmptyReply) as exc:
                status = getattr(exc, "status_code", None)
                problem = _redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, secret)
                if status in SETTINGS_ERRORS:
                    raise UserInputError(f"{self.where}: HTTP {status} ({problem}); {SETTINGS_ERRORS[status]}") from None
                if attempt == s.retries:
                    self._count(failure=True)
                    raise ProviderError(f"{self.where}: {problem} (after {attempt + 1} attempts; the provider may be down or "
                                        f"overloaded: retry later, or raise retries / timeout_s in the llm settings)") from None
                self._count(retry=True)
                self.sleep(self._backoff(attempt, exc))
                attempt += 1

    def _backoff(self, attempt: int, exc: Exception) -> float:
        """Full jitter: uniform in [0, min(cap, base·2^attempt)]; a Retry-After header (seconds) wins, capped."""
        s = self.settings
        headers = getattr(exc, "litellm_response_headers", None) or {}
        try:
            retry_after = float(headers.get("retry-after"))
        except (TypeError, ValueError):
            retry_after = None
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, s.max_backoff_s)
        return self.rng.uniform(0, min(s.max_backoff_s, s.backoff_s * 2**attempt))

    def _count(self, *, cache_hit: bool = False, retry: bool = False, failure: bool = False, prompt_tokens: int = 0, completion_tokens: int = 0,
               cost: float | None = 0.0) -> None:
        """Add one event: a cache hit, a retry, a failed call, or a completed call with its tokens and cost."""
        with self._lock:
            self._usage += LLMUsage(calls=int(not (cache_hit or retry or failure)), cache_hits=int(cache_hit), prompt_tokens=prompt_tokens,
                                    completion_tokens=completion_tokens, cost_usd=cost, retries=int(retry), failures=int(failure))

    def usage(self) -> LLMUsage:
        """A snapshot of this client's calls, cache hits, new tokens and cost so far."""
        return self._usage


def _redact(text: str, secret: str | None) -> str:
    """``text`` with the API key masked (providers sometimes echo it in error messages)."""
    return text.replace(secret, "***") if secret else text


def check_backend(settings, role: str, *, model_flag: str, base_flag: str):
    """A simulator's or judge's settings name what their kind needs: llm settings for 'llm', a model for 'local'."""
    if settings.kind == "llm" and settings.llm is None:
        raise ValueError(f"{role} kind 'llm' needs llm settings ({model_flag}, and {base_flag} for a local server)")
    if settings.kind == "local" and not settings.model:
        raise ValueError(f"{role} kind 'local' needs a model ({model_flag})")
    return settings
