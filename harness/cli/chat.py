"""`hindsight chat`: talk to a model that learns from what you write (an embedded server, or `hindsight serve --learn`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.text import Text

from core.errors import UserInputError
from harness.cli.base import app, console
from harness.cli.options import Device, DeviceOption, plain

HELP = "/tokens: your last update's answer, tokens coloured by advantage · /stats · /new: a new conversation · /quit"


@app.command(rich_help_panel="Models")
def chat(
    user: Annotated[str, typer.Option(help="Your user id: the adapter that learns from you (with --server: your key's user).")] = "me",
    server: Annotated[Optional[str], typer.Option(help="A `hindsight serve --learn` base URL, e.g. http://127.0.0.1:8000/v1; without it a "
                                                  "server starts in this process.")] = None,
    api_key_env: Annotated[str, typer.Option(help="With --server: the environment variable holding your API key.")] = "HINDSIGHT_API_KEY",
    model: Annotated[str, typer.Option(help="Without --server: the policy (embedded alias, .gguf, folder, hub id).")] = "smollm2-135m",
    state: Annotated[Path, typer.Option(help="Without --server: where your adapter and the journal live (kept between chats).")] = Path("chat-state"),
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.", min=1)] = 128,
    lr: Annotated[float, typer.Option(help="Without --server: the adapter's learning rate.", min=1e-12)] = 2e-4,
    device: DeviceOption = Device("auto"),  # type: ignore[valid-type]
    threads: Annotated[Optional[int], typer.Option(help="torch threads (without --server).", min=1)] = None,
) -> None:
    """Chat with a model that learns from you: every message that follows an answer (a complaint, a correction, thanks)
    updates your own LoRA adapter by SDPO; after each update you see how far it has moved (KL to the base model).

    /tokens colours the tokens of the answer your last update trained on by their advantage (green: your message
    made them likelier; red: less likely). Type /quit (or Ctrl-D) to leave; your adapter is kept.
    """
    from harness.serve.chat import ChatSession, embedded
    from harness.serve.keys import USER_ID

    if not USER_ID.match(user):
        raise UserInputError(f"--user {user!r}: 1-64 letters, digits, '_' or '-'")
    if server is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise UserInputError(f"--server needs your API key in ${api_key_env} (or name another variable with --api-key-env)")
        session = ChatSession(server.rstrip("/"), key, user, _served_model(server, key), max_tokens=max_tokens)
    else:
        console.print(f"starting a learning server for {escape(user)} ({escape(model)}; adapter in {escape(str(state))}) …", highlight=False)
        session = embedded(user, model, state, plain(device), threads, lr, max_tokens)
    console.print(f"chatting as [bold]{escape(user)}[/bold] with {escape(session.model)} at {session.url}\n{HELP}", highlight=False)
    try:
        _loop(session)
    finally:
        session.close()


def _served_model(url: str, key: str) -> str:
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise UserInputError(f"--server {url}: cannot connect ({exc})") from None
    if response.status_code != 200:
        raise UserInputError(f"--server {url}: {response.status_code} {response.json().get('error', {}).get('message', '')}")
    return response.json()["data"][0]["id"]


def _loop(session) -> None:
    while True:
        try:
            text = console.input("[bold cyan]you>[/bold cyan] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/new":
            session.messages.clear()
            console.print("[dim]a new conversation (your adapter stays)[/dim]")
        elif text == "/stats":
            stats = session.stats()
            console.print(f"[dim]{stats['interactions']} interactions, {stats['updates']} updates so far, KL {stats['kl']:.4g}, skipped "
                          f"{stats['skipped'] or 'none'}[/dim]", highlight=False)
        elif text == "/tokens":
            _tokens(session.stats().get("last_update"))
        else:
            _turn(session, text)


def _turn(session, text: str) -> None:
    before = session.stats()
    console.print("[bold green]bot>[/bold green] ", end="")
    for piece in session.send(text):
        console.print(piece, end="", highlight=False, markup=False)
    console.print()
    if len(session.messages) < 4:  # no answer before this message: nothing to learn from yet
        return
    update = session.wait_for_update(before)
    if update.trained:
        plural = "s" if update.updates != 1 else ""
        console.print(f"[dim]learned from your message ({update.followup_type}): adapter KL {update.kl:.4g} "
                      f"({update.kl - update.kl_before:+.4g}), {update.updates} update{plural} · /tokens shows what moved[/dim]", highlight=False)
    elif update.applied:
        console.print(f"[dim]no update: your message reads as {update.followup_type or 'not feedback'} · KL {update.kl:.4g}[/dim]", highlight=False)
    else:
        console.print(f"[dim]journaled; {update.pending} interactions wait for the server's next update[/dim]", highlight=False)


def _tokens(last: dict | None) -> None:
    from harness.serve.chat import advantage_style

    if not last:
        console.print("[dim]no update yet: answer the bot's answer (a complaint, a correction, thanks) to teach it[/dim]")
        return
    values = [v for _, v in last["tokens"]]
    scale = max(abs(v) for v in values) or 1.0
    line = Text()
    for piece, value in last["tokens"]:
        line.append(piece, style=advantage_style(value, scale))
    console.print(f"[dim]your message:[/dim] {escape(last['followup'])}  [dim]({last['followup_type']}; green: likelier now, red: less likely; "
                  f"largest |A| {scale:.3g})[/dim]", highlight=False)
    console.print(line)
    order = sorted(range(len(values)), key=values.__getitem__)
    pieces = [p for p, _ in last["tokens"]]
    down = ", ".join(f"{pieces[i]!r} {values[i]:+.2f}" for i in order[:3])
    up = ", ".join(f"{pieces[i]!r} {values[i]:+.2f}" for i in order[::-1][:3])
    console.print(f"[dim]most pushed down: {escape(down)} · most pushed up: {escape(up)}[/dim]", highlight=False)
