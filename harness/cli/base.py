"""The `hindsight` app, its consoles and the one-line error handling every command shares."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from core.errors import UserInputError, one_line

app = typer.Typer(
    help="Teach language models from their users' follow-up messages, and measure whether it worked.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
STATE = {"debug": False}
RESULTS = Path("results")


def reflow(doc: str) -> str:
    """A docstring as --help shows it: the lines of a paragraph joined, so that the terminal wraps them (rich keeps every line
    break); indented lines (examples) and list items (``- ``) keep theirs."""
    out: list[str] = []
    for line in doc.splitlines():
        joins = out and out[-1] and line and not line[0].isspace() and not out[-1][0].isspace() and not line.startswith(("- ", "* "))
        if joins:
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


def reflow_help(typer_app: typer.Typer) -> None:
    """Reflow the help of every command of ``typer_app`` and of its command groups (see ``reflow``)."""
    import inspect

    for command in typer_app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow(inspect.getdoc(command.callback) or "")
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def _version(value: bool) -> None:
    if value:
        from harness import __version__

        typer.echo(f"hindsight {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    STATE["debug"] = debug


def validation_errors(exc: ValidationError) -> str:
    """Every error of a pydantic ValidationError on one line: 'field: message; field: message'."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        parts.append(f"{field}: {error['msg']}" if field else error["msg"])
    return "; ".join(parts)


def fail(message: str, exc: BaseException, code: int = 2) -> None:
    if STATE["debug"]:
        raise exc
    err.print(f"[bold red]error:[/bold red] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    sys.exit(code)


def warn(message: str) -> None:
    """One line on stderr (deprecations, runs left out), never on stdout."""
    err.print(f"[yellow]warning:[/yellow] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def run_app() -> None:
    """Run ``app`` with one-line errors (exit 2) for bad input, tracebacks only with --debug.

    Usage errors (unknown options, a value that is not one of an option's choices) are one line too, exit 2. A run that
    cannot go on (RunError: a provider still failing, the failure budget spent) is one line, exit 1.
    """
    from core.errors import RunError

    try:
        from typer._click import exceptions as click  # typer vendors click (0.2x)
    except ImportError:  # older typer: click itself
        from click import exceptions as click  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:  # `hindsight data`: the group's help, as click prints it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        fail(exc.format_message().replace("Value error, ", "").rstrip(".") + where, exc, code=exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc, code=exc.exit_code)
    except typer.Abort as exc:
        fail("aborted", exc, code=1)
    except UserInputError as exc:
        fail(exc.render(), exc)
    except ValidationError as exc:
        fail(validation_errors(exc), exc)
    except RunError as exc:
        fail(str(exc), exc, code=1)
    if isinstance(code, int) and code:  # typer.Exit(1) (regress), 130 on Ctrl-C: returned, not raised, outside standalone mode
        sys.exit(code)
