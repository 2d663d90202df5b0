"""What every route shares: the Service (policy, model thread, keys, learner, limits, counters) and who the caller is."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from core.policy import Policy
from harness.serve.batching import Batcher
from harness.serve.keys import Keys, RateLimiter
from harness.serve.protocol import APIError

if TYPE_CHECKING:
    from harness.serve.learn import Learner


@dataclass
class Limits:
    """What one request may ask for: tokens by default and at most (never past the context left), body bytes."""

    default_tokens: int = 256
    max_tokens: int = 2048
    max_body: int = 1 << 20
    rate_per_minute: float | None = None


@dataclass
class Service:
    """What the handlers share: the policy and its model thread, keys, the learner, limits and counters."""

    policy: Policy
    batcher: Batcher
    model_name: str
    limits: Limits = field(default_factory=Limits)
    keys: Keys | None = None
    learner: Learner | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __post_init__(self) -> None:
        self.context = int(getattr(self.policy.model.config, "max_position_embeddings", 2048))
        self.limiter = RateLimiter(self.limits.rate_per_minute) if self.limits.rate_per_minute else None


@dataclass
class Caller:
    """Who sent a request: a user id (None: no keys, or an admin key) and whether the key is an admin's."""

    user: str | None
    admin: bool = False


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def caller_of(service: Service, request: Request, admin: bool = False) -> Caller:
    """The caller of a request, after its key and rate are checked (401, 403, 429)."""
    keys = service.keys
    if keys is None:
        return Caller(user=None, admin=True)
    key = bearer(request)
    if key is None:
        raise APIError(401, "You didn't provide an API key: send 'Authorization: Bearer KEY'", code="missing_api_key")
    user, is_admin = keys.user_of(key), keys.is_admin(key)
    if user is None and not is_admin:
        raise APIError(401, "Incorrect API key provided", code="invalid_api_key")
    if admin and not is_admin:
        raise APIError(403, "this route needs an admin key", type="permission_error", code="admin_only")
    if service.limiter is not None and not is_admin:
        wait = service.limiter.take(user)
        if wait is not None:
            raise APIError(429, f"Rate limit reached for user {user}: {service.limits.rate_per_minute:g} requests per minute; retry in {wait:.1f} s",
                           type="requests", code="rate_limit_exceeded", headers={"Retry-After": str(max(1, round(wait)))})
    return Caller(user=user, admin=is_admin)
