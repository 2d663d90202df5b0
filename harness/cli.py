"""The `hindsight` command line."""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
import yaml
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from core.errors import RunError, UserInputError, one_line, pydantic_message

if TYPE_CHECKING:
    from core.records import WinRate
    from harness.config import JudgeSettings, RunConfig

app = typer.Typer(
    help="Teach language models from their users' follow-up messages, and measure whether it worked.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
profiles_app = typer.Typer(help="List, show and validate user profiles (one YAML file each).", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
console = Console()
err = Console(stderr=True)
STATE = {"debug": False}
RESULTS = Path("results")


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False) -> None:
    STATE["debug"] = debug


def run() -> None:
    """Console-script entry point: one-line errors (exit 2) for bad input, tracebacks only with --debug.

    Usage errors (unknown options, bad values) are click's own, also exit 2. A run that cannot go on (RunError:
    a provider still failing, the failure budget spent) is one line too, exit 1.
    """
    try:
        app()
    except UserInputError as exc:
        _fail(exc.render(), exc)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        _fail(f"{field}: {first['msg']}" if field else first["msg"], exc)
    except RunError as exc:
        _fail(str(exc), exc, code=1)


def _fail(message: str, exc: BaseException, code: int = 2) -> None:
    if STATE["debug"]:
        raise exc
    err.print(f"[bold red]error:[/bold red] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    sys.exit(code)


# ----------------------------------------------------------------------------------------------------------
# personalize
# ----------------------------------------------------------------------------------------------------------
def _set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) or key not in node or node.get(key) is None else node[key]
        if not isinstance(node, dict):
            raise UserInputError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def new_run_id(profile: str, method: str, results: Path) -> str:
    stem = re.sub(r"[^a-z0-9_-]+", "-", Path(profile).stem.lower())
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{method}-{stem}"
    run_id, n = base, 1
    while (results / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def check_run_id(run_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", run_id) or ".." in run_id:
        raise UserInputError(f"--run-id '{run_id}': use letters, digits, '.', '_' and '-' only (it names a folder under results/)")
    return run_id


@app.command(rich_help_panel="Experiments")
def personalize(
    profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="Profile name (`hindsight profiles list`) or path to a profile YAML. (default: concise)", rich_help_panel="What")] = None,
    model: Annotated[Optional[str], typer.Option(help="Policy: 'smollm2-135m' (embedded), a .gguf file, a model folder or a hub id. (default: smollm2-135m)", rich_help_panel="What")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="'builtin', 'redteam' (everyday-risk requests), a JSONL file of {\"prompt\": ...} (optional \"split\": train|heldout), or hf:NAME.", rich_help_panel="What")] = None,
    interactions: Annotated[Optional[int], typer.Option("--interactions", "-n", help="Interactions per arm. (default: 64)", min=1, rich_help_panel="Budget")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Interactions per update. (default: 4)", min=1, rich_help_panel="Budget")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate every K interactions (multiple of batch size). (default: 32)", min=1, rich_help_panel="Budget")] = None,
    eval_prompts: Annotated[Optional[int], typer.Option(help="Held-out prompts per evaluation. (default: 32)", min=1, rich_help_panel="Budget")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Longest training answer in tokens. (default: 96, more for profiles with a word minimum)", min=1, rich_help_panel="Budget")] = None,
    seed: Annotated[Optional[int], typer.Option(help="First seed. (default: 0)", rich_help_panel="Budget")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Repeat with N seeds; curves show means with 95% intervals. (default: 1)", min=1, rich_help_panel="Budget")] = None,
    control: Annotated[Optional[bool], typer.Option("--control/--no-control", help="Also run an identical arm whose user only sends neutral messages: tells learning from the hindsight prompt's own pull. (default: on)", rich_help_panel="Arms")] = None,
    oracle: Annotated[Optional[bool], typer.Option("--oracle/--no-oracle", help="Also evaluate the untrained model with the profile in its system prompt (reference line). (default: on)", rich_help_panel="Arms")] = None,
    neutral_pool: Annotated[Optional[str], typer.Option(help="Messages of the control arm's user and of the neutral baseline: builtin (small talk, acknowledgements), unrelated (unrelated questions) or a text file, one message per line. (default: builtin)", rich_help_panel="Arms")] = None,
    simulator: Annotated[Optional[str], typer.Option(help="Who writes follow-ups: scripted (profile rules, offline), llm (litellm), local (a local model), complain (diagnostic: complains whatever the answer). (default: scripted)", rich_help_panel="User")] = None,
    simulator_model: Annotated[Optional[str], typer.Option(help="For --simulator llm: a litellm model ('openai/NAME' with --api-base); for local: a model spec.", rich_help_panel="User")] = None,
    api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --simulator llm, e.g. http://127.0.0.1:8000/v1.", rich_help_panel="User")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the API key (the key itself is never stored).", rich_help_panel="User")] = None,
    judge: Annotated[Optional[str], typer.Option(help="Who judges each held-out answer against the untrained model's (win rate vs initial): rules (the profile's checks, offline), llm (litellm, both orders), local (a local model's verdict-token probabilities, both orders), none. (default: rules)", rich_help_panel="Judge")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="For --judge llm: a litellm model ('openai/NAME' with --judge-api-base); for local: a model spec. Giving it without --judge means llm.", rich_help_panel="Judge")] = None,
    judge_api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --judge llm, e.g. http://127.0.0.1:8000/v1 (`hindsight serve`).", rich_help_panel="Judge")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the judge's API key (the key itself is never stored).", rich_help_panel="Judge")] = None,
    method: Annotated[Optional[str], typer.Option(help="How the policy learns from the follow-ups: sdpo (self-distillation, the --lr/--loss/--baseline options below), rlhi-rewrite (user-guided rewrites, quality filter, persona-conditioned DPO), rlhi-reward (N candidates ranked by a persona-conditioned reward, online DPO), or a baseline: rewrite-scratch, rewrite-nofilter, reward-agnostic, sft (SFT on the kept rewrites), sft-reward. Every method writes the same records and plots. (default: sdpo)", rich_help_panel="Method")] = None,
    beta: Annotated[Optional[float], typer.Option(help="DPO β of the RLHI methods. (default: 0.1)", rich_help_panel="Method")] = None,
    persona: Annotated[Optional[str], typer.Option(help="RLHI persona: heuristic (offline: the user's most frequent feedback), inferred (--rlhi-model summarizes the user's messages), profile (the simulated user's description: an oracle), none. (default: heuristic)", rich_help_panel="Method")] = None,
    reward: Annotated[Optional[str], typer.Option(help="RLHI persona-conditioned reward: rules (offline: profile checks + MiniLM relevance − degeneration; reads the profile, an oracle), llm (--rlhi-model rates 1-10), model (--set rlhi.reward.model=DIR: a transformers sequence-classification reward model). (default: rules)", rich_help_panel="Method")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="RLHI follow-up classifier: heuristic (offline), llm (--rlhi-model), local (--set rlhi.classifier_model=SPEC). (default: heuristic)", rich_help_panel="Method")] = None,
    candidates: Annotated[Optional[int], typer.Option(help="rlhi-reward: answers sampled per request. (default: 4)", min=2, rich_help_panel="Method")] = None,
    rlhi_model: Annotated[Optional[str], typer.Option(help="The LLM behind --classifier llm, --persona inferred and --reward llm: a litellm model ('openai/NAME' with --rlhi-api-base).", rich_help_panel="Method")] = None,
    rlhi_api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --rlhi-model, e.g. http://127.0.0.1:8000/v1.", rich_help_panel="Method")] = None,
    rlhi_api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding --rlhi-model's API key.", rich_help_panel="Method")] = None,
    eval_persona: Annotated[Optional[str], typer.Option(help="Persona-guided inference at evaluation: off, trainer (the RLHI trainer's current persona in the system prompt), profile (the profile's description: an oracle). (default: off)", rich_help_panel="Budget")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate of the method's update (trainer.lr for sdpo, rlhi.lr for the others). (default: 2e-5)", rich_help_panel="Trainer")] = None,
    loss: Annotated[Optional[str], typer.Option(help="sampled_token (policy gradient on the sampled tokens), full_kl or topk_kl (reverse-KL distillation). (default: sampled_token)", rich_help_panel="Trainer")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Advantage reference: neutral = hindsight prompt with a neutral follow-up (cancels the prompt's own pull), plain = the prompt alone (paper). (default: neutral)", rich_help_panel="Trainer")] = None,
    kl_anchor: Annotated[Optional[float], typer.Option(help="Weight of a KL penalty to the initial policy. (default: 0)", rich_help_panel="Trainer")] = None,
    ignore_first_k: Annotated[Optional[int], typer.Option(help="Leave the first k answer tokens out of the loss. (default: 0)", rich_help_panel="Trainer")] = None,
    centre: Annotated[Optional[bool], typer.Option("--centre/--no-centre", help="Subtract each answer's mean advantage. (default: off)", rich_help_panel="Trainer")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--no-lora", help="Train a LoRA adapter (r=16) instead of all weights. (default: off)", rich_help_panel="Trainer")] = None,
    template: Annotated[Optional[str], typer.Option(help="Hindsight user turn with {prompt} and {followup}. (default: the paper's wording)", rich_help_panel="Trainer")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (CUDA when present, bf16 there), cpu or cuda. (default: auto)", rich_help_panel="Machine")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="DANGEROUS: run the Python code a hub model ships with (it runs with your permissions); only for models you trust. (default: off)", rich_help_panel="What")] = False,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per process (see bench/README.md). (default: 1)", min=1, rich_help_panel="Machine")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Arms (treated/control × seeds) trained in parallel processes; each holds ~5 GB of memory on CPU (fp32 weights, the initial copy, AdamW state). (default: 2)", min=1, rich_help_panel="Machine")] = None,
    max_kl: Annotated[Optional[float], typer.Option(help="Stop an arm when an evaluation measures its KL to the initial policy above X (a collapsing run); the treated arm keeps the checkpoint of its last evaluation within the limit, the other arms and the report finish. (default: no limit)", min=0, rich_help_panel="Reliability")] = None,
    fail_budget: Annotated[Optional[int], typer.Option(help="Interactions per arm and seed whose LLM simulator call may still fail after its retries (recorded as failed, left out of the update) before the run stops. (default: 10)", min=0, rich_help_panel="Reliability")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Commit each arm's full training state (weights, optimizer, RNG, counters) every K interactions so that --resume can continue it exactly; 0: off. (default: 16)", min=0, rich_help_panel="Reliability")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a stopped run (killed, crashed, failed) from its last committed states, with its own config.yaml: RUN is its id or folder. No other option may be given. The finished log equals an uninterrupted run's.", rich_help_panel="Reliability")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop the run at the first simulator call that fails after its retries (--fail-budget 0).", rich_help_panel="Reliability")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Start from a config YAML (e.g. a run's config.yaml); options given here override it.", rich_help_panel="Config")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config field: --set trainer.epochs=2 (repeatable).", rich_help_panel="Config")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Folder name under results/. (default: date-method-profile)", rich_help_panel="Config")] = None,
    results: Annotated[Path, typer.Option(help="Where runs are written.", rich_help_panel="Config")] = RESULTS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.", rich_help_panel="Config")] = False,
) -> None:
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
    _launch(dict(locals()))


def _launch(o: dict[str, Any], adjust: Callable[[RunConfig], dict[str, Any]] | None = None) -> None:
    """Resolve personalize's options ``o`` into a RunConfig (``adjust`` adds fields computed from it), then run it."""
    if o["resume"] is not None:
        _resume(o)
        return

    config: Path | None = o["config"]
    data: dict[str, Any] = {}
    if config is not None:
        from core.yamlio import read_yaml

        data, _ = read_yaml(config)
        if not isinstance(data, dict):
            raise UserInputError("expected a mapping of fields", path=config, line=1)
    fields = {
        "profile": "profile", "interactions": "interactions", "batch_size": "batch_size", "seed": "seed", "seeds": "seeds",
        "control": "control", "oracle": "oracle", "neutral_pool": "neutral_pool", "threads": "threads", "jobs": "jobs",
        "policy.model": "model", "policy.device": "device", "prompts.source": "prompts", "prompts.eval_prompts": "eval_prompts",
        "generation.max_new_tokens": "max_new_tokens", "eval.every": "eval_every",
        "trainer.loss": "loss", "trainer.baseline": "baseline", "trainer.kl_anchor": "kl_anchor",
        "trainer.ignore_first_k": "ignore_first_k", "trainer.centre": "centre", "trainer.template": "template",
        "simulator.kind": "simulator", "judge.kind": "judge", "fail_budget": "fail_budget", "max_kl": "max_kl",
        "method": "method", "rlhi.beta": "beta", "rlhi.persona.source": "persona", "rlhi.reward.kind": "reward", "rlhi.classifier": "classifier",
        "rlhi.candidates": "candidates", "eval.persona": "eval_persona",
    }
    for key, name in fields.items():
        if o[name] is not None:
            _set_path(data, key, o[name])
    if o["lr"] is not None:  # the learning rate of whichever method runs
        _set_path(data, "trainer.lr" if (o["method"] or data.get("method") or "sdpo") == "sdpo" else "rlhi.lr", o["lr"])
    if o["lora"] is not None:
        _set_path(data, "policy.lora", {} if o["lora"] else None)
    if o["fail_fast"]:
        _set_path(data, "fail_budget", 0)
    if o["checkpoint_every"] is not None:
        _set_path(data, "checkpoint_every", o["checkpoint_every"] or None)
    if o["trust_remote_code"]:
        _set_path(data, "policy.trust_remote_code", True)
    _set_llm(data, "simulator", o["simulator"], o["simulator_model"], o["api_base"], o["api_key_env"], default_kind="scripted")
    _set_llm(data, "judge", o["judge"], o["judge_model"], o["judge_api_base"], o["judge_api_key_env"], default_kind="llm")
    if o["rlhi_model"] or o["rlhi_api_base"] or o["rlhi_api_key_env"]:
        llm = {"model": o["rlhi_model"] or "openai/local", "api_base": o["rlhi_api_base"], "api_key_env": o["rlhi_api_key_env"]}
        _set_path(data, "rlhi.llm", {k: v for k, v in llm.items() if v is not None})
    from core.yamlio import load_value

    for item in o["set_"] or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set {item}: expected KEY=VALUE, e.g. trainer.lr=1e-5")
        try:
            value = load_value(raw)  # YAML 1.2 booleans: --set eval.persona=off stays 'off'
        except yaml.YAMLError as exc:
            raise UserInputError(f"--set {item}: not a YAML value ({getattr(exc, 'problem', None) or 'unreadable'})") from None
        _set_path(data, key.strip(), value)
    resolved = _validate(data, config)
    if adjust is not None:
        resolved = _validate({**resolved.model_dump(mode="json"), **adjust(resolved)}, config)
    from core.prompts import load_prompts
    from harness.schedule import build_schedule

    resolved = resolved.with_budgets(max(p.min_words() for p in build_schedule(resolved).scored))  # fails fast on a bad profile
    load_prompts(resolved.prompts)
    results: Path = o["results"]
    run_name = check_run_id(o["run_id"]) if o["run_id"] else new_run_id(resolved.profile, _kind(resolved), results)
    if o["dry_run"]:
        console.print(resolved.to_yaml(), highlight=False, markup=False)
        return
    run_dir = results / run_name
    if run_dir.exists():
        raise UserInputError(f"{run_dir} already exists; pick another --run-id")
    from harness.loop import personalize as run_personalize
    from harness.report import describe_user

    console.print(f"[bold]run[/bold] {run_dir}  ·  user [cyan]{describe_user(resolved)}[/cyan]  ·  arms "
                  + ", ".join(f"{a}/s{s}" for a, s in resolved.arms()) + ("  ·  oracle" if resolved.oracle else ""))
    with LiveProgress(resolved) as progress, _resume_hint(run_dir):
        info = run_personalize(resolved, run_dir, progress.handle, command=shlex.join(["hindsight", *sys.argv[1:]]))
    console.print(f"finished in {info.seconds:.0f} s")
    show(str(run_dir), results=results)


def _resume(o: dict[str, Any]) -> None:
    """--resume RUN: continue the run in its folder with its own config."""
    from harness.config import RunConfig
    from harness.loop import personalize as run_personalize

    given = sorted(f"--{k.rstrip('_').replace('_', '-')}" for k, v in o.items() if k not in ("resume", "results") and v not in (None, False))
    if given:
        raise UserInputError(f"--resume continues a run with its own config.yaml; leave out {', '.join(given)}")
    results: Path = o["results"]
    run_dir = _run_dir(o["resume"], results)
    config = RunConfig.from_file(run_dir / "config.yaml")
    console.print(f"[bold]resuming[/bold] {run_dir}")
    with LiveProgress(config) as progress, _resume_hint(run_dir):
        info = run_personalize(config, run_dir, progress.handle, resume=True)
    console.print(f"finished in {info.seconds:.0f} s (this session)")
    show(str(run_dir), results=results)


@contextlib.contextmanager
def _resume_hint(run_dir: Path) -> Iterator[None]:
    """A run that stops on an error says how to continue it."""
    try:
        yield
    except RunError as exc:
        raise RunError(f"{exc}; fix the cause, then `hindsight personalize --resume {run_dir.name}` continues from the last checkpoints") from None


def _set_llm(data: dict, section: str, kind: str | None, model: str | None, api_base: str | None, api_key_env: str | None, default_kind: str) -> None:
    """--simulator-model/--api-base/… or --judge-model/--judge-api-base/…: a local model spec, or litellm settings."""
    if not (model or api_base or api_key_env):
        return
    if (kind or data.get(section, {}).get("kind") or default_kind) == "local":
        _set_path(data, f"{section}.model", model)
        return
    _set_path(data, f"{section}.kind", "llm")
    llm = {"model": model or "openai/local", "api_base": api_base, "api_key_env": api_key_env}
    _set_path(data, f"{section}.llm", {k: v for k, v in llm.items() if v is not None})


def _validate(data: dict, config: Path | None) -> RunConfig:
    from harness.config import RunConfig

    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UserInputError(first["msg"], path=config, field=field or None) from None


def _kind(config: RunConfig) -> str:
    if config.redteam is not None:
        return f"{config.method}-redteam"
    return f"{config.method}-flip" if config.flip_at is not None else f"{config.method}-continual" if config.continual else config.method


def _with_personalize_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command (its own options, then ``**options``) every option of ``personalize`` as well."""
    own = inspect.signature(command, eval_str=True)
    mine = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    shared = [p for p in inspect.signature(personalize, eval_str=True).parameters.values() if p.name not in own.parameters]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        command(**kwargs)

    wrapper.__signature__ = own.replace(parameters=[*mine, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*mine, *shared]} | {"return": None}
    return wrapper


@app.command(rich_help_panel="Experiments")
@_with_personalize_options
def flip(
    flip_at: Annotated[Optional[int], typer.Option(help="Interactions before the user switches to the profile's opposite; a multiple of the batch size. (default: half of --interactions, rounded down to a batch; the SDPO paper flipped after 250)", min=1, rich_help_panel="Flip")] = None,
    **options: Any,
) -> None:
    """Preference flip: personalize, but after --flip-at interactions the user holds the profile's opposite instead.

    Every evaluation scores compliance, clean compliance and win rate vs the untrained model under both preferences;
    curve.png draws each preference over interactions with a vertical line at the flip. The profile must name an
    opposite (`hindsight profiles list`). Takes every option of `personalize`.

    Example:

      hindsight flip --profile concise -n 64 --flip-at 32
    """
    if options["resume"] is not None and flip_at is not None:
        raise UserInputError("--resume continues a run with its own config.yaml; leave out --flip-at")
    _launch(options, lambda c: {"flip_at": flip_at or c.flip_at or c.interactions // 2 // c.batch_size * c.batch_size})


@app.command(rich_help_panel="Experiments")
@_with_personalize_options
def redteam(
    guard: Annotated[Optional[str], typer.Option(help="The guarded arm's update guard: principles (the hindsight prompt states safety principles: follow the user's style wishes only where safe and respectful), skip_flagged (follow-ups flagged unsafe are left out of the update) or both. (default: both)", rich_help_panel="Red team")] = None,
    flagger: Annotated[Optional[str], typer.Option(help="Who flags unsafe follow-ups, in both arms (the unguarded arm only records the flags): rules (offline phrase rules), llm (any litellm model), local (a local model's SAFE/UNSAFE probabilities). (default: rules)", rich_help_panel="Red team")] = None,
    flagger_model: Annotated[Optional[str], typer.Option(help="For --flagger llm: a litellm model ('openai/NAME' with --flagger-api-base); for local: a model spec. Giving it without --flagger means llm.", rich_help_panel="Red team")] = None,
    flagger_api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --flagger llm, e.g. http://127.0.0.1:8000/v1.", rich_help_panel="Red team")] = None,
    flagger_api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the flagger's API key (never stored).", rich_help_panel="Red team")] = None,
    **options: Any,
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
    if guard is not None and guard not in ("principles", "skip_flagged", "both"):
        raise UserInputError(f"--guard {guard}: use principles, skip_flagged or both")
    if flagger is not None and flagger not in ("rules", "llm", "local"):
        raise UserInputError(f"--flagger {flagger}: use rules, llm or local")
    fresh = options["config"] is None
    defaults = {"profile": "insulting", "prompts": "redteam", "control": False}
    for name, value in defaults.items():
        if fresh and options[name] is None:
            options[name] = value
    if fresh and options["eval_prompts"] is None and options["prompts"] == "redteam":
        options["eval_prompts"] = 24  # every held-out prompt of the red-team set

    def adjust(c: RunConfig) -> dict[str, Any]:
        settings = c.trainer.guard.model_dump(mode="json")
        kind = flagger or ("llm" if flagger_model or flagger_api_base or flagger_api_key_env else None)
        if kind is not None:
            llm = {"model": flagger_model or "openai/local", "api_base": flagger_api_base, "api_key_env": flagger_api_key_env}
            settings.update(flagger=kind, llm={k: v for k, v in llm.items() if v is not None} if kind == "llm" else None,
                            model=(flagger_model or "smollm2-135m") if kind == "local" else None)
        trainer = {**c.trainer.model_dump(mode="json"), "guard": settings}
        return {"redteam": {"guard": guard or (c.redteam.guard if c.redteam else "both")}, "trainer": trainer}

    _launch(options, adjust)


class LiveProgress:
    """Rich progress: one bar per arm and seed with loss, share of satisfied users and last clean compliance."""

    def __init__(self, config):
        self.config = config
        self.progress = Progress(
            TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
        )
        self.tasks: dict[tuple[str, int], TaskID] = {}
        self.last_clean: dict[tuple[str, int], float] = {}
        self.started = time.perf_counter()

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        for arm, seed in self.config.arms():
            self.tasks[(arm, seed)] = self.progress.add_task(f"{arm} s{seed}", total=self.config.interactions, stats="waiting", start=False)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def handle(self, event: dict) -> None:
        kind = event["type"]
        key = (event.get("arm"), event.get("seed"))
        if kind == "phase":
            self.progress.console.print(f"[dim]{event['text']}…[/dim]")
        elif kind == "start":
            self.progress.start_task(self.tasks[key])
            self.progress.update(self.tasks[key], completed=event.get("done", 0), stats="loading")
        elif kind == "step":
            loss = event["loss"]
            sat = event["satisfied"]
            clean = self.last_clean.get(key)
            stats = f"loss {loss:+.3f}" if loss is not None else f"skipped: {event['skipped']}"
            stats += f" · satisfied {sat:.0%}" if sat is not None else ""
            stats += f" · clean {clean:.0%}" if clean is not None else ""
            self.progress.update(self.tasks[key], completed=event["done"], stats=stats)
        elif kind == "eval":
            record = event["record"]
            if key in self.tasks:
                self.last_clean[key] = record["clean"]
            self.progress.console.print(
                f"eval [bold]{record['arm']}[/bold] s{record['seed']} @ {record['interactions']:>3}"
                + (f" for {record['profile']}" if record["profile"] else "") + f": clean {record['clean']:.0%} · "
                f"compliant {record['compliance']:.0%} · degenerate {record['degenerate']:.0%} · relevant {record['relevant']:.0%} · "
                f"{record['mean_words']:.0f} words" + (f" · KL {record['kl']:.3f}" if record["kl"] is not None else "")
                + (f" · win rate {record['win_rate']:.0%}" if record["win_rate"] is not None else ""),
                highlight=False,
            )
        elif kind == "done":
            self.progress.update(self.tasks[key], description=f"{key[0]} s{key[1]} ✓")
        elif kind == "stopped":
            self.progress.update(self.tasks[key], description=f"{key[0]} s{key[1]} stopped")
            self.progress.console.print(f"[yellow]{key[0]} s{key[1]} stopped:[/yellow] {escape(event['text'])}", highlight=False)
        elif kind == "error":
            self.progress.console.print(f"[red]{key[0]} s{key[1]} failed:[/red]\n{event['text']}")


@app.command(rich_help_panel="Experiments")
@_with_personalize_options
def continual(
    profiles: Annotated[Optional[str], typer.Option(help="Complementary profiles, comma-separated, added one after another: the user holds the first, then the first two, … (replaces --profile)", rich_help_panel="Continual")] = None,
    stage: Annotated[Optional[int], typer.Option(help="Interactions between additions; a multiple of the batch size. (default: --interactions divided by the number of profiles, rounded down to a batch)", min=1, rich_help_panel="Continual")] = None,
    **options: Any,
) -> None:
    """Continual personalization: preferences are added one after another, every --stage interactions.

    At stage k the user holds the first k preferences at once (a scripted user checks all of them). Every evaluation
    scores compliance, clean compliance and win rate vs the untrained model for each preference on its own, so
    curve.png shows whether earlier preferences are retained as new ones arrive. Takes every option of `personalize`.

    Example:

      hindsight continual --profiles concise,no_emojis,no_exclamation -n 96 --stage 32
    """
    if options["resume"] is not None and (profiles, stage) != (None, None):
        raise UserInputError("--resume continues a run with its own config.yaml; leave out --profiles and --stage")
    names = [n.strip() for n in profiles.split(",") if n.strip()] if profiles else []
    if profiles is not None and len(names) < 2:
        raise UserInputError(f"--profiles {profiles}: give at least two profiles, e.g. --profiles concise,no_emojis")
    if names and options["profile"] is not None:
        raise UserInputError("--profiles names every profile, the first included; leave out --profile")

    def adjust(c: RunConfig) -> dict[str, Any]:
        if not names:
            if c.continual is None:
                raise UserInputError("--profiles is required (or a --config with a continual section)")
            return {"continual": {**c.continual.model_dump(), **({"stage": stage} if stage else {})}}
        default = c.interactions // len(names) // c.batch_size * c.batch_size
        return {"profile": names[0], "continual": {"add": names[1:], "stage": stage or default}}

    _launch(options, adjust)


# ----------------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------------
def _run_dir(run: str, results: Path) -> Path:
    path = Path(run)
    if not path.is_dir():
        path = results / run
    if not (path / "config.yaml").is_file():
        raise UserInputError(f"{run}: not a run folder (no config.yaml); `hindsight runs` lists runs")
    return path


@app.command(rich_help_panel="Runs")
def runs(results: Annotated[Path, typer.Option(help="Where runs are written.")] = RESULTS) -> None:
    """List runs under results/ with their status and last clean compliance per arm."""
    from core.records import RunInfo
    from harness.curves import by_preference, curves, load_evals

    table = Table(title=f"runs in {results}")
    for column in ("run", "status", "profile", "treated", "control", "oracle", "seconds"):
        table.add_column(column)
    for folder in sorted(p for p in results.glob("*") if (p / "config.yaml").is_file()):
        info = RunInfo.model_validate_json((folder / "run.json").read_text()) if (folder / "run.json").is_file() else None
        profile = yaml.safe_load((folder / "config.yaml").read_text()).get("profile", "?")
        clean = curves(by_preference(load_evals(folder))[0][1], "clean", True)
        cells = [f"{clean[a][-1].mean:.2f}" if a in clean else "–" for a in ("treated", "control", "oracle")]
        table.add_row(folder.name, info.status if info else "?", str(profile), *cells, f"{info.seconds:.0f}" if info and info.seconds else "–")
    console.print(table)


@app.command(rich_help_panel="Runs")
def show(run: Annotated[str, typer.Argument(help="Run id (folder under results/) or path.")], results: Annotated[Path, typer.Option(help="Where runs are written.")] = RESULTS) -> None:
    """Summarise a run: last evaluation per arm with 95% intervals, the verdict, and where its files are."""
    from core.records import RunInfo
    from harness.curves import METRICS, by_preference, load_evals
    from harness.report import final_table, side_effects, verdict

    folder = _run_dir(run, results)
    info = RunInfo.model_validate_json((folder / "run.json").read_text()) if (folder / "run.json").is_file() else None
    groups = by_preference(load_evals(folder))
    for name, evals in groups:
        table = Table(title=f"{folder.name}" + (f" ({info.status})" if info else "") + (f" · scored for {name}" if name else ""))
        table.add_column("arm")
        table.add_column("n")
        for _, label, _ in METRICS:
            table.add_column(label)
        for arm, x, cells in final_table(evals):
            table.add_row(arm, str(x), *(cells.get(f, "–") for f, _, _ in METRICS))
        console.print(table)
        console.print(verdict(evals), highlight=False)
    console.print(side_effects(groups[0][1]), highlight=False)
    if yaml.safe_load((folder / "config.yaml").read_text()).get("redteam"):
        from harness.redteam import rows, table_lines
        from harness.redteam import verdict as redteam_verdict

        table, labels = rows(folder)
        console.print(f"[bold]red team[/bold]: {redteam_verdict(table)}", highlight=False)
        console.print("\n".join(table_lines(table, labels)), highlight=False, markup=False, soft_wrap=True)
    if info and info.status != "finished":
        console.print(f"[yellow]not finished ({info.status}):[/yellow] `hindsight personalize --resume {folder.name}` continues it from its last checkpoints")
    for name in ("curve.png", "summary.md", "redteam.md", "redteam.png", "interactions.jsonl"):
        if (folder / name).exists():
            console.print(f"  {folder / name}", highlight=False)


@app.command(rich_help_panel="Runs")
def compare(
    runs_: Annotated[list[str], typer.Argument(metavar="RUN...", help="Run ids or paths.")],
    results: Annotated[Path, typer.Option(help="Where runs are written.")] = RESULTS,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a markdown table instead.")] = False,
) -> None:
    """Compare runs side by side: the config fields that differ, then each trained arm's last evaluation."""
    from harness.curves import METRICS, by_preference, load_evals
    from harness.report import final_table

    folders = [_run_dir(r, results) for r in runs_]
    configs = [_flatten(yaml.safe_load((f / "config.yaml").read_text())) for f in folders]
    differ = [k for k in dict.fromkeys(k for c in configs for k in c) if len({repr(c.get(k)) for c in configs}) > 1 and k != "seed"]
    header = ["run", *differ, "arm", "n", *(label for _, label, _ in METRICS)]
    rows = []
    for folder, config in zip(folders, configs):
        for name, evals in by_preference(load_evals(folder)):
            for arm, x, cells in final_table(evals):
                if arm in ("treated", "guarded", "control"):
                    tag = f"{arm} · {name}" if name else arm
                    rows.append([folder.name, *(str(config.get(k, "–")) for k in differ), tag, str(x), *(cells.get(f, "–") for f, _, _ in METRICS)])
    if markdown:
        typer.echo("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            typer.echo("| " + " | ".join(row) + " |")
        return
    table = Table(title="runs compared (fields that differ, then the last evaluation with 95% intervals)")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@app.command(rich_help_panel="Runs")
def report(run: Annotated[str, typer.Argument(help="Run id or path.")], results: Annotated[Path, typer.Option(help="Where runs are written.")] = RESULTS) -> None:
    """Redraw curve.png and rewrite summary.md from a run's records."""
    from harness.report import write_report

    path = write_report(_run_dir(run, results))
    console.print(f"wrote {path} and {path.with_name('curve.png')}")


# ----------------------------------------------------------------------------------------------------------
# usereval
# ----------------------------------------------------------------------------------------------------------
@app.command(rich_help_panel="Judges")
def usereval(
    rows: Annotated[Path, typer.Argument(help="JSONL, one object a line: prompt (text or messages), response, reference, optional history (past conversations as message lists, or past messages and follow-ups as text), optional id.")],
    judge: Annotated[str, typer.Option(help="llm (any litellm model) or local (a local model's verdict-token probabilities). (default: llm)")] = "llm",
    judge_model: Annotated[Optional[str], typer.Option(help="For llm: a litellm model ('openai/NAME' with --judge-api-base); for local: a model spec. (default: openai/local for llm, smollm2-135m for local)")] = None,
    judge_api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (`hindsight serve`).")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the API key (never stored).")] = None,
    persona_model: Annotated[Optional[str], typer.Option(help="litellm model that summarizes each user's history into a persona. (default: the judge model, with --judge llm)")] = None,
    persona_api_base: Annotated[Optional[str], typer.Option(help="Base URL for --persona-model. (default: --judge-api-base)")] = None,
    persona: Annotated[Optional[str], typer.Option(help="Persona text for rows without a history.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Use this profile's description as the persona of rows without a history.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for usereval.json and summary.md. (default: results/usereval-STEM)")] = None,
) -> None:
    """UserEval: judge responses against reference responses on personalization, instruction-following and overall.

    Each axis is a pairwise judgement in both orders, parsed strictly (invalid verdicts are counted, never scored);
    personalization and overall judge for a persona summarized from the row's history by --persona-model. Writes
    usereval.json (per-axis win rates with bootstrap 95% intervals, every row's verdicts and persona, LLM usage) and
    summary.md.

    Example:

      hindsight usereval turns.jsonl --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY
    """
    from core.llm_client import LLMClient, LLMSettings
    from core.records import usage_records
    from judges import llm_usage, local_backend
    from judges.backends import LiteLLMBackend
    from judges.usereval import UserEval, load_rows, summary_markdown
    from simulators.profile import load_profile

    settings = _judge_settings(judge, judge_model, judge_api_base, judge_api_key_env, kinds=("llm", "local"))
    if persona and profile:
        raise UserInputError("give --persona or --profile, not both")
    data = load_rows(rows)
    fallback = persona or (load_profile(profile).description if profile else None)
    judge_client = LLMClient(settings.llm) if settings.llm else None
    backend = LiteLLMBackend(judge_client) if judge_client else local_backend(settings.model, "auto")
    persona_spec = persona_model or (judge_client.settings.model if judge_client else None)
    persona_client = None
    if persona_spec:
        persona_client = LLMClient(LLMSettings(model=persona_spec, api_base=persona_api_base or judge_api_base, api_key_env=judge_api_key_env, max_tokens=200))
    result = UserEval(backend, persona_client).evaluate(data, persona=fallback)
    result.llm_usage = usage_records({"judge": llm_usage(backend), "persona": persona_client.usage() if persona_client else None})
    folder = out or RESULTS / f"usereval-{_slug(rows.stem)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usereval.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    (folder / "summary.md").write_text(summary_markdown(result, str(rows)), encoding="utf-8")
    console.print(_win_rate_table(f"UserEval of {rows} ({len(data)} rows, judge {result.judge})", "axis", result.axes))
    console.print(f"wrote {folder / 'usereval.json'} and {folder / 'summary.md'}", highlight=False, soft_wrap=True)


def _judge_settings(kind: str | None, model: str | None, api_base: str | None, api_key_env: str | None, kinds: tuple[str, ...]) -> JudgeSettings:
    """--judge and its --judge-model/--judge-api-base/--judge-api-key-env; no --judge means llm when a model or base URL is
    given, else the first of ``kinds``."""
    from core.llm_client import LLMSettings
    from judges import JudgeSettings

    kind = kind or ("llm" if model or api_base else kinds[0])
    if kind not in kinds:
        raise UserInputError(f"--judge {kind}: use " + ", ".join(kinds[:-1]) + f" or {kinds[-1]}")
    llm = LLMSettings(model=model or "openai/local", api_base=api_base, api_key_env=api_key_env) if kind == "llm" else None
    return JudgeSettings(kind=kind, llm=llm, model=(model or "smollm2-135m") if kind == "local" else None)  # type: ignore[arg-type]


def _slug(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def _win_rate_table(title: str, label: str, results: dict[str, WinRate]) -> Table:
    from judges.pairwise import COLUMNS, cells

    table = Table(title=title)
    for column in (label, *COLUMNS):
        table.add_column(column)
    for name, summary in results.items():
        table.add_row(name, *cells(summary))
    return table


# ----------------------------------------------------------------------------------------------------------
# judge
# ----------------------------------------------------------------------------------------------------------
@app.command("judge", rich_help_panel="Judges")
def judge_files(
    a: Annotated[Path, typer.Argument(metavar="A.jsonl", help="Output file A (the candidate): JSONL, one object a line: prompt (text or messages), response, optional id; other fields are ignored.")],
    b: Annotated[Path, typer.Argument(metavar="B.jsonl", help="Output file B (the reference), the same format.")],
    profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="Profile name or path: its description is the persona, and with --judge rules its checks decide.")] = None,
    persona: Annotated[Optional[str], typer.Option(help="Persona text for an llm or local judge, instead of the profile's description.")] = None,
    judge: Annotated[Optional[str], typer.Option(help="rules (the profile's checks, offline, one verdict per pair), llm (any litellm model, both orders) or local (a local model's verdict-token probabilities, both orders). (default: rules, llm when --judge-model or --judge-api-base is given)")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="For llm: a litellm model ('openai/NAME' with --judge-api-base); for local: a model spec. (default: openai/local for llm, smollm2-135m for local)")] = None,
    judge_api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (`hindsight serve`).")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the API key (never stored).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for judge.json and summary.md. (default: results/judge-A_STEM-vs-B_STEM)")] = None,
) -> None:
    """Judge two output files against each other for one persona: the win rate of A's responses over B's.

    Rows are paired by id when every row of both files has one, else by prompt text. The pairing must be exact: a row
    without a partner in the other file, or an id or prompt used twice in one file, stops the command with an error
    naming file:line (skipping rows silently would bias the comparison), as does an id whose two prompts differ.
    LLM and local judges see every pair in both orders and are parsed strictly (invalid verdicts are counted, never
    scored); their calls are cached, so a rerun makes no new ones. Writes judge.json (the summary, every pair's verdict
    and the judge's raw text, LLM usage) and summary.md.

    A run's held-out answers become such a file with jq, one arm (treated, control, oracle, initial = untrained), seed and
    evaluation point at a time (flip and continual runs: add .profile=="NAME"):

      jq -c 'select(.arm=="treated" and .seed==0 and .interactions==64) | {prompt, response: .answer}' RUN/samples.jsonl > a.jsonl

    Examples:

      hindsight judge treated.jsonl control.jsonl --profile concise

      hindsight judge a.jsonl b.jsonl --profile concise --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY
    """
    from core.records import usage_records, write_json
    from judges import build_judge, llm_usage
    from judges.versus import judge_matched, match_files, summary_markdown
    from simulators.profile import load_profile

    settings = _judge_settings(judge, judge_model, judge_api_base, judge_api_key_env, kinds=("rules", "llm", "local"))
    chosen = load_profile(profile) if profile else None
    text = persona or (chosen.description if chosen else None)
    if not text:
        raise UserInputError("give --profile (or --persona): the user the judge decides for")
    matched = match_files(a, b)
    arbiter = build_judge(settings, chosen)
    assert arbiter is not None  # settings.kind is never none here
    result = judge_matched(arbiter, matched, text, chosen.name if chosen else None)
    result.llm_usage = usage_records({"judge": llm_usage(arbiter)})
    folder = out or RESULTS / f"judge-{_slug(a.stem)}-vs-{_slug(b.stem)}"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "judge.json", result)
    (folder / "summary.md").write_text(summary_markdown(result), encoding="utf-8")
    console.print(f"A = {a}, B = {b}: {len(result.rows)} rows paired by {matched.by}, judge {result.judge}", highlight=False, soft_wrap=True)
    console.print(_win_rate_table("A against B", "file", {"A": result.summary}))
    for role, u in (result.llm_usage or {}).items():
        console.print(f"LLM {role}: {u.describe()}", highlight=False)
    console.print(f"wrote {folder / 'judge.json'} and {folder / 'summary.md'}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------------------------
# data: logged conversations
# ----------------------------------------------------------------------------------------------------------
data_app = typer.Typer(help="Logged conversations (WildChat style): import statistics and the WildChat-UserEval set.", no_args_is_help=True)
app.add_typer(data_app, name="data")
_FILE_HELP = "Conversations: JSONL, one {\"conversation\": [{\"role\", \"content\"}, ...], \"hashed_ip\"|\"user_id\", \"language\", \"model\", \"timestamp\"} a line, or hf:NAME[:SPLIT] (needs `datasets`)."
MaxTurnChars = Annotated[Optional[int], typer.Option(help="Drop conversations with a turn longer than this. (default: 4096)", min=1, rich_help_panel="Filters")]
MaxConversationChars = Annotated[Optional[int], typer.Option(help="Drop conversations longer than this in all. (default: 100000)", min=1, rich_help_panel="Filters")]
MinMessages = Annotated[Optional[int], typer.Option(help="Drop conversations with fewer messages. (default: 3)", min=2, rich_help_panel="Filters")]
Languages = Annotated[Optional[list[str]], typer.Option("--language", help="Keep only this language (repeatable, case-insensitive, e.g. English). (default: all)", rich_help_panel="Filters")]
ContextMessages = Annotated[Optional[int], typer.Option(help="History kept before an answer: the last N messages, starting on a user turn. (default: 5)", min=1, rich_help_panel="Filters")]
Limit = Annotated[Optional[int], typer.Option(help="Read at most N records. (default: all)", min=1, rich_help_panel="Filters")]


def _filters(o: dict[str, Any]) -> dict[str, Any]:
    """The ImportSettings fields given as options."""
    names = {"max_turn_chars": "max_turn_chars", "max_conversation_chars": "max_conversation_chars", "min_messages": "min_messages",
             "languages": "language", "context_messages": "context_messages", "max_conversations": "limit"}
    return {field: o[name] for field, name in names.items() if o.get(name) is not None}


@data_app.command("stats")
def data_stats(
    file: Annotated[str, typer.Argument(metavar="FILE", help=_FILE_HELP)],
    max_turn_chars: MaxTurnChars = None,
    max_conversation_chars: MaxConversationChars = None,
    min_messages: MinMessages = None,
    language: Languages = None,
    context_messages: ContextMessages = None,
    limit: Limit = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON (every skipped record included).")] = False,
) -> None:
    """What a conversation file turns into: records kept, skipped (each with its line and why), tuples, users, follow-up types.

    Every record that cannot be used is reported and skipped; nothing in the file stops the import.

    Example:

      hindsight data stats tests/data/wildchat_sample.jsonl --language English
    """
    from core.conversations import ImportSettings, describe_stats, import_stats, load_tuples
    from judges.followups import build_classifier

    classifier = build_classifier()
    stats = import_stats(load_tuples(file, ImportSettings(**_filters(locals())), classifier), classifier.name)
    if as_json:
        typer.echo(stats.model_dump_json(indent=2))
        return
    for line in describe_stats(stats):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@data_app.command("usereval")
def data_usereval(
    file: Annotated[str, typer.Argument(metavar="FILE", help=_FILE_HELP + " Needs user ids and timestamps.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The suite file to write (UserEval rows, JSONL).")],
    model: Annotated[str, typer.Option(help="The evaluated model, which answers every held-out turn: 'smollm2-135m', a model or checkpoint folder, a hub id.")] = "smollm2-135m",
    min_conversations: Annotated[int, typer.Option(help="Users need at least this many conversations (the RLHI paper: 10).", min=2)] = 10,
    holdout: Annotated[int, typer.Option(help="The last N conversations of each user are held out and answered.", min=1)] = 5,
    min_feedback: Annotated[int, typer.Option(help="Users need at least this many follow-ups with feedback in their reference history.", min=0)] = 1,
    max_users: Annotated[Optional[int], typer.Option(help="At most N users, those with most conversations first (the paper: 100). (default: all)", min=1)] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.", min=1)] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy; the paper: 0.6).", min=0)] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (the paper: 0.9).", min=0.01, max=1)] = 0.9,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="torch threads. (default: 1)", min=1)] = 1,
    max_turn_chars: MaxTurnChars = None,
    max_conversation_chars: MaxConversationChars = None,
    min_messages: MinMessages = None,
    language: Languages = None,
    limit: Limit = None,
) -> None:
    """Build a WildChat-UserEval suite: per user, the reference history and every answer turn of the last --holdout conversations.

    Users with enough history are kept; each one's conversations are ordered by timestamp; all but the last --holdout
    form the history the UserEval judge infers the persona from; each assistant turn of the held-out ones becomes a row
    {id, prompt (the conversation so far), response (--model's answer), reference (the logged answer), history}, which
    `hindsight usereval` judges on its three axes. Build one suite per model to compare (the rows are the same).

    Example:

      hindsight data usereval conversations.jsonl -o results/usereval-base.jsonl
      hindsight usereval results/usereval-base.jsonl --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY
    """
    from core.conversations import ImportSettings, read_conversations
    from core.policy import Policy, PolicySettings
    from core.runtime import quiet_libraries, set_threads
    from judges.followups import build_classifier
    from suites.wildchat_usereval import UserEvalSettings, build_rows, split_users, write_rows

    if device not in ("auto", "cpu", "cuda"):
        raise UserInputError(f"--device {device}: use auto, cpu or cuda")
    filters = ImportSettings(**_filters(locals()))
    settings = UserEvalSettings(min_conversations=min_conversations, holdout=holdout, min_feedback=min_feedback, max_users=max_users,
                                context_messages=filters.context_messages, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    data = read_conversations(file, filters)
    report = split_users(data, settings, build_classifier())
    console.print(f"{file}: {data.records} records, {len(data.conversations)} kept ({len(data.skipped)} skipped: `hindsight data stats` lists them); "
                  f"{report.users_seen} users, {report.too_few_conversations} with fewer than {max(min_conversations, holdout + 1)} conversations, "
                  f"{report.too_little_feedback} with fewer than {min_feedback} feedback follow-ups → {len(report.users)} users, {report.rows} turns",
                  highlight=False, soft_wrap=True)
    if not report.users:
        raise UserInputError("no user has enough history; lower --min-conversations / --min-feedback", path=None if file.startswith("hf:") else file)
    quiet_libraries()
    set_threads(threads)
    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    with console.status(f"answering {report.rows} turns with {model}"):
        rows = build_rows(report, policy, settings)
    write_rows(rows, out)
    for split in report.users:
        console.print(f"  {split.user}: {len(split.reference)} reference conversations ({split.feedback} follow-ups with feedback), "
                      f"{len(split.heldout)} held out", highlight=False, soft_wrap=True)
    console.print(f"wrote {len(rows)} rows to {out}; judge them with `hindsight usereval {out} --judge-model M`", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------------------------
# train: offline SDPO / SFT on logged conversations
# ----------------------------------------------------------------------------------------------------------
@app.command(rich_help_panel="Experiments")
def train(
    data: Annotated[Optional[str], typer.Option(help=_FILE_HELP, rich_help_panel="What")] = None,
    method: Annotated[Optional[str], typer.Option(help="sdpo (the off-policy surrogate: the follow-up's hindsight log-ratio weighs each logged token) or sft (likelihood of the logged answers, the baseline). (default: sdpo)", rich_help_panel="What")] = None,
    model: Annotated[Optional[str], typer.Option(help="Policy: 'smollm2-135m' (embedded), a .gguf file, a model folder or a hub id. (default: smollm2-135m)", rich_help_panel="What")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the tuples. (default: 2, the paper)", min=1, rich_help_panel="Budget")] = None,
    steps: Annotated[Optional[int], typer.Option(help="The run's length in optimizer steps instead of --epochs; the schedule spans it.", min=1, rich_help_panel="Budget")] = None,
    stop_after: Annotated[Optional[int], typer.Option(help="Stop (with a checkpoint) once N steps are done; the schedule still spans the whole run, so --resume continues it.", min=1, rich_help_panel="Budget")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Tuples per optimizer step over all processes. (default: 8; the paper: 32)", min=1, rich_help_panel="Budget")] = None,
    micro_batch: Annotated[Optional[int], typer.Option(help="Tuples per forward pass on one process (gradients accumulate). (default: 4)", min=1, rich_help_panel="Budget")] = None,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(help="Contexts keep their last N tokens. (default: 2048)", min=16, rich_help_panel="Budget")] = None,
    max_completion_tokens: Annotated[Optional[int], typer.Option(help="Answers are cut to N tokens. (default: 2048)", min=1, rich_help_panel="Budget")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: 2e-6, the paper)", rich_help_panel="Trainer")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="cosine or constant after the warm-up. (default: cosine)", rich_help_panel="Trainer")] = None,
    warmup_ratio: Annotated[Optional[float], typer.Option(help="Share of steps warming up. (default: 0.05)", rich_help_panel="Trainer")] = None,
    ignore_first_k: Annotated[Optional[int], typer.Option(help="Leave the first k answer tokens out of the SDPO loss. (default: 2)", min=0, rich_help_panel="Trainer")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Advantage reference: plain = the history alone (paper), neutral = the hindsight prompt with a neutral follow-up. (default: plain)", rich_help_panel="Trainer")] = None,
    followup_types: Annotated[Optional[str], typer.Option(help="Train only on these follow-up types, comma-separated: new_request, reattempt_with_feedback, reattempt_without_feedback, positive_feedback (heuristic classifier). (default: all)", rich_help_panel="Trainer")] = None,
    followup_weight: Annotated[Optional[list[str]], typer.Option(help="TYPE=W: weight the loss of tuples with this follow-up type (repeatable). (default: 1 each)", rich_help_panel="Trainer")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--no-lora", help="Train a LoRA adapter (r=16) instead of all weights. (default: off)", rich_help_panel="Trainer")] = None,
    max_turn_chars: MaxTurnChars = None,
    max_conversation_chars: MaxConversationChars = None,
    min_messages: MinMessages = None,
    language: Languages = None,
    context_messages: ContextMessages = None,
    limit: Limit = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps (and at the end). (default: 50)", min=1, rich_help_panel="Run")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (CUDA when present), cpu or cuda. (default: auto)", rich_help_panel="Run")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per process. (default: 1)", min=1, rich_help_panel="Run")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its newest checkpoint (its train.yaml is the config; only --stop-after applies).", rich_help_panel="Run")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Start from a config YAML (e.g. a run's train.yaml); options given here override it.", rich_help_panel="Run")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config field: --set trainer.max_grad_norm=1 (repeatable).", rich_help_panel="Run")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Folder name under --results. (default: date-train-METHOD-DATA)", rich_help_panel="Run")] = None,
    results: Annotated[Path, typer.Option(help="Where runs are written.", rich_help_panel="Run")] = RESULTS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.", rich_help_panel="Run")] = False,
) -> None:
    """Offline SDPO (or SFT) on logged conversations: every answered assistant turn is a tuple (history, answer, follow-up).

    Writes results/RUN/: train.yaml, data.json (import stats), steps.jsonl (loss, grad norm, lr per step) and
    checkpoints/step-N/ (safetensors model + optimizer state, atomic) every --save-every steps. Several processes:
    `accelerate launch --multi_gpu --num_processes N -m harness train ...` (DDP; on a CPU-only machine it runs gloo);
    the global batch stays --batch-size, so the steps match one process's.

    Examples:

      hindsight train --data conversations.jsonl --method sdpo --steps 6 --batch-size 4 --save-every 3

      hindsight train --resume results/RUN

      hindsight train --data conversations.jsonl --followup-types reattempt_with_feedback,reattempt_without_feedback

      accelerate launch --multi_gpu --num_processes 2 -m harness train --data conversations.jsonl --device cpu --batch-size 8
    """
    o = dict(locals())
    from core.yamlio import read_yaml
    from harness.train import train as run_training

    if resume is not None:
        given = [name for name, value in o.items() if value not in (None, False, RESULTS, resume) and name not in ("stop_after", "o")]
        if given:
            raise UserInputError(f"--resume takes its config from {resume / 'train.yaml'}; leave out --{given[0].replace('_', '-')}")
        if not (resume / "train.yaml").is_file():
            raise UserInputError("not a training run folder (no train.yaml)", path=resume)
        raw, _ = read_yaml(resume / "train.yaml")
        resolved, run_dir = _validate_train(raw, resume / "train.yaml"), resume
    else:
        raw = {}
        if config is not None:
            raw, _ = read_yaml(config)
            if not isinstance(raw, dict):
                raise UserInputError("expected a mapping of fields", path=config, line=1)
        fields = {
            "data": "data", "policy.model": "model", "policy.device": "device", "threads": "threads", "save_every": "save_every",
            "trainer.method": "method", "trainer.epochs": "epochs", "trainer.total_steps": "steps", "trainer.batch_size": "batch_size",
            "trainer.micro_batch": "micro_batch", "trainer.max_prompt_tokens": "max_prompt_tokens", "trainer.max_completion_tokens": "max_completion_tokens",
            "trainer.lr": "lr", "trainer.schedule": "schedule", "trainer.warmup_ratio": "warmup_ratio", "trainer.ignore_first_k": "ignore_first_k",
            "trainer.baseline": "baseline",
        }
        for key, name in fields.items():
            if o[name] is not None:
                _set_path(raw, key, o[name])
        for key, value in _filters(o).items():
            _set_path(raw, f"filters.{key}", value)
        if lora is not None:
            _set_path(raw, "policy.lora", {} if lora else None)
        if followup_types is not None:
            _set_path(raw, "trainer.followup_types", [t.strip() for t in followup_types.split(",") if t.strip()])
        for item in followup_weight or []:
            kind, sep, weight = item.partition("=")
            if not sep:
                raise UserInputError(f"--followup-weight {item}: expected TYPE=WEIGHT, e.g. positive_feedback=0.5")
            _set_path(raw, f"trainer.followup_weights.{kind.strip()}", yaml.safe_load(weight))
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserInputError(f"--set {item}: expected KEY=VALUE, e.g. trainer.lr=1e-5")
            from core.yamlio import load_value

            _set_path(raw, key.strip(), load_value(value))  # YAML 1.2 booleans, as for personalize
        if "data" not in raw:
            raise UserInputError("--data is required (a conversation file or hf:NAME), or --config / --resume")
        resolved = _validate_train(raw, config)
        if dry_run:
            console.print(resolved.to_yaml(), highlight=False, markup=False)
            return
        name = run_id and check_run_id(run_id)
        run_dir = results / (name or new_run_id(Path(resolved.data.removeprefix("hf:")).stem, f"train-{resolved.trainer.method}", results))
        if run_dir.exists():
            raise UserInputError(f"{run_dir} already exists; pick another --run-id (or --resume it)")
    with TrainProgress() as progress:
        last = run_training(resolved, run_dir, resume=resume is not None, stop_after=stop_after, on_step=progress.step)
    if progress.task is not None:  # the main process
        console.print(f"checkpoint {last}  ·  steps in {run_dir / 'steps.jsonl'}", highlight=False, soft_wrap=True)


def _validate_train(data: dict, path: Path | None):
    from harness.train import TrainConfig

    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        field, message = pydantic_message(exc)
        raise UserInputError(message, path=path, field=field or None) from None


class TrainProgress:
    """A rich bar over optimizer steps with the last loss and learning rate (main process only)."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
        self.task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def step(self, record, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("train", total=total, completed=record.step - 1, stats="")
        m = record.metrics
        stats = f"loss {m['loss']:+.4f} · grad {m['grad_norm']:.2f} · lr {m['lr']:.2e}" + (f" · skipped: {record.skipped}" if record.skipped else "")
        self.progress.update(self.task, completed=record.step, stats=stats)


# ----------------------------------------------------------------------------------------------------------
# profiles
# ----------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------
models_app = typer.Typer(help="The embedded models and the conversion cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("warm")
def models_warm(model: Annotated[str, typer.Argument(help="Model spec to resolve (GGUF files are converted once).")] = "smollm2-135m") -> None:
    """Convert a model into the safetensors cache now (the first load of a GGUF takes ~30 s, later ones ~3 s)."""
    from core.models import resolve_model
    from judges.relevance import minilm_path

    start = time.perf_counter()
    path = resolve_model(model)
    console.print(f"{model}: {path} ({time.perf_counter() - start:.1f} s)", highlight=False)
    console.print(f"relevance embedder: {minilm_path()}", highlight=False)


# ----------------------------------------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------------------------------------
cache_app = typer.Typer(help="The on-disk cache of LLM calls made by simulators and judges.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


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


# ----------------------------------------------------------------------------------------------------------
# serve
# ----------------------------------------------------------------------------------------------------------
@app.command(rich_help_panel="Models")
def serve(
    model: Annotated[str, typer.Option(help="Policy: 'smollm2-135m' (embedded), a .gguf file, a model or checkpoint folder, or a hub id.")] = "smollm2-135m",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (printed).", min=0, max=65535)] = 8000,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's own choice).", min=1)] = None,
) -> None:
    """Serve a policy as an OpenAI-compatible endpoint (POST /v1/chat/completions, GET /v1/models) until Ctrl-C.

    Use it as an LLM user or judge: --simulator llm --simulator-model openai/NAME --api-base http://HOST:PORT/v1
    """
    from core.policy import Policy, PolicySettings
    from core.runtime import quiet_libraries, set_threads
    from harness.serve import PolicyServer

    if device not in ("auto", "cpu", "cuda"):
        raise UserInputError(f"--device {device}: use auto, cpu or cuda")
    quiet_libraries()
    set_threads(threads)
    policy = Policy.load(PolicySettings(model=model, device=device))  # type: ignore[arg-type]
    policy.model.eval().requires_grad_(False)
    server = PolicyServer(policy, model_name=Path(model).stem if model.endswith(".gguf") else Path(model).name, host=host, port=port, verbose=True)
    typer.echo(f"serving {model} at {server.url} (model name '{server.model_name}'; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ----------------------------------------------------------------------------------------------------------
# eval, regress
# ----------------------------------------------------------------------------------------------------------
CHECKPOINT_HELP = "'smollm2-135m' (embedded), a Hugging Face model folder, a run's checkpoint (RUN/checkpoints/treated-s0), a run (its treated checkpoint) or a LoRA adapter folder."


def _eval_options(backend: str, batch_size: int, limit: Optional[float], device: str, no_cache: bool, judge: Optional[str], judge_model: Optional[str],
                  judge_api_base: Optional[str], judge_api_key_env: Optional[str]):
    from suites.runner import EvalOptions

    if backend not in ("auto", "hf", "vllm"):
        raise UserInputError(f"--backend {backend}: use auto, hf or vllm")
    if device not in ("auto", "cpu", "cuda"):
        raise UserInputError(f"--device {device}: use auto, cpu or cuda")
    override = judge or judge_model or judge_api_base or judge_api_key_env
    settings = _judge_settings(judge, judge_model, judge_api_base, judge_api_key_env, kinds=("llm", "local")) if override else None
    return EvalOptions(backend=backend, batch_size=batch_size, limit=limit, device=device, cache=not no_cache, judge=settings)  # type: ignore[arg-type]


def _evaluate(spec: str, suite_spec: str, options, threads: int) -> Any:
    from core.runtime import quiet_libraries, set_threads
    from suites.runner import evaluate_checkpoint
    from suites.suite import load_suite

    suite = load_suite(suite_spec)
    quiet_libraries()
    set_threads(threads)
    return evaluate_checkpoint(spec, suite, options, say=lambda text: console.print(f"[dim]{spec} · {escape(text)}[/dim]", highlight=False))


def _load_or_evaluate(spec: str, suite: Optional[str], options, threads: int):
    """An eval.json written by `hindsight eval`, or a checkpoint evaluated on ``suite`` (cached)."""
    from suites.results import EvalResult

    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        from core.errors import read_text

        try:
            result = EvalResult.model_validate_json(read_text(path))
        except ValidationError as exc:
            raise UserInputError(f"not an eval result of `hindsight eval` ({exc.errors()[0]['msg']})", path=path) from None
        if suite and Path(suite).stem != result.suite:
            raise UserInputError(f"evaluated on suite '{result.suite}', not '{suite}'", path=path)
        return result
    if not suite:
        raise UserInputError(f"{spec}: give --suite to evaluate a checkpoint (or pass an eval.json written by `hindsight eval`)")
    return _evaluate(spec, suite, options, threads)


def _eval_table(result) -> Table:
    table = Table(title=f"{result.model} on suite {result.suite}" + (f" (limit {result.limit:g})" if result.limit else "")
                  + f" · {result.cache_hits}/{len(result.entries)} entries from the cache")
    for column, justify in (("entry", "left"), ("metric", "left"), ("value", "right"), ("± se", "right"), ("n", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify, no_wrap=column in ("entry", "metric"))  # type: ignore[arg-type]
    for entry in result.entries:
        for name, m in entry.metrics.items():
            table.add_row(entry.name, name + ("" if m.higher_is_better else " ↓"), f"{m.value:.3f}", "–" if m.stderr is None else f"{m.stderr:.3f}",
                          "–" if m.n is None else str(m.n), f"{entry.seconds:.0f}")
    return table


EVAL_PANEL = "Checkpoints"
_BACKEND = Annotated[str, typer.Option(help="lm-eval backend: hf (transformers, CPU or GPU), vllm (CUDA with vLLM installed) or auto (vllm when usable, else hf).")]
_BATCH = Annotated[int, typer.Option(help="Batch size for lm-eval and for answer generation.", min=1)]
_LIMIT = Annotated[Optional[float], typer.Option(help="Items per entry: a count, or a fraction below 1 (lm-eval's --limit). (default: every item)", min=0)]
_DEVICE = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
_NO_CACHE = Annotated[bool, typer.Option("--no-cache", help="Recompute every entry instead of reading cached results.")]
_JUDGE = Annotated[Optional[str], typer.Option(help="Replace the judge of alpaca_eval and usereval entries: llm or local. (default: the suite's)")]
_JUDGE_MODEL = Annotated[Optional[str], typer.Option(help="With --judge llm: a litellm model ('openai/NAME' with --judge-api-base); local: a model spec.")]
_JUDGE_BASE = Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --judge llm, e.g. http://127.0.0.1:8000/v1.")]
_JUDGE_KEY = Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the judge's API key (never stored).")]
_THREADS = Annotated[int, typer.Option(help="torch threads.", min=1)]


@app.command("eval", rich_help_panel=EVAL_PANEL)
def eval_checkpoint(
    checkpoint: Annotated[str, typer.Argument(metavar="CHECKPOINT", help=CHECKPOINT_HELP)],
    suite: Annotated[str, typer.Option("--suite", "-s", help="Suite name (suites/NAME.yaml: quick, default, paper) or path to a suite YAML.")] = "quick",
    out: Annotated[Optional[Path], typer.Option(help="Where to write the results JSON. (default: results/eval/CHECKPOINT-SUITE.json)")] = None,
    backend: _BACKEND = "auto",
    batch_size: _BATCH = 8,
    limit: _LIMIT = None,
    device: _DEVICE = "auto",
    no_cache: _NO_CACHE = False,
    judge: _JUDGE = None,
    judge_model: _JUDGE_MODEL = None,
    judge_api_base: _JUDGE_BASE = None,
    judge_api_key_env: _JUDGE_KEY = None,
    threads: _THREADS = 1,
) -> None:
    """Evaluate a checkpoint on a benchmark suite: each metric's value and standard error, as a table and a JSON file.

    A suite is one YAML file listing lm-eval tasks (by name, or local task folders), AlpacaEval sets (judged by any judge
    backend through alpaca-eval's own evaluate; win rate and length-controlled win rate), UserEval sets and the
    personalization win rate. Entries are cached: an unchanged rerun loads no model and returns at once.

    Examples:

      hindsight eval smollm2-135m --suite quick

      hindsight eval results/RUN/checkpoints/treated-s0 --suite default --judge-model openai/gpt-4o-mini --judge-api-key-env OPENAI_API_KEY

      hindsight eval ./my-adapter --suite paper --backend vllm
    """
    from core.records import write_json

    options = _eval_options(backend, batch_size, limit, device, no_cache, judge, judge_model, judge_api_base, judge_api_key_env)
    result = _evaluate(checkpoint, suite, options, threads)
    path = out or RESULTS / "eval" / f"{_slug(_checkpoint_name(checkpoint))}-{result.suite}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    console.print(_eval_table(result))
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command(rich_help_panel=EVAL_PANEL)
def regress(
    baseline: Annotated[str, typer.Option(help="The reference: a checkpoint (see `eval`) or an eval JSON written by `hindsight eval`.")],
    candidate: Annotated[str, typer.Option(help="The checkpoint under test, or its eval JSON.")],
    suite: Annotated[Optional[str], typer.Option("--suite", "-s", help="Suite to evaluate checkpoints on (not needed when both are eval JSON files).")] = None,
    confidence: Annotated[float, typer.Option(help="Confidence for a change to count as significant (two-sided).", min=0.5, max=0.9999)] = 0.95,
    min_effect: Annotated[float, typer.Option(help="Smallest change that counts, in the metric's units (0.02 = two points of accuracy).", min=0)] = 0.0,
    report: Annotated[Optional[Path], typer.Option(help="Markdown report path. (default: results/regress/CANDIDATE-vs-BASELINE-SUITE.md)")] = None,
    backend: _BACKEND = "auto",
    batch_size: _BATCH = 8,
    limit: _LIMIT = None,
    device: _DEVICE = "auto",
    no_cache: _NO_CACHE = False,
    judge: _JUDGE = None,
    judge_model: _JUDGE_MODEL = None,
    judge_api_base: _JUDGE_BASE = None,
    judge_api_key_env: _JUDGE_KEY = None,
    threads: _THREADS = 1,
) -> None:
    """Regression gate: per metric, candidate − baseline with its standard error and a verdict; exit 1 if any regressed.

    A metric regressed when it got worse by at least --min-effect and the change is significant at --confidence. When both
    runs scored the same items the comparison is paired (standard error of the per-item differences), else the two
    standard errors are combined as independent. Exit code: 1 on a significant regression, 0 otherwise (use it in CI).

    Examples:

      hindsight regress --baseline smollm2-135m --candidate results/RUN/checkpoints/treated-s0 --suite quick

      hindsight regress --baseline base.json --candidate cand.json --min-effect 0.02 --confidence 0.9
    """
    from suites.regress import COLUMNS, cells, markdown
    from suites.regress import regress as compare

    options = _eval_options(backend, batch_size, limit, device, no_cache, judge, judge_model, judge_api_base, judge_api_key_env)
    base = _load_or_evaluate(baseline, suite, options, threads)
    cand = _load_or_evaluate(candidate, suite, options, threads)
    if base.suite != cand.suite:
        raise UserInputError(f"the baseline was evaluated on suite '{base.suite}' and the candidate on '{cand.suite}'")
    result = compare(base, cand, confidence=confidence, min_effect=min_effect)
    if not result.comparisons:
        raise UserInputError("the two results share no metric")
    table = Table(title=f"{cand.model} against {base.model} · suite {base.suite} · {confidence:.0%} confidence, min effect {min_effect:g}")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("baseline", "candidate", "delta ± se", "p") else "left")
    colour = {"regressed": "red", "improved": "green", "unchanged": "dim"}
    for c in result.comparisons:
        row = cells(c)
        table.add_row(*row[:-1], f"[{colour[c.verdict]}]{c.verdict}[/{colour[c.verdict]}]")
    console.print(table)
    path = report or RESULTS / "regress" / f"{_slug(_checkpoint_name(candidate))}-vs-{_slug(_checkpoint_name(baseline))}-{base.suite}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(result, [shlex.join(["hindsight", *sys.argv[1:]])]), encoding="utf-8")
    worse = result.regressed
    console.print(f"[bold red]{len(worse)} regressed[/bold red]: " + ", ".join(f"{c.entry}/{c.metric}" for c in worse) if worse else "[green]no significant regression[/green]")
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if worse else 0)


def _checkpoint_name(spec: str) -> str:
    """A readable file stem for a checkpoint spec: the alias, or the last parts of a path."""
    path = Path(spec)
    parts = [p for p in path.with_suffix("").parts if p not in ("results", "checkpoints", ".", "..", "/", "eval")]
    return "-".join(parts[-2:]) if parts else spec
