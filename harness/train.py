"""`hindsight train`: offline SDPO (or SFT) on logged conversations, on one process or several (accelerate), resumable.

``results/<run-id>/``
    ``train.yaml``      the resolved TrainConfig
    ``data.json``       ImportStats of the conversations it trained on (every skipped record with its line)
    ``steps.jsonl``     one OfflineStepRecord per optimizer step
    ``checkpoints/step-NNNNNN/``  the model (safetensors + tokenizer), ``optimizer.safetensors`` + ``optimizer.json``
                        (the AdamW state, no pickle) and ``trainer_state.json``; written atomically every
                        ``save_every`` steps and at the end, the last ``keep_checkpoints`` kept

The data order is a function of (seed, epoch) and the learning rate a function of the step, so a run resumed from a
checkpoint takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from core.conversations import ImportResult, ImportSettings, import_stats, load_tuples
from core.errors import UserInputError
from core.policy import Policy, PolicySettings
from core.records import OfflineStepRecord, append_jsonl, read_jsonl
from core.runtime import quiet_libraries, set_threads
from core.state_io import atomic_folder, load_state, save_state
from judges.followup import build_classifier
from trainers.offline import OfflineConfig, OfflineTrainer

CHECKPOINT_PREFIX = "step-"


class TrainConfig(BaseModel):
    """Everything that defines an offline training run (written to train.yaml; `hindsight train --config` reads it)."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="conversation file (JSONL) or hf:NAME[:SPLIT]")
    policy: PolicySettings = Field(default_factory=PolicySettings)
    filters: ImportSettings = Field(default_factory=ImportSettings)
    trainer: OfflineConfig = Field(default_factory=OfflineConfig)
    classifier: Literal["heuristic"] = Field("heuristic", description="follow-up type classifier (judges/followup.py; offline runs use the heuristic)")
    save_every: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept (the newest)")
    threads: int | None = Field(1, ge=1, description="torch threads per process")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


class Plan(BaseModel):
    """How the tuples map to steps: global batches of ``batch`` tuples in a per-epoch shuffled order."""

    tuples: int
    batch: int
    steps_per_epoch: int
    total_steps: int

    def batch_indices(self, step: int, seed: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = list(range(self.tuples))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        return order[position * self.batch : (position + 1) * self.batch]


def prepare_data(config: TrainConfig) -> ImportResult:
    """The run's tuples (follow-up types labelled, kept by ``trainer.followup_types``); UserInputError when too few."""
    data = load_tuples(config.data, config.filters, build_classifier(config.classifier))
    wanted = config.trainer.followup_types
    if wanted is not None:
        data.tuples = [t for t in data.tuples if t.followup_type in wanted]
    if len(data.tuples) < config.trainer.batch_size:
        raise UserInputError(
            f"{len(data.tuples)} interaction tuples, fewer than one batch of {config.trainer.batch_size} "
            f"({data.records} records, {len(data.skipped)} skipped: `hindsight data stats {config.data}` lists why); lower --batch-size",
            path=None if config.data.startswith("hf:") else config.data,
        )
    return data


def fingerprint(data: ImportResult) -> str:
    """Identifies the tuple list (a resumed run must train on the same one)."""
    key = "\n".join(f"{t.conversation}:{t.turn}:{len(t.answer)}:{len(t.followup)}" for t in data.tuples)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def latest_checkpoint(run_dir: Path) -> Path | None:
    folders = [p for p in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").is_file() and ".tmp-" not in p.name]
    return max(folders, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, stop_after: int | None = None,
          on_step: Callable[[OfflineStepRecord, int], None] | None = None) -> Path:
    """Run (or resume) the offline training in ``run_dir``; returns the last checkpoint. Every process of an
    ``accelerate launch`` calls this; only the main one writes files."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=config.policy.device == "cpu")
    quiet_libraries()
    set_threads(config.threads)
    cfg = config.trainer
    world = accelerator.num_processes
    if cfg.batch_size % world:
        raise UserInputError(f"--batch-size {cfg.batch_size} must be a multiple of the {world} processes")
    data = prepare_data(config)
    steps_per_epoch = len(data.tuples) // cfg.batch_size
    plan = Plan(tuples=len(data.tuples), batch=cfg.batch_size, steps_per_epoch=steps_per_epoch, total_steps=cfg.total_steps or cfg.epochs * steps_per_epoch)
    print_ = accelerator.print
    print_(f"{len(data.tuples)} tuples, {plan.total_steps} steps of {cfg.batch_size} on {world} process(es)"
           + (f" ({accelerator.distributed_type.value}, backend {accelerator.state.backend})" if world > 1 else ""))

    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise UserInputError(f"{run_dir}: no checkpoint to resume from (checkpoints/{CHECKPOINT_PREFIX}*)")
    settings = config.policy.model_copy(update={"model": str(checkpoint)}) if checkpoint else config.policy
    policy = Policy.load(settings)
    trainer = OfflineTrainer(policy, cfg, accelerator)
    start = 0
    if checkpoint is not None:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if not state.get("resumable", True):
            raise UserInputError("this checkpoint holds no optimizer state (an FSDP / DeepSpeed run): it cannot be resumed", path=checkpoint)
        if state["data"] != fingerprint(data):
            raise UserInputError(f"the tuples of {config.data} differ from those {run_dir} was trained on (was the file or a filter changed?)")
        trainer.load_state_dict(load_state(checkpoint, "optimizer", accelerator.device))
        start = state["step"]
        print_(f"resuming {run_dir} from {checkpoint.name} (step {start} of {plan.total_steps})")

    if accelerator.is_main_process:
        if checkpoint is None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "train.yaml").write_text(config.to_yaml(), encoding="utf-8")
            (run_dir / "data.json").write_text(import_stats(data, config.classifier).model_dump_json(indent=2), encoding="utf-8")
        _truncate_steps(run_dir / "steps.jsonl", start)
    end = min(plan.total_steps, stop_after) if stop_after else plan.total_steps
    per_process = cfg.batch_size // world
    last = checkpoint
    for step in range(start, end):
        started = time.perf_counter()
        indices = plan.batch_indices(step, cfg.seed)[accelerator.process_index * per_process : (accelerator.process_index + 1) * per_process]
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout, if the model has any, replays on resume
        metrics, skipped = trainer.step([data.tuples[i] for i in indices], step, plan.total_steps, cfg.batch_size)
        record = OfflineStepRecord(method=cfg.method, step=step + 1, epoch=round((step + 1) / steps_per_epoch, 4), tuples=(step + 1) * cfg.batch_size,
                                   processes=world, metrics=metrics, seconds=round(time.perf_counter() - started, 3), skipped=skipped)
        if accelerator.is_main_process:
            append_jsonl(run_dir / "steps.jsonl", record)
            if on_step is not None:
                on_step(record, plan.total_steps)
        if (step + 1) % config.save_every == 0 or step + 1 == end:
            last = save_checkpoint(run_dir, step + 1, policy, trainer, data, config, accelerator)
    return last or run_dir


def save_checkpoint(run_dir: Path, step: int, policy: Policy, trainer: OfflineTrainer, data: ImportResult, config: TrainConfig, accelerator) -> Path:
    """Write checkpoints/step-NNNNNN atomically (main process), drop all but the newest ``keep_checkpoints``.

    The weights are gathered from every process first (a no-op for DDP; a full state dict under FSDP / DeepSpeed).
    Sharded optimizer state (FSDP / DeepSpeed) is not gathered: such checkpoints hold the model only and cannot be resumed."""
    from accelerate.utils import DistributedType

    target = run_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"
    weights = accelerator.get_state_dict(trainer.scorer)  # collective under FSDP / DeepSpeed
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if accelerator.is_main_process:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(target) as tmp:
            policy.model.save_pretrained(tmp, state_dict={k.removeprefix("model."): v for k, v in weights.items()}, safe_serialization=True)
            policy.tokenizer.save_pretrained(tmp)
            if not sharded:
                save_state(tmp, "optimizer", trainer.state_dict())
            state = {"step": step, "data": fingerprint(data), "tuples": len(data.tuples), "processes": accelerator.num_processes,
                     "method": config.trainer.method, "resumable": not sharded}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        kept = sorted((p for p in target.parent.glob(f"{CHECKPOINT_PREFIX}*") if ".tmp-" not in p.name), key=lambda p: p.name)
        for old in kept[: -config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def _truncate_steps(path: Path, done: int) -> None:
    """Keep the step records up to ``done`` (a resumed run rewrites the steps after its checkpoint)."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path, OfflineStepRecord) if r.step <= done]
    path.write_text("".join(r.model_dump_json() + "\n" for r in kept), encoding="utf-8")


def load_steps(run_dir: Path) -> list[OfflineStepRecord]:
    return list(read_jsonl(run_dir / "steps.jsonl", OfflineStepRecord))
