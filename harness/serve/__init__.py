"""`hindsight serve`: a policy behind the OpenAI chat-completions API, and with ``--learn`` a server that learns from its users.

- protocol: request validation, OpenAI-shaped errors, response objects
- batching: the model thread (dynamic batches, streaming, cancellation, per-user adapters in one batch)
- app: the FastAPI routes; routes: the learning and admin routes; keys: API keys and rate limits
- learn: per-user LoRA adapters trained by SDPO from a write-ahead journal of interactions
- server: uvicorn on a thread or in the foreground

Needs the ``serve`` extra (fastapi, uvicorn, sse-starlette), imported only when a server is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.policy import Policy
    from harness.serve.server import ServerThread


def serve_policy(policy: Policy, name: str, **options) -> ServerThread:
    """Serve ``policy`` as ``name`` on 127.0.0.1 (a free port) in a background thread, started; ``options`` go to make_service."""
    from harness.serve.server import ServerThread, make_service

    return ServerThread(make_service(policy, name, **options)).start()
