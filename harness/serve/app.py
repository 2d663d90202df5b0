"""The HTTP app (FastAPI): the OpenAI chat-completions and models API, and with ``--learn`` the learning and admin API.

Routes: ``POST /v1/chat/completions`` (JSON, or SSE with ``stream``), ``GET /v1/models``, ``GET /v1/models/{id}``,
``GET /health``; with a learner, ``GET /v1/learning`` (the caller's own adapter: interactions, updates, KL, the last
update's per-token advantages), ``GET /admin/users``, ``POST /admin/users/{id}/reset`` and
``GET /admin/users/{id}/adapter`` (a zip of the adapter in peft's format). Every error is OpenAI-shaped
(``{"error": {"message", "type", "param", "code"}}``): 400 invalid field, 401 missing or unknown key, 403 a key used
for another user or a user key on an admin route, 404 unknown route or model, 405 wrong method, 413 body over the
limit, 429 over the user's rate, 503 queue full. A request is checked in that order: key, rate, size, fields, model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from harness.serve import protocol
from harness.serve.batching import BASE, Done, Job
from harness.serve.protocol import APIError, ChatRequest
from harness.serve.service import Caller, Service, caller_of

log = logging.getLogger("hindsight.serve")


def build_app(service: Service) -> FastAPI:
    app = FastAPI(title="hindsight", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return _error(exc, request.method)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            error = APIError(405, f"method {request.method} not allowed on {request.url.path} (allowed: {allowed})", code="method_not_allowed",
                             headers={"Allow": allowed})
        elif exc.status_code == 404:
            error = APIError(404, f"Invalid URL ({request.method} {request.url.path}): use POST /v1/chat/completions or GET /v1/models",
                             code="unknown_url")
        else:
            error = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return _error(error, request.method)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _error(APIError(500, "the server failed on this request; it goes on serving", type="server_error"), request.method)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": service.batcher.pending()}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models(request: Request) -> dict[str, Any]:
        caller_of(service, request)
        return {"object": "list", "data": [protocol.model_object(service.model_name, service.created)]}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"])
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        caller_of(service, request)
        _known_model(service, model_id, param=None)
        return protocol.model_object(service.model_name, service.created)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        caller = caller_of(service, request)
        body = await _body(request, service.limits.max_body)
        chat = protocol.parse_chat(protocol.parse_json(body))
        _known_model(service, chat.model, param="model")
        if chat.user is not None and caller.user is not None and chat.user != caller.user:
            raise APIError(403, "'user' names another user than this API key's", type="permission_error", param="user", code="user_mismatch")
        return await _complete(service, request, chat, caller)

    if service.learner is not None:
        from harness.serve.routes import add_learning_routes

        add_learning_routes(app, service)
    return app


def _error(exc: APIError, method: str) -> Response:
    if method == "HEAD":
        return Response(status_code=exc.status, headers=exc.headers)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _known_model(service: Service, name: str, param: str | None) -> None:
    if name != service.model_name:
        raise APIError(404, f"The model `{name[:100]}` does not exist; this server serves `{service.model_name}`", param=param,
                       code="model_not_found")


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or received)."""
    declared = request.headers.get("content-length")
    too_big = APIError(413, f"the request body is larger than this server's limit of {limit} bytes", code="request_too_large",
                       headers={"Connection": "close"})
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away, or its body's framing broke (answered 400 by the protocol)
        raise APIError(400, "the request body ended before it was complete", code="incomplete_body") from None
    return b"".join(chunks)


async def _complete(service: Service, request: Request, chat: ChatRequest, caller: Caller) -> Response:
    policy, learner = service.policy, service.learner
    try:
        context = policy.encode_chat(chat.messages)
    except Exception as exc:  # a template that refuses this conversation (e.g. roles out of order)
        raise protocol.invalid("messages", f"the chat template cannot render these messages: {str(exc)[:200]}") from None
    left = service.context - len(context)
    if left < 1:
        raise protocol.invalid("messages", f"This model's maximum context length is {service.context} tokens; your messages take {len(context)}",
                               code="context_length_exceeded")
    cap = min(left, service.limits.max_tokens)
    if chat.max_tokens is not None and chat.max_tokens > cap:
        if left <= service.limits.max_tokens:
            raise protocol.invalid("max_tokens", f"'max_tokens' is {chat.max_tokens}, more than the context left after your messages ({left} of "
                                   f"{service.context} tokens)", code="context_length_exceeded")
        raise protocol.invalid("max_tokens", f"'max_tokens' is {chat.max_tokens}, more than this server's limit of {service.limits.max_tokens}")
    adapter = BASE
    if learner is not None and caller.user is not None:
        await asyncio.to_thread(learner.observe, caller.user, chat.messages)  # journaled (fsync) before the answer: write-ahead
        adapter = learner.adapter(caller.user)
    loop, events = asyncio.get_running_loop(), asyncio.Queue()

    def emit(event: tuple[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the server's loop is gone
            pass

    job = Job(context=context, max_tokens=chat.max_tokens or min(service.limits.default_tokens, cap), emit=emit, temperature=chat.temperature,
              top_p=chat.top_p, seed=chat.seed, stops=chat.stop, adapter=adapter, stream=chat.stream)
    if not service.batcher.submit(job):
        raise APIError(503, "the server is overloaded (its queue is full); retry shortly", type="server_error", code="overloaded")

    def finished(done: Done) -> None:
        service.completions += 1
        service.prompt_tokens += len(context)
        service.completion_tokens += len(done.tokens)
        if learner is not None and caller.user is not None:
            learner.remember(caller.user, done.text, done.tokens)

    cid = protocol.completion_id()
    if chat.stream:
        from sse_starlette.sse import EventSourceResponse

        return EventSourceResponse(_stream(service, chat, job, events, cid, len(context), finished), ping=15, sep="\n")
    while True:
        try:
            kind, value = await asyncio.wait_for(events.get(), timeout=0.25)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancelled.set()  # the decode drops this row at its next step
                return Response(status_code=499)
            continue
        if kind == "done":
            finished(value)
            return JSONResponse(protocol.completion(cid, service.model_name, value.text, value.finish_reason, len(context), len(value.tokens)))
        if kind == "error":
            raise APIError(500, value, type="server_error")


async def _stream(service: Service, chat: ChatRequest, job: Job, events: asyncio.Queue, cid: str, prompt_tokens: int, finished) -> AsyncIterator[dict]:
    """The SSE events of a streamed completion; a client that goes away cancels the decode of its row."""
    created, model = int(time.time()), service.model_name
    done = False
    try:
        yield {"data": json.dumps(protocol.chunk(cid, model, created, {"role": "assistant", "content": ""}))}
        while True:
            kind, value = await events.get()
            if kind == "delta":
                yield {"data": json.dumps(protocol.chunk(cid, model, created, {"content": value}))}
            elif kind == "error":
                done = True
                yield {"data": json.dumps(protocol.error_body(value, type="server_error"))}
                return
            else:
                done = True
                finished(value)
                yield {"data": json.dumps(protocol.chunk(cid, model, created, {}, value.finish_reason))}
                if chat.include_usage:
                    yield {"data": json.dumps(protocol.chunk(cid, model, created, None, usage_tokens=(prompt_tokens, len(value.tokens))))}
                yield {"data": "[DONE]"}
                return
    finally:
        if not done:
            job.cancelled.set()
