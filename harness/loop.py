"""The online personalization loop.

Per arm and seed: for N interactions in batches, draw training prompts → the policy answers (sampled) → the
simulated user replies → one trainer update; every K interactions, evaluate on the held-out prompts.
Before the arms start, the untrained model is evaluated once (the curves' x = 0 point and the reference
answers for relevance and for the judge's win rates), and, with ``oracle``, once more with the profile in its
system prompt. The control arm is identical except that its user always sends a neutral message.
With ``flip_at`` the treated arm's user switches to the profile's opposite there, and every evaluation scores both;
with ``continual`` preferences are added to the user's every ``stage`` interactions, and every evaluation scores each.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import platform
import queue
import sys
import time
import traceback
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from pathlib import Path

from core.engine import Engine, HFEngine, SamplingParams
from core.errors import RunError, UserInputError
from core.interaction import Interaction
from core.llm_client import LLMUsage
from core.policy import Policy
from core.prompts import load_prompts
from core.records import EvalRecord, InteractionRecord, RunInfo, SampleRecord, TrainRecord, append_jsonl, now, usage_records, write_json
from core.runtime import die_with_parent, peak_memory_gb, quiet_libraries, seed_everything, set_threads, sigterm_as_interrupt
from core.text import Embedder
from harness.checkpoint import (
    ArmCheckpoints,
    ArmState,
    committed_states,
    load_trainable_weights,
    repair_logs,
    rng_state,
    set_rng_state,
    trainable_weights,
    write_atomic,
)
from harness.config import RunConfig
from harness.evaluate import Evaluator, Preference, eval_system, oracle_system
from harness.schedule import Schedule, build_schedule
from harness.signals import write_signals
from judges import build_judge, llm_usage
from simulators import build_simulator
from simulators.neutral import NeutralSimulator, load_pool
from trainers import TrainerInputs
from trainers import build_trainer as build_method
from trainers.base import StepResult, Trainer

Event = dict
Sink = Callable[[Event], None]
# the untrained model's (and oracle's) evaluations are logged once this exists; runs before the rename wrote the old name
UNTRAINED = Path("state") / "untrained.json"
UNTRAINED_OLD = Path("state") / "baseline.json"


@dataclass(frozen=True)
class ArmJob:
    config: RunConfig
    run_dir: Path
    arm: str
    seed: int
    reference: tuple[str, ...]
    schedule: Schedule


def build_trainer(config: RunConfig, schedule: Schedule, policy: Policy, engine: Engine, *, arm: str, seed: int,
                  neutral_pool: Sequence[str]) -> Trainer:
    """The trainer of ``config.method`` for one arm (trainers.METHODS). Trainers may read the simulated user's profile at
    each interaction (RLHI's persona source ``profile``, the rules reward) on a treated arm; a control arm's neutral user has none."""

    def user_at(index: int):
        return schedule.user_at(index) if arm != "control" else None

    return build_method(TrainerInputs(config=config, policy=policy, engine=engine, arm=arm, seed=seed, neutral_pool=neutral_pool, user_at=user_at))


def personalize(config: RunConfig, run_dir: Path, sink: Sink, command: str = "", resume: bool = False, schedule: Schedule | None = None,
                arms: Collection[str] | None = None) -> RunInfo:
    """Run every arm of ``config`` into ``run_dir`` and write the report. ``sink`` receives progress events.

    With ``resume``, ``run_dir`` holds a run that stopped (killed, failed): its log is repaired back to the arms'
    committed states and each unfinished arm continues from its own, exactly as if the run had not stopped.
    ``schedule``: the run's schedule when the caller built it already (``build_schedule(config)``); the profiles are
    read once per run, and every arm gets this schedule.
    ``arms``: train only these arms (None: all). A run of some arms only (a sweep's shared control) writes no report.
    """
    from harness.report import write_report

    schedule = schedule or build_schedule(config)
    config = config.with_budgets(max(p.min_words() for p in schedule.scored))  # no-op when the caller filled the budgets
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        old = run_dir / "run.json"  # missing when the run was killed right after writing its config
        info = RunInfo.model_validate_json(old.read_text(encoding="utf-8")) if old.is_file() else RunInfo(run_id=run_dir.name, versions=_versions())
        info = info.model_copy(update={"status": "running", "error": None, "finished": None, "resumed": [*info.resumed, now()]})
        _repair(config, run_dir, sink)
    else:
        (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        info = RunInfo(run_id=run_dir.name, versions=_versions(), command=command)
    write_json(run_dir / "run.json", info)
    start = time.perf_counter()
    usage: dict[str, LLMUsage] = {}

    def collect(event: Event) -> None:
        if event["type"] == "usage":
            usage[event["role"]] = usage.get(event["role"], LLMUsage()) + LLMUsage(**event["usage"])
        sink(event)

    try:
        with sigterm_as_interrupt():  # a scheduler's stop, as Ctrl-C: the run is recorded as stopped, the workers go with it
            reference = _untrained_evals(config, schedule, run_dir, collect)
            states = committed_states(run_dir, config.arms())
            for (arm, seed), state in states.items():
                if state is not None and state.finished:
                    sink({"type": "start", "arm": arm, "seed": seed, "total": config.interactions, "done": state.done})
                    sink({"type": "done", "arm": arm, "seed": seed})
            jobs = [ArmJob(config, run_dir, arm, seed, reference, schedule) for (arm, seed), state in states.items()
                    if (state is None or not state.finished) and (arms is None or arm in arms)]
            _run_jobs(jobs, config.jobs, collect)
            info.llm_usage = usage_records(usage)
            write_json(run_dir / "run.json", info)  # the report quotes the usage
            if arms is None:
                write_report(run_dir)
            info.status = "finished"
    except BaseException as exc:
        info.status, info.error = "failed", "interrupted (Ctrl-C or SIGTERM)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        info.finished, info.seconds = now(), round(time.perf_counter() - start, 1)
        info.device = info.device or _device_name(config)
        info.llm_usage = usage_records(usage)
        write_json(run_dir / "run.json", info)
    return info


def _repair(config: RunConfig, run_dir: Path, sink: Sink) -> None:
    """Cut the log back to what the committed states cover (a torn last line included) and say what was done."""
    states = committed_states(run_dir, config.arms())
    repair = repair_logs(run_dir, states, untrained_done=_untrained_marker(run_dir).is_file())
    where = ", ".join(f"{arm}/s{seed} " + ("finished" if s and s.finished else f"from {s.done}" if s else "from 0") for (arm, seed), s in states.items())
    sink({"type": "phase", "text": f"resuming {run_dir.name}: {where}; {repair.describe()}"})


def _untrained_marker(run_dir: Path) -> Path:
    """state/untrained.json, or state/baseline.json in a run written before the rename (so that it still resumes)."""
    old = run_dir / UNTRAINED_OLD
    return old if old.is_file() and not (run_dir / UNTRAINED).is_file() else run_dir / UNTRAINED


def _untrained_evals(config: RunConfig, schedule: Schedule, run_dir: Path, sink: Sink) -> tuple[str, ...]:
    """Evaluate the untrained model (and the oracle); return its answers as the relevance reference.

    Once logged, the answers are kept in state/untrained.json, and a resumed run reads them from there.
    """
    marker = _untrained_marker(run_dir)
    if marker.is_file():
        return tuple(json.loads(marker.read_text(encoding="utf-8"))["reference"])
    quiet_libraries()
    set_threads(config.threads * min(config.jobs, len(config.arms())) if config.threads else None)
    seed_everything(config.seed)
    prompts = load_prompts(config.prompts)
    policy = Policy.load(config.policy)
    engine = HFEngine(policy, batch_size=config.eval.batch_size)
    preferences = _preferences(config, schedule)
    evaluator = Evaluator(preferences, prompts.heldout, config.eval, Embedder(device=policy.device))
    sink({"type": "phase", "text": f"evaluating the untrained model on {len(prompts.heldout)} held-out prompts"})
    records, samples = evaluator.run(policy, engine, arm="initial", seed=config.seed, interactions=0)
    _write_eval(run_dir, records, samples, sink)
    reference = tuple(s.answer for s in samples[: len(prompts.heldout)])
    evaluator.set_reference(reference)  # the oracle's relevance is judged like the trained arms'
    if config.oracle:
        sink({"type": "phase", "text": "evaluating the in-context oracle (profile in the system prompt) and judging it against the untrained model"})
        for preference in preferences:
            system = oracle_system(preference.profile, config.policy.system_prompt)
            oracle, oracle_samples = evaluator.run(policy, engine, arm="oracle", seed=config.seed, interactions=0, system=system,
                                                   against=reference, preferences=[preference])
            _write_eval(run_dir, oracle, oracle_samples, sink)
    _report_usage(sink, judge=[p.judge for p in preferences])
    marker = run_dir / UNTRAINED
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, json.dumps({"reference": reference}))
    return reference


def _preferences(config: RunConfig, schedule: Schedule) -> list[Preference]:
    """The preferences every evaluation scores, each with its judge; named in the records when there are several."""
    scored = schedule.scored
    return [Preference(p, build_judge(config.judge, p, device=config.policy.device), p.name if len(scored) > 1 else None) for p in scored]


def _report_usage(sink: Sink, **components: list) -> None:
    """Send what the LLMs behind these simulators and judges spent in this process, per role."""
    for role, items in components.items():
        spent = [u for u in map(llm_usage, items) if u is not None]
        if spent:
            sink({"type": "usage", "role": role, "usage": dataclasses.asdict(sum(spent, LLMUsage()))})


def _write_eval(run_dir: Path, records: list[EvalRecord], samples: list[SampleRecord], sink: Sink) -> None:
    for record in records:
        append_jsonl(run_dir / "metrics.jsonl", record)
    for sample in samples:
        append_jsonl(run_dir / "samples.jsonl", sample)
    for record in records:
        sink({"type": "eval", "arm": record.arm, "seed": record.seed, "record": record.model_dump()})


def _run_jobs(jobs: list[ArmJob], workers: int, sink: Sink) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            run_arm(job, sink)
        return
    context = multiprocessing.get_context("spawn")
    parent = os.getpid()  # the arm workers and the event queue's process die with this one, even by SIGKILL: no orphan writes on
    manager = SyncManager(ctx=context)
    manager.start(die_with_parent, (parent,))
    with manager:
        events = manager.Queue()  # type: ignore[attr-defined]
        pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context, initializer=die_with_parent, initargs=(parent,))
        try:
            futures = [pool.submit(_run_arm_in_worker, job, events) for job in jobs]
            pending = set(futures)
            while pending:
                _drain(events, sink, timeout=0.2)
                done = {f for f in pending if f.done()}
                for future in done:
                    future.result()  # re-raise a worker's failure here
                pending -= done
            _drain(events, sink, timeout=0)
        except BaseException:  # a worker failed, Ctrl-C or SIGTERM: stop the other arms now (--resume continues each from its checkpoint)
            for child in multiprocessing.active_children():
                child.terminate()
            raise
        finally:
            pool.shutdown(cancel_futures=True)


def _drain(events, sink: Sink, timeout: float) -> None:
    try:
        sink(events.get(timeout=timeout) if timeout else events.get_nowait())
        while True:
            sink(events.get_nowait())
    except queue.Empty:
        pass


def _run_arm_in_worker(job: ArmJob, events) -> None:
    try:
        run_arm(job, events.put)
    except (RunError, UserInputError):
        raise  # one line, printed by the CLI
    except BaseException:
        events.put({"type": "error", "arm": job.arm, "seed": job.seed, "text": traceback.format_exc()})
        raise


def run_arm(job: ArmJob, sink: Sink) -> None:
    """Train one arm for one seed, evaluating every ``eval.every`` interactions."""
    config, run_dir, arm, seed = job.config, job.run_dir, job.arm, job.seed
    quiet_libraries()
    set_threads(config.threads)
    seed_everything(seed)
    schedule = job.schedule
    prompts = load_prompts(config.prompts)
    policy = Policy.load(config.policy)
    policy.snapshot_initial()  # the reference for KL to the initial policy (and the KL anchor)
    engine = HFEngine(policy)
    preferences = _preferences(config, schedule)
    evaluator = Evaluator(preferences, prompts.heldout, config.eval, Embedder(device=policy.device))
    evaluator.set_reference(job.reference)
    pool = load_pool(config.neutral_pool)
    simulator = build_simulator(config.simulator) if arm != "control" else NeutralSimulator(pool, salt=f"control-{seed}")
    trainer = build_trainer(config, schedule, policy, engine, arm=arm, seed=seed, neutral_pool=pool)
    params = SamplingParams(**config.generation.model_dump())
    total = config.interactions
    keep = arm == "treated" and config.save_checkpoint
    checkpoints = ArmCheckpoints.of(run_dir, arm, seed)
    state = checkpoints.latest() or ArmState()
    if state.folder is not None:  # resume: weights, optimizer and RNG exactly as they were after update state.step
        saved = checkpoints.load(state)
        load_trainable_weights(policy.model, saved["weights"])
        trainer.load_state_dict(saved["trainer"])
        set_rng_state(saved["rng"])
    failures, kept, last = state.failures, state.kept, (state.step, state.done)
    sink({"type": "start", "arm": arm, "seed": seed, "total": total, "done": state.done})
    for step, first in enumerate(range(0, total, config.batch_size)):
        if step <= state.step:
            continue
        indices = range(first, min(first + config.batch_size, total))
        t0 = time.perf_counter()
        prompt_texts = [prompts.draw(i, seed) for i in indices]
        messages = [policy.messages(p) for p in prompt_texts]
        contexts = [policy.encode_chat(m) for m in messages]
        answers = engine.generate(contexts, params)
        t1 = time.perf_counter()
        user = schedule.user_at(first)  # changes fall on batch boundaries (RunConfig checks)
        profile = user.name if schedule.changing else None
        followups = simulator.respond([[*m, {"role": "assistant", "content": a.text}] for m, a in zip(messages, answers)], user)
        t2 = time.perf_counter()
        batch = [Interaction(i, p, m, c, a, f) for i, p, m, c, a, f in zip(indices, prompt_texts, messages, contexts, answers, followups)]
        failed = [i for i in batch if i.followup.failed is not None]
        failures += len(failed)
        if failures > config.fail_budget:
            for interaction in failed:
                append_jsonl(run_dir / "interactions.jsonl", _interaction_record(config.method, trainer, arm, seed, step, interaction, {}, profile))
            limit = "--fail-fast" if config.fail_budget == 0 else f"fail_budget {config.fail_budget}"
            _report_usage(sink, judge=[p.judge for p in preferences], simulator=[simulator], **trainer.llm_parts())
            raise RunError(f"{arm} s{seed} stopped at interaction {failed[-1].index}: {failures} simulator calls failed after their retries "
                           f"({limit}); last: {failed[-1].followup.failed}")
        trained = [i for i in batch if i.followup.failed is None]
        result = trainer.step(trained) if trained else StepResult(metrics={}, skipped="every simulator call failed")
        t3 = time.perf_counter()
        summaries = iter(result.per_interaction)
        for interaction in batch:
            summary = {} if interaction.followup.failed is not None else next(summaries)
            append_jsonl(run_dir / "interactions.jsonl", _interaction_record(config.method, trainer, arm, seed, step, interaction, summary, profile))
        write_signals(run_dir, arm, seed, step, [i.index for i in trained], result.signals)
        done = indices[-1] + 1
        last = (step, done)
        timings = {"generate": t1 - t0, "simulate": t2 - t1, "train": t3 - t2, "step": time.perf_counter() - t0}
        append_jsonl(run_dir / "metrics.jsonl", TrainRecord(
            arm=arm, seed=seed, step=step, interactions=done, metrics=result.metrics, timings=timings, skipped=result.skipped, failed=len(failed),
            peak_memory_gb=peak_memory_gb(),
        ))
        satisfied = [f.satisfied for f in followups if f.satisfied is not None]
        sink({"type": "step", "arm": arm, "seed": seed, "done": done, "total": total, "loss": result.metrics.get("loss"),
              "satisfied": sum(satisfied) / len(satisfied) if satisfied else None, "skipped": result.skipped})
        if done % config.eval.every == 0 or done == total:
            records, samples = evaluator.run(policy, engine, arm=arm, seed=seed, interactions=done, against=job.reference,
                                             system=eval_system(config, trainer, schedule.user_at(first)))
            if (stop := _kl_stop(records, config.max_kl)) is not None:
                stop += "; " + (f"checkpoint kept from {kept} interactions" if kept else "no checkpoint: no evaluation was within the limit") if keep else ""
                records = [r.model_copy(update={"stopped": stop}) for r in records]
            _write_eval(run_dir, records, samples, sink)
            if stop is not None:
                sink({"type": "stopped", "arm": arm, "seed": seed, "text": stop})
                break
            if keep and (config.max_kl is not None or done == total):  # under max_kl, every evaluation within the limit is kept
                policy.save(run_dir / "checkpoints" / f"{arm}-s{seed}")
                kept = done
        every = config.checkpoint_every
        if every and done < total and done // every > first // every:
            state = ArmState(step=step, done=done, failures=failures, kept=kept)
            checkpoints.save(state, {"weights": trainable_weights(policy.model), "trainer": trainer.state_dict(), "rng": rng_state()})
    checkpoints.finish(ArmState(step=last[0], done=last[1], failures=failures, kept=kept))
    _report_usage(sink, judge=[p.judge for p in preferences], simulator=[simulator], **trainer.llm_parts())
    sink({"type": "done", "arm": arm, "seed": seed})


def _kl_stop(records: list[EvalRecord], max_kl: float | None) -> str | None:
    """Why the arm must stop after this evaluation (its KL to the initial policy above ``max_kl``), or None."""
    measured = [r.kl for r in records if r.kl is not None]
    if max_kl is None or not measured or max(measured) <= max_kl:
        return None
    return f"KL to the initial policy {max(measured):.4g} > max_kl {max_kl:g} at {records[0].interactions} interactions"


def _interaction_record(method: str, trainer: Trainer, arm: str, seed: int, step: int, interaction: Interaction, summary: dict,
                        profile: str | None) -> InteractionRecord:
    followup = interaction.followup
    what = trainer.record_fields(summary)  # where the method's summary goes (SDPO: advantage; RLHI: update and label)
    return InteractionRecord(
        arm=arm, seed=seed, index=interaction.index, step=step, prompt=interaction.prompt, response=interaction.response.text,
        response_tokens=len(interaction.response.token_ids), finished=interaction.response.finished, followup=followup.text,
        followup_raw=followup.raw, satisfied=followup.satisfied, profile=profile, failed=followup.failed, guard=interaction.guard, method=method, **what,
    )


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from harness import __version__

    return {"hindsight": __version__, "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def _device_name(config: RunConfig) -> str:
    from core.runtime import resolve_device

    device = resolve_device(config.policy.device)
    cores = os.cpu_count() or 0
    return f"{device.type} ({cores} cores, {sys.platform})" if device.type == "cpu" else f"cuda ({_cuda_name()})"


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)
