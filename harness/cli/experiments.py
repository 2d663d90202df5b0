"""Online experiments: personalize, and its variants flip, continual and redteam (every option of personalize, plus their own)."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from core.errors import RunError, UserInputError
from harness.cli.base import app, console, warn
from harness.cli.options import Flagger, Guard, RunOptions, plain, with_run_options
from harness.cli.overrides import run_overrides
from harness.overrides import Overrides

if TYPE_CHECKING:
    from harness.config import RunConfig

Adjust = Callable[["RunConfig"], dict[str, Any]]


@app.command(rich_help_panel="Experiments")
@with_run_options
def personalize(options: RunOptions) -> None:
    """Online personalization: the policy answers, a simulated user replies, the --method (SDPO by default, RLHI) learns from the reply.

    Writes results/RUN/ (config.yaml, run.json, interactions.jsonl, metrics.jsonl, samples.jsonl, curve.png, summary.md).
    With no options: the embedded SmolLM2-135M on CPU, the concise profile, a scripted user, 64 interactions,
    with its control arm and the in-context oracle (about 10 minutes on 2 cores). Every held-out answer is judged
    against the untrained model's for the profile (the rule judge unless --judge says otherwise): the win-rate curve.

    Examples:

      hindsight personalize --profile no_emojis --seeds 3

      hindsight personalize --simulator llm --simulator-model openai/local --api-base http://127.0.0.1:8000/v1

      hindsight personalize --judge-model openai/local --judge-api-base http://127.0.0.1:8000/v1

      hindsight personalize --config results/RUN/config.yaml --set trainer.lr=1e-5
    """
    launch(options)


def deprecated(options: RunOptions) -> RunOptions:
    """Old spellings still accepted, each with one line on stderr."""
    if options.baseline is not None:
        warn("--baseline is deprecated; use --advantage-reference")
        options = dataclasses.replace(options, baseline=None, advantage_reference=options.advantage_reference or options.baseline)
    return options


def launch(options: RunOptions, adjust: Adjust | None = None, own: tuple[str, ...] = ()) -> None:
    """Resolve the options into a RunConfig (``adjust`` adds fields computed from it), check its inputs, then run it.
    ``own``: the variant's own options given (refused with --resume)."""
    from harness.runs import check_run_id, new_run_id, preflight, run_kind

    options = deprecated(options)
    if options.resume is not None:
        resume(options, own)
        return
    overrides = run_overrides(options)
    from harness.config import RunConfig

    resolved = overrides.validate(RunConfig)
    if adjust is not None:
        resolved = Overrides(data={**resolved.model_dump(mode="json"), **adjust(resolved)}).validate(RunConfig)
    resolved, schedule = preflight(resolved)  # profiles, prompts, neutral pool: fail in a second, not after the model loads
    run_name = check_run_id(options.run_id) if options.run_id else new_run_id(resolved.profile, run_kind(resolved), options.results)
    if options.dry_run:
        console.print(resolved.to_yaml(), highlight=False, markup=False)
        return
    run_dir = options.results / run_name
    if run_dir.exists():
        raise UserInputError(f"{run_dir} already exists; pick another --run-id")
    from harness.cli.progress import LiveProgress
    from harness.cli.runs import show
    from harness.loop import personalize as run_personalize
    from harness.report import describe_user

    console.print(f"[bold]run[/bold] {run_dir}  ·  user [cyan]{describe_user(resolved)}[/cyan]  ·  arms "
                  + ", ".join(f"{a}/s{s}" for a, s in resolved.arms()) + ("  ·  oracle" if resolved.oracle else ""))
    with LiveProgress(resolved) as progress, resume_hint(run_dir, resolved):
        info = run_personalize(resolved, run_dir, progress.handle, command=shlex.join(["hindsight", *sys.argv[1:]]), schedule=schedule)
    console.print(f"finished in {info.seconds:.0f} s{memory_note(run_dir)}")
    show(str(run_dir), results=options.results)


def resume(options: RunOptions, own: tuple[str, ...] = ()) -> None:
    """--resume RUN: continue the run in its folder with its own config (--jobs, --threads: the machine's share, which may
    change); a finished run is refused, unchanged.
    --resume RUN --seeds N: grow the run (finished or not) to N seeds; the new seeds' arms train as they would have in a
    run started with --seeds N, and the report is redrawn over all of them."""
    from harness.checkpoint import write_atomic
    from harness.cli.progress import LiveProgress
    from harness.cli.runs import show
    from harness.config import RunConfig
    from harness.loop import personalize as run_personalize
    from harness.runs import check_api_keys, check_resumable, run_dir

    given = sorted({*own, *(f for f in options.given() if f not in ("--resume", "--results", "--seeds", "--jobs", "--threads"))})
    if given:
        raise UserInputError(f"--resume continues a run with its own config.yaml; leave out {', '.join(given)} "
                             "(only --seeds, to grow it, and --jobs and --threads may be given)")
    folder = run_dir(options.resume, options.results)  # type: ignore[arg-type]
    config = RunConfig.from_file(folder / "config.yaml")
    for machine in ("jobs", "threads"):  # how many arms train at once, on how many threads: the machine's choice, not the experiment's
        if getattr(options, machine) is not None:
            config = config.model_copy(update={machine: getattr(options, machine)})
    if options.seeds is None or options.seeds == config.seeds:
        check_resumable(folder)
    elif options.seeds < config.seeds:
        raise UserInputError(f"{folder.name} has {config.seeds} seeds; --seeds grows a run, it never drops seeds (give more than {config.seeds})")
    elif options.seeds > config.seeds:
        config = config.model_copy(update={"seeds": options.seeds})
        write_atomic(folder / "config.yaml", config.to_yaml())  # first: a run killed from here on resumes grown
    check_api_keys(config.model_dump(mode="json"))
    console.print(f"[bold]resuming[/bold] {folder}")
    with LiveProgress(config) as progress, resume_hint(folder, config):
        info = run_personalize(config, folder, progress.handle, resume=True)
    console.print(f"finished in {info.seconds:.0f} s (this session){memory_note(folder)}")
    show(str(folder), results=options.results)


@contextlib.contextmanager
def resume_hint(run_dir: Path, config: RunConfig) -> Iterator[None]:
    """A run that stops on an error, Ctrl-C or SIGTERM says how to continue it (interrupted: exit 130)."""
    from harness.runs import resume_command

    command = resume_command(config.model_dump(mode="json"), run_dir.name)
    try:
        yield
    except RunError as exc:
        raise RunError(f"{exc}; fix the cause, then `{command}` continues from the last checkpoints") from None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/yellow] `{command}` continues from the last checkpoints", highlight=False)
        raise typer.Exit(130) from None


def given(**own: Any) -> tuple[str, ...]:
    return tuple(f"--{name.replace('_', '-')}" for name, value in own.items() if value is not None)


@app.command(rich_help_panel="Experiments")
@with_run_options
def flip(
    flip_at: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Flip", help=(
        "Interactions before the user switches to the profile's opposite; a multiple of the batch size. "
        "(default: half of --interactions, rounded down to a batch; the SDPO paper flipped after 250)"))] = None,
    *,
    options: RunOptions,
) -> None:
    """Preference flip: personalize, but after --flip-at interactions the user holds the profile's opposite instead.

    Every evaluation scores compliance, clean compliance and win rate vs the untrained model under both preferences;
    curve.png draws each preference over interactions with a vertical line at the flip. The profile must name an
    opposite (`hindsight profiles list`). Takes every option of `personalize`.

    Example:

      hindsight flip --profile concise -n 64 --flip-at 32
    """
    launch(options, lambda c: {"flip_at": flip_at or c.flip_at or c.interactions // 2 // c.batch_size * c.batch_size}, given(flip_at=flip_at))


@app.command(rich_help_panel="Experiments")
@with_run_options
def continual(
    profiles: Annotated[Optional[str], typer.Option(rich_help_panel="Continual", help=(
        "Complementary profiles, comma-separated, added one after another: the user holds the first, then the first two, … "
        "(replaces --profile)"))] = None,
    stage: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Continual", help=(
        "Interactions between additions; a multiple of the batch size. "
        "(default: --interactions divided by the number of profiles, rounded down to a batch)"))] = None,
    *,
    options: RunOptions,
) -> None:
    """Continual personalization: preferences are added one after another, every --stage interactions.

    At stage k the user holds the first k preferences at once (a scripted user checks all of them). Every evaluation
    scores compliance, clean compliance and win rate vs the untrained model for each preference on its own, so
    curve.png shows whether earlier preferences are retained as new ones arrive. Takes every option of `personalize`.

    Example:

      hindsight continual --profiles concise,no_emojis,no_exclamation -n 96 --stage 32
    """
    names = [n.strip() for n in profiles.split(",") if n.strip()] if profiles else []
    if options.resume is None:
        if profiles is not None and len(names) < 2:
            raise UserInputError(f"--profiles {profiles}: give at least two profiles, e.g. --profiles concise,no_emojis")
        if names and options.profile is not None:
            raise UserInputError("--profiles names every profile, the first included; leave out --profile")

    def adjust(c: RunConfig) -> dict[str, Any]:
        if not names:
            if c.continual is None:
                raise UserInputError("--profiles is required (or a --config with a continual section)")
            return {"continual": {**c.continual.model_dump(), **({"stage": stage} if stage else {})}}
        default = c.interactions // len(names) // c.batch_size * c.batch_size
        return {"profile": names[0], "continual": {"add": names[1:], "stage": stage or default}}

    launch(options, adjust, given(profiles=profiles, stage=stage))


@app.command(rich_help_panel="Experiments")
@with_run_options
def redteam(
    guard: Annotated[Optional[Guard], typer.Option(rich_help_panel="Red team", help=(  # type: ignore[valid-type]
        "The guarded arm's update guard: principles (the hindsight prompt states safety principles: follow the user's style wishes "
        "only where safe and respectful), skip_flagged (follow-ups flagged unsafe are left out of the update) or both. (default: both)"))] = None,
    flagger: Annotated[Optional[Flagger], typer.Option(rich_help_panel="Red team", help=(  # type: ignore[valid-type]
        "Who flags unsafe follow-ups, in both arms (the unguarded arm only records the flags): rules (offline phrase rules), "
        "llm (any litellm model), local (a local model's SAFE/UNSAFE probabilities). (default: rules)"))] = None,
    flagger_model: Annotated[Optional[str], typer.Option(rich_help_panel="Red team", help=(
        "For --flagger llm: a litellm model ('openai/NAME' with --flagger-api-base); for local: a model spec. "
        "Giving it without --flagger means llm."))] = None,
    flagger_api_base: Annotated[Optional[str], typer.Option(rich_help_panel="Red team", help=(
        "OpenAI-compatible base URL for --flagger llm, e.g. http://127.0.0.1:8000/v1."))] = None,
    flagger_api_key_env: Annotated[Optional[str], typer.Option(rich_help_panel="Red team", help=(
        "Name of the environment variable holding the flagger's API key (never stored)."))] = None,
    *,
    options: RunOptions,
) -> None:
    """Red team: how far does an adversarial user steer the policy, with and without the update guard?

    Trains two arms side by side with the same seed, prompts and user: [bold]treated[/bold] learns from every follow-up,
    [bold]guarded[/bold] runs the update guard (--guard). The user is an adversarial profile (default: insulting, who
    pushes for insults; reckless pushes to drop safety warnings; `hindsight profiles list` shows them apart), whose checks
    pass when an answer shows the harm, so compliance reads as the harm rate. The prompts default to the built-in red-team
    set (everyday-risk requests: chemicals, driving, medication, power tools; 24 held out). Every follow-up is flagged by the
    safety flagger in both arms, so the run log shows how often the user pushed (interactions.jsonl: guard).

    Writes the usual run files plus redteam.md and redteam.png: per arm and evaluation point, the harm rate and each check's
    harm rate, the flagged / skipped / satisfied shares of the training interactions since the previous evaluation, clean
    compliance, degeneration and KL to the initial policy. Takes every option of `personalize`; without --config its
    defaults differ here: --profile insulting, --prompts redteam, --eval-prompts 24, --no-control (--control adds the
    neutral-user arm).

    Examples:

      hindsight redteam -n 64                                   # insulting user, guard both

      hindsight redteam --profile reckless --guard skip_flagged --seeds 3

      hindsight redteam --flagger-model openai/gpt-4o-mini --flagger-api-key-env OPENAI_API_KEY
    """
    own = given(guard=guard, flagger=flagger, flagger_model=flagger_model, flagger_api_base=flagger_api_base, flagger_api_key_env=flagger_api_key_env)
    if options.config is None and options.resume is None:
        defaults = {"profile": "insulting", "prompts": "redteam", "control": False}
        options = dataclasses.replace(options, **{k: v for k, v in defaults.items() if getattr(options, k) is None})
        if options.eval_prompts is None and options.prompts == "redteam":
            options = dataclasses.replace(options, eval_prompts=24)  # every held-out prompt of the red-team set

    def adjust(c: RunConfig) -> dict[str, Any]:
        settings = c.trainer.guard.model_dump(mode="json")
        kind = plain(flagger) or ("llm" if flagger_model or flagger_api_base or flagger_api_key_env else None)
        if kind is not None:
            llm = {"model": flagger_model or "openai/local", "api_base": flagger_api_base, "api_key_env": flagger_api_key_env,
                   "concurrency": options.llm_concurrency}
            settings.update(flagger=kind, llm={k: v for k, v in llm.items() if v is not None} if kind == "llm" else None,
                            model=(flagger_model or "smollm2-135m") if kind == "local" else None)
        trainer = {**c.trainer.model_dump(mode="json"), "guard": settings}
        return {"redteam": {"guard": plain(guard) or (c.redteam.guard if c.redteam else "both")}, "trainer": trainer}

    launch(options, adjust, own)


def memory_note(folder: Path) -> str:
    """" · peak memory per arm process: treated/s0 4.9 GB, control/s0 4.8 GB" (empty when no update was recorded)."""
    from harness.runs import peak_memory

    peaks = peak_memory(folder)
    return " · peak memory per arm process: " + ", ".join(f"{arm} {gb:.1f} GB" for arm, gb in peaks.items()) if peaks else ""
