"""Profiles: list, show and validate the simulated users' preference files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from core.errors import UserInputError
from harness.cli.base import app, console

profiles_app = typer.Typer(help="List, show and validate user profiles (one YAML file each).", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


@profiles_app.command("list")
def profiles_list() -> None:
    """Every known profile (first match on the search path wins), with its checks and opposite; adversarial ones (users who
    push toward harm, for `hindsight redteam` only) in a table of their own."""
    from simulators.profile import BUILTIN_DIR, available_profiles, load_profile_file, search_path

    profiles = [(load_profile_file(path), path) for path in available_profiles().values()]
    titles = {False: "profiles (search path: " + ", ".join(str(p) for p in search_path()) + ")",
              True: "adversarial profiles (red-teaming only: `hindsight redteam`; a passing check is the harm)"}
    for adversarial, title in titles.items():
        chosen = [(p, path) for p, path in profiles if p.adversarial == adversarial]
        if not chosen:
            continue
        # fits 80 columns: names whole, checks by their labels (`profiles show` spells them out), a blank line between profiles
        table = Table(title=title, caption=None if adversarial else "`hindsight profiles show NAME`: the checks in full", box=box.SIMPLE_HEAD,
                      show_lines=True, pad_edge=False)
        table.add_column("name (↔ opposite)", no_wrap=True)
        table.add_column("checks", overflow="fold")
        for profile, path in chosen:
            checks = [c.short() for c in profile.checks] or ["– (LLM users only)"]
            if path.parent != BUILTIN_DIR:
                checks.append(f"[dim]{escape(str(path))}[/dim]")
            table.add_row(profile.name + (f"\n↔ {profile.opposite}" if profile.opposite else ""), "\n".join(checks))
        console.print(table)


@profiles_app.command("show")
def profiles_show(name: Annotated[str, typer.Argument(help="Profile name or path.")]) -> None:
    """Print one profile: persona text, checks with their follow-ups, satisfied replies."""
    from simulators.profile import load_profile

    profile = load_profile(name)
    console.print(f"[bold]{profile.name}[/bold]" + (f"  (opposite: {profile.opposite})" if profile.opposite else "")
                  + ("  [red]adversarial: red-teaming only (`hindsight redteam`)[/red]" if profile.adversarial else ""))
    console.print(profile.description, highlight=False)
    for check in profile.checks:
        console.print(f"\n[cyan]{escape(check.describe())}[/cyan]")
        if getattr(check, "pattern", None) and check.label:
            console.print(f"  {check.kind} {check.pattern}", highlight=False, markup=False)
        for line in check.followup:
            console.print(f"  • {line}", highlight=False)
    console.print("\n[green]satisfied[/green]")
    for line in profile.satisfied:
        console.print(f"  • {line}", highlight=False)


@profiles_app.command("validate")
def profiles_validate(paths: Annotated[list[Path], typer.Argument(help="Profile YAML files.")]) -> None:
    """Check profile files: schema, patterns, name = file stem, and that an opposite exists. Exit 2 on the first bad one."""
    from simulators.profile import available_profiles, load_profile_file

    known = available_profiles()
    for path in paths:
        profile = load_profile_file(path)
        if profile.opposite and profile.opposite not in known:
            raise UserInputError(f"opposite '{profile.opposite}' is not a known profile", path=path, field="opposite")
        console.print(f"[green]ok[/green] {path} ({profile.name}, {len(profile.checks)} checks{', adversarial' if profile.adversarial else ''})")
