"""The learning routes of `hindsight serve --learn`: a user's own adapter, and the admin routes (admin key only).

``GET /v1/learning`` (a user key): the caller's interactions journaled and applied, updates, KL to the base model
and the last update's per-token advantages. ``GET /admin/users``: every user's counts and KL. ``POST
/admin/users/{id}/reset``: a fresh adapter. ``GET /admin/users/{id}/adapter``: the adapter as a zip (peft format).
A user key can reach only its own user's adapter; no route takes a key or user id that is not the caller's own,
except the admin routes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from harness.serve.keys import USER_ID
from harness.serve.protocol import APIError
from harness.serve.service import Service, caller_of


def add_learning_routes(app: FastAPI, service: Service) -> None:
    learner = service.learner
    assert learner is not None

    def known(user: str) -> str:
        if not USER_ID.match(user) or user not in (service.keys.user_ids if service.keys else set()) | set(learner.users()):
            raise APIError(404, f"no user {user[:64]!r}", param="user", code="user_not_found")
        return user

    @app.get("/v1/learning")
    async def own(request: Request) -> dict[str, Any]:
        caller = caller_of(service, request)
        if caller.user is None:
            raise APIError(403, "this route needs a user's key (it shows that user's adapter)", type="permission_error", code="user_only")
        return learner.stats(caller.user)

    @app.get("/admin/users")
    async def users(request: Request) -> dict[str, Any]:
        caller_of(service, request, admin=True)
        ids = sorted(set(learner.users()) | (service.keys.user_ids if service.keys else set()))
        return {"object": "list", "data": [learner.stats(u) for u in ids]}

    @app.post("/admin/users/{user}/reset")
    async def reset(user: str, request: Request) -> dict[str, Any]:
        caller_of(service, request, admin=True)
        known(user)
        return await asyncio.wrap_future(service.batcher.call(lambda: learner.reset(user)))

    @app.get("/admin/users/{user}/adapter")
    async def export(user: str, request: Request) -> Response:
        caller_of(service, request, admin=True)
        known(user)
        if learner.adapter(user) == user:
            data = await asyncio.wrap_future(service.batcher.call(lambda: learner.export(user)))
        else:
            raise APIError(404, f"user {user!r} has no adapter yet (no update so far)", param="user", code="adapter_not_found")
        return Response(data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{user}-adapter.zip"'})
