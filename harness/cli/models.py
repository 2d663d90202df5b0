"""Models: `models warm` (the conversion cache), `cache` (cached LLM calls) and `serve` (a policy behind an OpenAI-compatible endpoint)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from harness.cli.base import app, console
from harness.cli.options import Device, DeviceOption, GuardMode, plain

models_app = typer.Typer(help="The embedded models and the conversion cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")
cache_app = typer.Typer(help="The on-disk cache of LLM calls made by simulators and judges.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@models_app.command("warm")
def models_warm(model: Annotated[str, typer.Argument(help="Model spec to resolve (GGUF files are converted once).")] = "smollm2-135m") -> None:
    """Convert a model into the safetensors cache now (the first load of a GGUF takes ~30 s, later ones ~3 s)."""
    from core.models import resolve_model
    from core.text import minilm_path

    start = time.perf_counter()
    path = resolve_model(model)
    console.print(f"{model}: {path} ({time.perf_counter() - start:.1f} s)", highlight=False)
    console.print(f"relevance embedder: {minilm_path()}", highlight=False)


@cache_app.command("stats")
def cache_stats() -> None:
    """Entries, size on disk and entries per model."""
    from core.llm_client import ResponseCache

    cache = ResponseCache()
    stats = cache.stats()
    console.print(f"{cache.root}: {stats.entries} entries, {stats.bytes / 1024:.1f} KiB", highlight=False, soft_wrap=True)
    if stats.per_model:
        table = Table()
        table.add_column("model")
        table.add_column("entries", justify="right")
        for model, count in stats.per_model.items():
            table.add_row(model, str(count))
        console.print(table)


@cache_app.command("clear")
def cache_clear(model: Annotated[Optional[str], typer.Option(help="Remove only this model's entries (as `cache stats` names it).")] = None) -> None:
    """Remove cached LLM replies (all, or one model's); the next run calls the LLM again."""
    from core.llm_client import ResponseCache

    cache = ResponseCache()
    entries, size = cache.clear(model)
    what = f"removed {entries} entries ({size / 1024:.1f} KiB)" + (f" of {model}" if model else "")
    console.print(f"{what} from {cache.root}", highlight=False, soft_wrap=True)


@app.command(rich_help_panel="Models")
def serve(
    model: Annotated[str, typer.Option(help="Policy: 'smollm2-135m' (embedded), a .gguf file, a model or checkpoint folder, or a hub id.")] = "smollm2-135m",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (printed).", min=0, max=65535)] = 8000,
    device: DeviceOption = Device("auto"),  # type: ignore[valid-type]
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's own choice).", min=1)] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens one request may ask for (never more than the context left).", min=1,
                                            rich_help_panel="Limits")] = 2048,
    default_tokens: Annotated[int, typer.Option(help="Tokens generated when a request names no max_tokens.", min=1, rich_help_panel="Limits")] = 256,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes (413 above).", min=1024, rich_help_panel="Limits")] = 1 << 20,
    batch: Annotated[int, typer.Option(help="Most requests decoded together in one batch.", min=1, rich_help_panel="Limits")] = 16,
    batch_window: Annotated[float, typer.Option(help="Milliseconds to wait for more requests to join a batch.", min=0,
                                                rich_help_panel="Limits")] = 20.0,
    rate_limit: Annotated[Optional[float], typer.Option(help="Requests per minute per user (429 above); needs --keys.", min=0.01,
                                                        rich_help_panel="Limits")] = None,
    keys: Annotated[Optional[Path], typer.Option(help="YAML keys file: 'keys: {API_KEY: user_id}' and 'admin: KEY'; without it no key is "
                                                 "asked for.", rich_help_panel="Users")] = None,
    learn: Annotated[bool, typer.Option("--learn", help="Learn from each user's follow-ups: a LoRA adapter per user, trained online by SDPO "
                                        "(needs --keys).", rich_help_panel="Users")] = False,
    state: Annotated[Path, typer.Option(help="--learn: folder of the interaction journal and the users' adapters (reloaded on restart).",
                                        rich_help_panel="Users")] = Path("serve-state"),
    learn_batch: Annotated[int, typer.Option(help="--learn: interactions per update of a user's adapter.", min=1, rich_help_panel="Users")] = 4,
    learn_idle: Annotated[float, typer.Option(help="--learn: seconds of a user's silence after which a partial batch is applied.", min=0,
                                              rich_help_panel="Users")] = 5.0,
    lr: Annotated[float, typer.Option(help="--learn: the adapters' learning rate.", min=1e-12, rich_help_panel="Users")] = 2e-4,
    guard: Annotated[GuardMode, typer.Option(  # type: ignore[valid-type]
        help="--learn: the update guard (skip_flagged: follow-ups the safety flagger marks are left out).", rich_help_panel="Users",
    )] = GuardMode("skip_flagged"),
) -> None:
    """Serve a policy as an OpenAI-compatible endpoint until Ctrl-C: chat completions (streaming too) and models.

    Use it as an LLM user or judge: --simulator llm --simulator-model openai/NAME --api-base http://HOST:PORT/v1.
    With --learn --keys FILE each user (an API key) gets a LoRA adapter that learns from their follow-ups; /admin/users
    (admin key) lists them with their KL; `hindsight chat --server URL` talks to it.
    """
    from harness.serve.server import start_server

    server = start_server(model=model, host=host, port=port, device=plain(device), threads=threads, max_tokens=max_tokens,
                          default_tokens=default_tokens, max_body=max_body, batch=batch, window=batch_window / 1000, rate_limit=rate_limit,
                          keys=keys, learn=learn, state=state, learn_batch=learn_batch, learn_idle=learn_idle, lr=lr, guard=plain(guard))
    mode = f"; learning per user into {state}" if learn else ""
    typer.echo(f"serving {model} at {server.url} (model name '{server.service.model_name}'{mode}; Ctrl-C stops)")
    server.wait()
