"""The `hindsight` command line."""

from __future__ import annotations

import functools
import inspect
import re
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from harness.errors import RunError, UserInputError, one_line

if TYPE_CHECKING:
    from harness.config import JudgeSettings, RunConfig
    from harness.records import WinRateRecord

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
    prompts: Annotated[Optional[str], typer.Option(help="'builtin', a JSONL file of {\"prompt\": ...} (optional \"split\": train|heldout), or hf:NAME.", rich_help_panel="What")] = None,
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

    config: Path | None = o["config"]
    data: dict[str, Any] = {}
    if config is not None:
        from harness.yamlio import read_yaml

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
    if o["trust_remote_code"]:
        _set_path(data, "policy.trust_remote_code", True)
    _set_llm(data, "simulator", o["simulator"], o["simulator_model"], o["api_base"], o["api_key_env"], default_kind="scripted")
    _set_llm(data, "judge", o["judge"], o["judge_model"], o["judge_api_base"], o["judge_api_key_env"], default_kind="llm")
    if o["rlhi_model"] or o["rlhi_api_base"] or o["rlhi_api_key_env"]:
        llm = {"model": o["rlhi_model"] or "openai/local", "api_base": o["rlhi_api_base"], "api_key_env": o["rlhi_api_key_env"]}
        _set_path(data, "rlhi.llm", {k: v for k, v in llm.items() if v is not None})
    for item in o["set_"] or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set {item}: expected KEY=VALUE, e.g. trainer.lr=1e-5")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UserInputError(f"--set {item}: not a YAML value ({getattr(exc, 'problem', None) or 'unreadable'})") from None
        _set_path(data, key.strip(), value)
    resolved = _validate(data, config)
    if adjust is not None:
        resolved = _validate({**resolved.model_dump(mode="json"), **adjust(resolved)}, config)
    from harness.prompts import load_prompts
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
    with LiveProgress(resolved) as progress:
        info = run_personalize(resolved, run_dir, progress.handle, command=shlex.join(["hindsight", *sys.argv[1:]]))
    console.print(f"finished in {info.seconds:.0f} s")
    show(str(run_dir), results=results)


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
    _launch(options, lambda c: {"flip_at": flip_at or c.flip_at or c.interactions // 2 // c.batch_size * c.batch_size})


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
            self.progress.update(self.tasks[key], stats="loading")
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
    from harness.records import RunInfo
    from harness.report import by_preference, curves, load_evals

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
    from harness.records import RunInfo
    from harness.report import METRICS, by_preference, final_table, load_evals, side_effects, verdict

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
    for name in ("curve.png", "summary.md", "interactions.jsonl"):
        if (folder / name).exists():
            console.print(f"  {folder / name}", highlight=False)


@app.command(rich_help_panel="Runs")
def compare(
    runs_: Annotated[list[str], typer.Argument(metavar="RUN...", help="Run ids or paths.")],
    results: Annotated[Path, typer.Option(help="Where runs are written.")] = RESULTS,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a markdown table instead.")] = False,
) -> None:
    """Compare runs side by side: the config fields that differ, then each trained arm's last evaluation."""
    from harness.report import METRICS, by_preference, final_table, load_evals

    folders = [_run_dir(r, results) for r in runs_]
    configs = [_flatten(yaml.safe_load((f / "config.yaml").read_text())) for f in folders]
    differ = [k for k in dict.fromkeys(k for c in configs for k in c) if len({repr(c.get(k)) for c in configs}) > 1 and k != "seed"]
    header = ["run", *differ, "arm", "n", *(label for _, label, _ in METRICS)]
    rows = []
    for folder, config in zip(folders, configs):
        for name, evals in by_preference(load_evals(folder)):
            for arm, x, cells in final_table(evals):
                if arm in ("treated", "control"):
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
    from harness.llm_client import LLMClient, LLMSettings
    from harness.records import usage_records
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
    from harness.config import JudgeSettings
    from harness.llm_client import LLMSettings

    kind = kind or ("llm" if model or api_base else kinds[0])
    if kind not in kinds:
        raise UserInputError(f"--judge {kind}: use " + ", ".join(kinds[:-1]) + f" or {kinds[-1]}")
    llm = LLMSettings(model=model or "openai/local", api_base=api_base, api_key_env=api_key_env) if kind == "llm" else None
    return JudgeSettings(kind=kind, llm=llm, model=(model or "smollm2-135m") if kind == "local" else None)  # type: ignore[arg-type]


def _slug(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def _win_rate_table(title: str, label: str, results: dict[str, WinRateRecord]) -> Table:
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
    from harness.records import usage_records, write_json
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
# profiles
# ----------------------------------------------------------------------------------------------------------
@profiles_app.command("list")
def profiles_list() -> None:
    """Every known profile (first match on the search path wins), with its checks and opposite."""
    from simulators.profile import available_profiles, load_profile_file, search_path

    table = Table(title="profiles (search path: " + ", ".join(str(p) for p in search_path()) + ")")
    for column in ("name", "opposite", "checks", "file"):
        table.add_column(column, overflow="fold")
    for name, path in available_profiles().items():
        profile = load_profile_file(path)
        table.add_row(name, profile.opposite or "–", "; ".join(c.describe() for c in profile.checks) or "– (LLM users only)", str(path))
    console.print(table)


@profiles_app.command("show")
def profiles_show(name: Annotated[str, typer.Argument(help="Profile name or path.")]) -> None:
    """Print one profile: persona text, checks with their follow-ups, satisfied replies."""
    from simulators.profile import load_profile

    profile = load_profile(name)
    console.print(f"[bold]{profile.name}[/bold]" + (f"  (opposite: {profile.opposite})" if profile.opposite else ""))
    console.print(profile.description, highlight=False)
    for check in profile.checks:
        console.print(f"\n[cyan]{check.describe()}[/cyan]")
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
        console.print(f"[green]ok[/green] {path} ({profile.name}, {len(profile.checks)} checks)")


# ----------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------
models_app = typer.Typer(help="The embedded models and the conversion cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("warm")
def models_warm(model: Annotated[str, typer.Argument(help="Model spec to resolve (GGUF files are converted once).")] = "smollm2-135m") -> None:
    """Convert a model into the safetensors cache now (the first load of a GGUF takes ~30 s, later ones ~3 s)."""
    from harness.models import resolve_model
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
    from harness.llm_client import ResponseCache

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
    from harness.llm_client import ResponseCache

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
    from harness.policy import Policy, PolicySettings
    from harness.runtime import quiet_libraries, set_threads
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
