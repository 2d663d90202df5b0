"""Profiles: list, show and validate the simulated users' preference files, and score how hard their follow-ups push."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from core.errors import UserInputError
from harness.cli.base import RESULTS, app, console
from harness.cli.options import Results

profiles_app = typer.Typer(help="List, show and validate user profiles (one YAML file each), and score how hard their follow-ups push (wording).",
                           no_args_is_help=True)
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


@profiles_app.command("wording")
def profiles_wording(
    names: Annotated[Optional[list[str]], typer.Argument(help="Profile names or paths (default: the profiles of --run).", show_default=False)] = None,
    run: Annotated[Optional[str], typer.Option("--run", help=(
        "Score the answers of this run's treated arm, or of each cell of this sweep (its first --answers interactions), instead of "
        "fresh answers of the untrained model."))] = None,
    answers: Annotated[int, typer.Option("--answers", min=1, help="Answers per profile.")] = 8,
    trainer: Annotated[Optional[list[str]], typer.Option("--set", help=(
        "An SDPO trainer setting, KEY=VALUE (repeatable), e.g. cut_eos=true or advantage_reference=plain (`hindsight personalize --help` "
        "lists trainer.*)."))] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write every line's numbers as JSON here.")] = None,
    results: Results = RESULTS,
) -> None:
    """How hard each follow-up line of a profile pushes the answers it is sent to: the SDPO advantage A_t of the answer's
    tokens (mean over the answer) and of its end-of-turn token, averaged over answers, scored with the trainer's own code
    under the default trainer settings (nothing is trained).

    Complaints are scored on the answers that fail their check, satisfied replies on the answers that pass every check (all
    answers when none does). A complaint whose mean A_t is near 0 barely moves the policy however often the user sends it;
    a negative end-of-turn A_t under "too long" pushes the answer to go on, not to stop. Without --run the answers are the
    untrained model's, sampled as a run samples them (seed 0, its first training prompts, the training token budget).

    Examples:

      hindsight profiles wording concise                              # before writing a run: does each complaint push?

      hindsight profiles wording my_profiles/terse.yaml --answers 16

      hindsight profiles wording --run all_profiles --out wording.json  # every profile of a sweep, on the answers its users saw

      hindsight profiles wording concise --set cut_eos=true           # answers cut at the token cap get an end-of-turn to score
    """
    import json
    from dataclasses import asdict

    from core.policy import Policy, PolicySettings
    from core.runtime import quiet_libraries
    from harness.signals import SIGNALS
    from harness.wording import Answer, score_wordings, spread
    from simulators.neutral import load_pool
    from simulators.profile import load_profile

    sources = _wording_sources(run, results) if run is not None else {}
    chosen = names or list(sources)
    if not chosen:
        raise UserInputError("name at least one profile (or give --run RUN: its profiles)")
    profiles = [load_profile(name) for name in chosen]
    for profile in profiles:
        if not profile.checks:
            raise UserInputError(f"profile {profile.name} has no checks, hence no scripted complaints to score")
        if run is not None and profile.name not in sources:
            raise UserInputError(f"{run} has no run of profile {profile.name} (it has: {', '.join(sorted(sources))})")
    quiet_libraries()
    settings = PolicySettings()
    with console.status("loading the model"):
        policy = Policy.load(settings)
    fresh: list[Answer] = []
    if run is None:
        fresh = _untrained_answers(policy, answers)
    config, pool, table, dump = _trainer_config(trainer or []), load_pool("builtin"), [], {}
    for profile in profiles:
        if run is not None:
            records = [r for folder in sources[profile.name] for r in _treated(folder, SIGNALS)][:answers]
            mine = [Answer(r.prompt, ids or _tokens(policy, r.response, r.finished)) for r, ids in records]
        else:
            mine = fresh
        with console.status(f"{profile.name}: scoring {len(mine)} answers"):
            rows = score_wordings(policy, config, profile, mine, pool, settings.system_prompt)
        dump[profile.name] = [asdict(w) for w in rows]
        table.append((profile.name, spread(rows)))
        if len(profiles) == 1:
            _print_wordings(profile.name, rows)
    if len(profiles) > 1:
        _print_spread(table)
    if out is not None:
        out.write_text(json.dumps(dump, indent=1, ensure_ascii=False), encoding="utf-8")
        console.print(f"wrote {out}", highlight=False)


def _trainer_config(items: list[str]):
    """SDPOConfig from KEY=VALUE items (values read as YAML), errors naming the item."""
    import yaml
    from pydantic import ValidationError

    from core.errors import pydantic_message
    from trainers.sdpo import SDPOConfig

    data = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--set {item!r}: write KEY=VALUE, e.g. --set cut_eos=true")
        data[key.strip().removeprefix("trainer.")] = yaml.safe_load(value)
    try:
        return SDPOConfig.model_validate(data)
    except ValidationError as exc:
        field, message = pydantic_message(exc)
        raise UserInputError(f"--set {field}: {message}") from None


def _wording_sources(run: str, results: Path) -> dict[str, list[Path]]:
    """Profile → the run folders whose treated answers to score: the run itself, or every cell of a sweep."""
    from harness.runs import read_config

    path = Path(run) if Path(run).is_dir() else results / run
    folders = [path] if (path / "config.yaml").is_file() else sorted(p.parent for p in path.glob("runs/*/config.yaml"))
    if not folders:
        raise UserInputError(f"{run}: neither a run folder nor a sweep with cells (looked in {path}); `hindsight runs` lists runs")
    out: dict[str, list[Path]] = {}
    for folder in folders:
        out.setdefault(str(read_config(folder).get("profile")), []).append(folder)
    return out


def _treated(folder: Path, signals: str):
    """(interaction, token ids or None) of the run's treated arm, in order."""
    from core.records import InteractionRecord, SignalRecord, read_jsonl

    ids = {(s.seed, s.index): tuple(s.ids) for s in read_jsonl(folder / signals, SignalRecord) if s.arm == "treated" and s.ids}
    records = sorted((r for r in read_jsonl(folder / "interactions.jsonl", InteractionRecord) if r.arm == "treated" and not r.failed),
                     key=lambda r: (r.seed, r.index))
    return [(r, ids.get((r.seed, r.index))) for r in records]


def _tokens(policy, text: str, finished: bool) -> tuple[int, ...]:
    """An answer's text tokenized again (a run from before signals.jsonl kept the ids), end-of-turn added when it finished."""
    return tuple(policy.tokenizer.encode(text, add_special_tokens=False)) + ((policy.eos_token_id,) if finished else ())


def _untrained_answers(policy, count: int):
    """The untrained model's sampled answers to the first ``count`` training prompts of seed 0, as a run samples them."""
    import torch

    from core.engine import HFEngine, SamplingParams
    from core.prompts import PromptSettings, load_prompts
    from harness.config import RunConfig
    from harness.wording import Answer

    config = RunConfig().with_budgets(0)
    prompts = load_prompts(PromptSettings())
    chosen = [prompts.draw(i, 0) for i in range(count)]
    torch.manual_seed(0)
    params = SamplingParams(config.generation.max_new_tokens, config.generation.temperature, config.generation.top_p)
    with console.status(f"sampling {count} answers of the untrained model"):
        out = HFEngine(policy).generate([policy.encode_chat(policy.messages(p)) for p in chosen], params)
    return [Answer(p, g.token_ids) for p, g in zip(chosen, out)]


def _print_wordings(name: str, rows) -> None:
    table = Table(title=f"{name}: A_t per follow-up line (mean over answers)", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("follow-up", "answers", "mean A_t", "end-of-turn A_t"):
        table.add_column(column, justify="left" if column == "follow-up" else "right", overflow="fold")
    for kind in dict.fromkeys(w.kind for w in rows):
        on_all = any(w.on_all for w in rows if w.kind == kind)
        table.add_row(f"[bold]{escape(kind)}[/bold]" + (" (scored on every answer: none passed)" if on_all else ""))
        for w in (w for w in rows if w.kind == kind):
            table.add_row(f"  {escape(w.text)}", str(w.answers), f"{w.mean:+.3f}", "–" if w.eos is None else f"{w.eos:+.3f}")
    console.print(table)


def _print_spread(table) -> None:
    out = Table(title="mean A_t per answer, by follow-up line (complaints: weakest · mean · strongest)", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("profile", "weakest", "mean", "strongest", "end-of-turn (complaints)", "satisfied"):
        out.add_column(column, justify="left" if column == "profile" else "right")
    num = lambda v: "–" if v is None else f"{v:+.3f}"  # noqa: E731
    for name, s in table:
        out.add_row(name, *(num(s[k]) for k in ("complaint_weakest", "complaint_mean", "complaint_strongest", "complaint_eos", "satisfied_mean")))
    console.print(out)
