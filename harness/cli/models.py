"""Models: `models warm` (the conversion cache), `cache` (cached LLM calls) and `serve` (a policy behind an OpenAI-compatible endpoint)."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from harness.cli.base import app, console
from harness.cli.options import Device, DeviceOption, plain

models_app = typer.Typer(help="The embedded models and the conversion cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")
cache_app = typer.Typer(help="The on-disk cache of LLM calls made by simulators and judges.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@models_app.command("warm")
def models_warm(model: Annotated[str, typer.Argument(help="Model spec to resolve (GGUF files are converted once).")] = "smollm2-135m") -> None:
    """Convert a model into the safetensors cache now (the first load of a GGUF takes ~30 s, later ones ~3 s)."""
    from core.models import resolve_model
    from judges.relevance import minilm_path

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
) -> None:
    """Serve a policy as an OpenAI-compatible endpoint (POST /v1/chat/completions, GET /v1/models) until Ctrl-C.

    Use it as an LLM user or judge: --simulator llm --simulator-model openai/NAME --api-base http://HOST:PORT/v1
    """
    from harness.serve import load_server

    server = load_server(model, host, port, plain(device), threads)
    typer.echo(f"serving {model} at {server.url} (model name '{server.model_name}'; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
