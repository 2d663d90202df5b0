"""`hindsight train`: offline SDPO (or SFT) on logged conversations."""

from __future__ import annotations

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
    Filters,
    Languages,
    Limit,
    MaxConversationChars,
    MaxTurnChars,
    MinMessages,
    Schedule,
    TrainMethod,
    plain,
)
from harness.cli.overrides import Overrides, advantage_reference_key, parse_value

# option → TrainConfig key: the options that set one field each
TRAIN_KEYS = {
    "data": "data", "model": "policy.model", "device": "policy.device", "threads": "threads", "save_every": "save_every",
    "method": "trainer.method", "epochs": "trainer.epochs", "steps": "trainer.total_steps", "batch_size": "trainer.batch_size",
    "micro_batch": "trainer.micro_batch", "max_prompt_tokens": "trainer.max_prompt_tokens", "max_completion_tokens": "trainer.max_completion_tokens",
    "lr": "trainer.lr", "schedule": "trainer.schedule", "warmup_ratio": "trainer.warmup_ratio", "ignore_first_k": "trainer.ignore_first_k",
    "advantage_reference": "trainer.advantage_reference",
}


@app.command(rich_help_panel="Experiments")
def train(
    data: Annotated[Optional[str], typer.Option(help=FILE_HELP, rich_help_panel="What")] = None,
    method: Annotated[Optional[TrainMethod], typer.Option(rich_help_panel="What", help=(  # type: ignore[valid-type]
        "sdpo (the off-policy surrogate: the follow-up's hindsight log-ratio weighs each logged token) or sft "
        "(likelihood of the logged answers, the ablation). (default: sdpo)"))] = None,
    model: Annotated[Optional[str], typer.Option(rich_help_panel="What", help=(
        "Policy: 'smollm2-135m' (embedded), a .gguf file, a model folder or a hub id. (default: smollm2-135m)"))] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the tuples. (default: 2, the paper)", min=1, rich_help_panel="Budget")] = None,
    steps: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "The run's length in optimizer steps instead of --epochs; the schedule spans it."))] = None,
    stop_after: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Stop (with a checkpoint) once N steps are done; the schedule still spans the whole run, so --resume continues it."))] = None,
    batch_size: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Tuples per optimizer step over all processes. (default: 8; the paper: 32)"))] = None,
    micro_batch: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", min=1, help=(
        "Tuples per forward pass on one process (gradients accumulate). (default: 4)"))] = None,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(help="Contexts keep their last N tokens. (default: 2048)", min=16,
                                                             rich_help_panel="Budget")] = None,
    max_completion_tokens: Annotated[Optional[int], typer.Option(help="Answers are cut to N tokens. (default: 2048)", min=1, rich_help_panel="Budget")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: 2e-6, the paper)", rich_help_panel="Trainer")] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(  # type: ignore[valid-type]
        help="cosine or constant after the warm-up. (default: cosine)", rich_help_panel="Trainer")] = None,
    warmup_ratio: Annotated[Optional[float], typer.Option(help="Share of steps warming up. (default: 0.05)", rich_help_panel="Trainer")] = None,
    ignore_first_k: Annotated[Optional[int], typer.Option(rich_help_panel="Trainer", min=0, help=(
        "Leave the first k answer tokens out of the SDPO loss. (default: 2)"))] = None,
    advantage_reference: Annotated[Optional[AdvantageReference], typer.Option(rich_help_panel="Trainer", help=(  # type: ignore[valid-type]
        ADVANTAGE_REFERENCE_HELP.replace("the prompt alone", "the history alone") + " (default: plain)"))] = None,
    baseline: Annotated[Optional[AdvantageReference], typer.Option(hidden=True, help="Deprecated: --advantage-reference.")] = None,  # type: ignore
    followup_types: Annotated[Optional[str], typer.Option(rich_help_panel="Trainer", help=(
        "Train only on these follow-up types, comma-separated: new_request, reattempt_with_feedback, reattempt_without_feedback, "
        "positive_feedback (heuristic classifier). (default: all)"))] = None,
    followup_weight: Annotated[Optional[list[str]], typer.Option(rich_help_panel="Trainer", help=(
        "TYPE=W: weight the loss of tuples with this follow-up type (repeatable). (default: 1 each)"))] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--no-lora", rich_help_panel="Trainer", help=(
        "Train a LoRA adapter (r=16) instead of all weights. (default: off)"))] = None,
    max_turn_chars: MaxTurnChars = None,
    max_conversation_chars: MaxConversationChars = None,
    min_messages: MinMessages = None,
    language: Languages = None,
    context_messages: ContextMessages = None,
    limit: Limit = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps (and at the end). (default: 50)", min=1, rich_help_panel="Run")] = None,
    device: Annotated[Optional[Device], typer.Option(  # type: ignore[valid-type]
        help="auto (CUDA when present), cpu or cuda. (default: auto)", rich_help_panel="Run")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per process. (default: 1)", min=1, rich_help_panel="Run")] = None,
    resume: Annotated[Optional[Path], typer.Option(rich_help_panel="Run", help=(
        "Continue the run in this folder from its newest checkpoint (its train.yaml is the config; only --stop-after applies)."))] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", rich_help_panel="Run", help=(
        "Start from a config YAML (e.g. a run's train.yaml); options given here override it."))] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", rich_help_panel="Run", help=(
        "Override any config field: --set trainer.max_grad_norm=1 (repeatable; the value is YAML)."))] = None,
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
    options = dict(locals())
    from harness.cli.progress import TrainProgress
    from harness.runs import check_run_id, new_run_id
    from harness.train import TrainConfig
    from harness.train import train as run_training
    from trainers.offline import OfflineConfig

    if baseline is not None:
        warn("--baseline is deprecated; use --advantage-reference")
        options["advantage_reference"] = advantage_reference or baseline
    options["baseline"] = None
    if resume is not None:
        given = [name for name, value in options.items() if value not in (None, False, RESULTS, resume) and name != "stop_after"]
        if given:
            raise UserInputError(f"--resume takes its config from {resume / 'train.yaml'}; leave out --{given[0].rstrip('_').replace('_', '-')}")
        if not (resume / "train.yaml").is_file():
            raise UserInputError("not a training run folder (no train.yaml)", path=resume)
        resolved, run_dir = Overrides(resume / "train.yaml").validate(TrainConfig), resume
    else:
        overrides = Overrides(config)
        for name, key in TRAIN_KEYS.items():
            if options[name] is not None:
                if key == "trainer.advantage_reference":
                    key = advantage_reference_key(OfflineConfig, "trainer")
                overrides.set(key, plain(options[name]), "--" + name.replace("_", "-"))
        filters = Filters(max_turn_chars, max_conversation_chars, min_messages, language, context_messages, limit)
        for key, value in filters.given().items():
            overrides.set(f"filters.{key}", value, "--" + {"languages": "language", "max_conversations": "limit"}.get(key, key).replace("_", "-"))
        if lora is not None:
            overrides.set("policy.lora", {} if lora else None, "--lora" if lora else "--no-lora")
        if followup_types is not None:
            overrides.set("trainer.followup_types", [t.strip() for t in followup_types.split(",") if t.strip()], f"--followup-types {followup_types}")
        for item in followup_weight or []:
            kind, sep, weight = item.partition("=")
            if not sep or not kind.strip():
                raise UserInputError(f"--followup-weight {item}: expected TYPE=WEIGHT, e.g. positive_feedback=0.5")
            overrides.set(f"trainer.followup_weights.{kind.strip()}", parse_value(weight, f"--followup-weight {item}"), f"--followup-weight {item}")
        overrides.apply_sets(set_)
        if "data" not in overrides.data:
            raise UserInputError("--data is required (a conversation file or hf:NAME), or --config / --resume")
        resolved = overrides.validate(TrainConfig)
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
