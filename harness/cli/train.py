"""`hindsight train`: offline SDPO (or SFT) on logged conversations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import UserInputError
from harness.cli.base import RESULTS, app, console, warn
from harness.cli.options import (
    ADVANTAGE_REFERENCE_HELP,
    FILE_HELP,
    AdvantageReference,
    ContextMessages,
    Device,
    Languages,
    Limit,
    MaxConversationChars,
    MaxTurnChars,
    MinMessages,
    Schedule,
    TrainMethod,
    config_field,
    flag,
    with_options,
)
from harness.cli.overrides import from_options
from harness.overrides import Overrides, parse_value


@dataclass(frozen=True)
class TrainOptions:
    """The options of `hindsight train`, typed; ``key`` metadata: the TrainConfig key each one sets (None: handled by name)."""

    data: Annotated[Optional[str], typer.Option(help=FILE_HELP, rich_help_panel="What")] = config_field("data")
    method: Annotated[Optional[TrainMethod], typer.Option(rich_help_panel="What", help=(  # type: ignore[valid-type]
        "sdpo (the off-policy surrogate: the follow-up's hindsight log-ratio weighs each logged token) or sft "
        "(likelihood of the logged answers, the ablation). (default: sdpo)"))] = config_field("trainer.method")
    model: Annotated[Optional[str], typer.Option(rich_help_panel="What", help=(
        "Policy: 'smollm2-135m' (embedded), a .gguf file, a model folder or a hub id. (default: smollm2-135m)"))] = config_field("policy.model")
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the tuples. (default: 2, the paper)", min=1, rich_help_panel="Budget")] = (
        config_field("trainer.epochs"))
    steps: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "The run's length in optimizer steps instead of --epochs; the schedule spans it."))] = config_field("trainer.total_steps")
    stop_after: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Stop (with a checkpoint) once N steps are done; the schedule still spans the whole run, so --resume continues it."))] = config_field()
    batch_size: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Tuples per optimizer step over all processes. (default: 8; the paper: 32)"))] = config_field("trainer.batch_size")
    micro_batch: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Tuples per forward pass on one process (gradients accumulate). (default: 4)"))] = config_field("trainer.micro_batch")
    max_prompt_tokens: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=16, help=(
        "Contexts keep their last N tokens. (default: 2048)"))] = config_field("trainer.max_prompt_tokens")
    max_completion_tokens: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Answers are cut to N tokens. (default: 2048)"))] = config_field("trainer.max_completion_tokens")
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: 2e-6, the paper)", rich_help_panel="Trainer")] = (
        config_field("trainer.lr"))
    schedule: Annotated[Optional[Schedule], typer.Option(  # type: ignore[valid-type]
        help="cosine or constant after the warm-up. (default: cosine)", rich_help_panel="Trainer")] = config_field("trainer.schedule")
    warmup_ratio: Annotated[Optional[float], typer.Option(help="Share of steps warming up. (default: 0.05)", rich_help_panel="Trainer")] = (
        config_field("trainer.warmup_ratio"))
    ignore_first_k: Annotated[Optional[int], typer.Option(rich_help_panel="Trainer", min=0, help=(
        "Leave the first k answer tokens out of the SDPO loss. (default: 2)"))] = config_field("trainer.ignore_first_k")
    advantage_reference: Annotated[Optional[AdvantageReference], typer.Option(rich_help_panel="Trainer", help=(  # type: ignore[valid-type]
        ADVANTAGE_REFERENCE_HELP.replace("the prompt alone", "the history alone") + " (default: plain)"))] = (
        config_field("trainer.advantage_reference"))
    baseline: Annotated[Optional[AdvantageReference], typer.Option(hidden=True, help="Deprecated: --advantage-reference.")] = (  # type: ignore
        config_field())
    followup_types: Annotated[Optional[str], typer.Option(rich_help_panel="Trainer", help=(
        "Train only on these follow-up types, comma-separated: new_request, reattempt_with_feedback, reattempt_without_feedback, "
        "positive_feedback (heuristic classifier). (default: all)"))] = config_field()
    followup_weight: Annotated[Optional[list[str]], typer.Option(rich_help_panel="Trainer", help=(
        "TYPE=W: weight the loss of tuples with this follow-up type (repeatable). (default: 1 each)"))] = config_field()
    lora: Annotated[Optional[bool], typer.Option("--lora/--no-lora", rich_help_panel="Trainer", help=(
        "Train a LoRA adapter (r=16) instead of all weights. (default: off)"))] = config_field()
    max_turn_chars: MaxTurnChars = config_field("filters.max_turn_chars")
    max_conversation_chars: MaxConversationChars = config_field("filters.max_conversation_chars")
    min_messages: MinMessages = config_field("filters.min_messages")
    language: Languages = config_field("filters.languages")
    context_messages: ContextMessages = config_field("filters.context_messages")
    limit: Limit = config_field("filters.max_conversations")
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps (and at the end). (default: 50)", min=1, rich_help_panel="Run")] = (
        config_field("save_every"))
    device: Annotated[Optional[Device], typer.Option(  # type: ignore[valid-type]
        help="auto (CUDA when present), cpu or cuda. (default: auto)", rich_help_panel="Run")] = config_field("policy.device")
    threads: Annotated[Optional[int], typer.Option(help="torch threads per process. (default: 1)", min=1, rich_help_panel="Run")] = config_field("threads")
    resume: Annotated[Optional[Path], typer.Option(rich_help_panel="Run", help=(
        "Continue the run in this folder from its newest checkpoint (its train.yaml is the config; only --stop-after applies)."))] = config_field()
    config: Annotated[Optional[Path], typer.Option("--config", "-c", rich_help_panel="Run", help=(
        "Start from a config YAML (e.g. a run's train.yaml); options given here override it."))] = config_field()
    set_: Annotated[Optional[list[str]], typer.Option("--set", rich_help_panel="Run", help=(
        "Override any config field: --set trainer.max_grad_norm=1 (repeatable; the value is YAML)."))] = config_field()
    run_id: Annotated[Optional[str], typer.Option(help="Folder name under --results. (default: date-train-METHOD-DATA)", rich_help_panel="Run")] = (
        config_field())
    results: Annotated[Path, typer.Option(help="Where runs are written.", rich_help_panel="Run")] = config_field(default=RESULTS)
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.", rich_help_panel="Run")] = config_field(default=False)

    def given(self) -> list[str]:
        """The options given (not at their defaults), as flags."""
        return [flag(f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]


def train_overrides(o: TrainOptions) -> Overrides:
    """train's options over its --config, as config data."""
    out = from_options(o)
    if o.lora is not None:
        out.set("policy.lora", {} if o.lora else None, "--lora" if o.lora else "--no-lora")
    if o.followup_types is not None:
        out.set("trainer.followup_types", [t.strip() for t in o.followup_types.split(",") if t.strip()], f"--followup-types {o.followup_types}")
    for item in o.followup_weight or []:
        kind, sep, weight = item.partition("=")
        if not sep or not kind.strip():
            raise UserInputError(f"--followup-weight {item}: expected TYPE=WEIGHT, e.g. positive_feedback=0.5")
        out.set(f"trainer.followup_weights.{kind.strip()}", parse_value(weight, f"--followup-weight {item}"), f"--followup-weight {item}")
    out.apply_sets(o.set_)
    return out


@app.command(rich_help_panel="Experiments")
@with_options(TrainOptions)
def train(options: TrainOptions) -> None:
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
    from harness.cli.progress import TrainProgress
    from harness.runs import check_run_id, new_run_id
    from harness.train import TrainConfig
    from harness.train import train as run_training

    o = options
    if o.baseline is not None:
        warn("--baseline is deprecated; use --advantage-reference")
        o = dataclasses.replace(o, baseline=None, advantage_reference=o.advantage_reference or o.baseline)
    if o.resume is not None:
        given = [f for f in o.given() if f not in ("--resume", "--stop-after", "--results")]
        if given:
            raise UserInputError(f"--resume takes its config from {o.resume / 'train.yaml'}; leave out {', '.join(given)}")
        if not (o.resume / "train.yaml").is_file():
            raise UserInputError("not a training run folder (no train.yaml)", path=o.resume)
        resolved, run_dir = Overrides(o.resume / "train.yaml").validate(TrainConfig), o.resume
    else:
        overrides = train_overrides(o)
        if "data" not in overrides.data:
            raise UserInputError("--data is required (a conversation file or hf:NAME), or --config / --resume")
        resolved = overrides.validate(TrainConfig)
        if o.dry_run:
            console.print(resolved.to_yaml(), highlight=False, markup=False)
            return
        name = o.run_id and check_run_id(o.run_id)
        run_dir = o.results / (name or new_run_id(Path(resolved.data.removeprefix("hf:")).stem, f"train-{resolved.trainer.method}", o.results))
        if run_dir.exists():
            raise UserInputError(f"{run_dir} already exists; pick another --run-id (or --resume it)")
    with TrainProgress() as progress:
        last = run_training(resolved, run_dir, resume=o.resume is not None, stop_after=o.stop_after, on_step=progress.step)
    if progress.task is not None:  # the main process
        console.print(f"checkpoint {last}  ·  steps in {run_dir / 'steps.jsonl'}", highlight=False, soft_wrap=True)
