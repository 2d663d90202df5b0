"""The viewer's data: each run's records turned into small JSON documents that the pages load when they need them.

Per run: ``run`` (info, config, verdicts, every curve with its intervals, the update metrics, what else there is to
load), ``samples-X`` (the held-out answers of evaluation point X, every arm and seed), ``interactions`` (every
interaction without its tokens) and ``signals-K`` (the per-token signals, in chunks of ``CHUNK`` records, loaded when
an interaction is shown). The index holds one row per run.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from core.records import METRIC, EvalRecord, InteractionRecord, SampleRecord, SignalRecord, TrainRecord, read_jsonl
from harness.curves import METRICS, TRAINED, by_preference, curves
from harness.runs import read_config, read_info

CHUNK = 64  # signal records per file
SOURCES = ("config.yaml", "run.json", "metrics.jsonl", "samples.jsonl", "interactions.jsonl", "signals.jsonl")
ARMS = ("initial", "oracle", *TRAINED)


def stamp(folder: Path) -> str:
    """Changes whenever a file the viewer reads changes (size and modification time)."""
    parts = []
    for name in SOURCES:
        path = folder / name
        if path.is_file():
            info = path.stat()
            parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
    parts += sorted(f"{p.name}:{p.stat().st_mtime_ns}" for p in (folder / "signal").glob("*.json"))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _point(p) -> list:
    return [p.interactions, _round(p.mean), _round(p.low), _round(p.high), p.seeds]


def _curves(evals: list[EvalRecord]) -> dict[str, dict[str, list[list]]]:
    """metric → arm → [[x, mean, low, high, seeds], …]."""
    out: dict[str, dict[str, list[list]]] = {}
    for field, _, share in METRICS:
        series = curves(evals, field, share)
        if series:
            out[field] = {arm: [_point(p) for p in points] for arm, points in series.items()}
    return out


def _train_curves(records: list[TrainRecord]) -> dict[str, dict[str, list[list]]]:
    """Each update metric (loss, advantage_mean, …) per arm: the mean over seeds at each interaction count."""
    sums: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        for name, value in r.metrics.items():
            sums[name][r.arm][r.interactions].append(value)
    return {name: {arm: [[x, _round(sum(v) / len(v))] for x, v in sorted(xs.items())] for arm, xs in arms.items()} for name, arms in sorted(sums.items())}


def _checks(config: dict[str, Any], preferences: list[str | None]) -> dict[str, list[str]]:
    """The names of the checks each scored preference runs (the held-out table shows each one's result)."""
    from simulators.profile import load_profile

    out = {}
    for name in preferences:
        try:
            profile = load_profile(name or config.get("profile", ""))
        except (UserInputError, OSError, ValueError):  # a profile file that moved since the run: the table shows failed checks only
            continue
        out[name or ""] = [c.describe() for c in profile.checks]  # as SampleRecord.failed_checks names them
    return out


def run_document(folder: Path, key: str, sweep: str | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the run's ``run`` document, its index row, its other documents by name)."""
    from harness.report import side_effects, verdict

    info = read_info(folder)
    config = read_config(folder)
    metrics = list(read_jsonl(folder / "metrics.jsonl", METRIC))
    evals = [r for r in metrics if isinstance(r, EvalRecord)]
    groups = by_preference(evals)
    documents: dict[str, Any] = {}
    samples = list(read_jsonl(folder / "samples.jsonl", SampleRecord))
    prompts = list(dict.fromkeys(s.prompt for s in samples))
    where = {p: n for n, p in enumerate(prompts)}
    by_x: dict[int, list[dict]] = defaultdict(list)
    for s in samples:
        by_x[s.interactions].append({
            "arm": s.arm, "seed": s.seed, "p": where[s.prompt], "answer": s.answer, "words": s.words, "failed": s.failed_checks,
            "flags": s.degeneration, "relevant": s.relevant, "clean": s.clean, "compliant": s.compliant, "verdict": s.verdict,
            "preference": s.profile, "sim": [_round(s.prompt_similarity, 3), _round(s.reference_similarity, 3)],
        })
    for x, rows in by_x.items():
        documents[f"samples-{x}"] = {"x": x, "rows": rows}
    interactions, chunks = _interactions(folder, documents)
    stamp_ = stamp(folder)
    figures = sorted((folder / "signal").glob("*.json"))
    for path in figures:
        documents[f"signal-{path.stem}"] = json.loads(path.read_text(encoding="utf-8"))
    if interactions:
        documents["interactions"] = {"rows": interactions, "chunks": chunks, "stamp": stamp_}
    preferences = [name for name, _ in groups]
    run = {
        "key": key, "id": folder.name, "path": str(folder), "sweep": sweep, "stamp": stamp_,
        "status": info.status if info else None, "info": info.model_dump(mode="json") if info else None, "config": config,
        "preferences": [{"name": name, "verdict": verdict(records), "side_effects": side_effects(records), "curves": _curves(records)}
                        for name, records in groups],
        "train": _train_curves([r for r in metrics if isinstance(r, TrainRecord)]),
        "metrics": [{"field": f, "label": label, "share": share} for f, label, share in METRICS],
        "points": sorted(by_x), "prompts": prompts, "checks": _checks(config, preferences),
        "seeds": sorted({r.seed for r in evals if r.arm in TRAINED}), "interactions": len(interactions),
        "figures": [p.stem for p in figures],
    }
    return run, _index_row(run, groups, config), documents


def _index_row(run: dict[str, Any], groups, config: dict[str, Any]) -> dict[str, Any]:
    first = run["preferences"][0]["curves"] if run["preferences"] else {}
    last = {arm: points[-1] for arm, points in first.get("clean", {}).items()}
    win = {arm: points[-1] for arm, points in first.get("win_rate", {}).items()}
    info = run["info"] or {}
    return {
        "key": run["key"], "id": run["id"], "sweep": run["sweep"], "status": run["status"], "profile": config.get("profile"),
        "method": config.get("method", "sdpo"), "seeds": config.get("seeds", 1), "n": config.get("interactions"),
        "clean": last, "win": win, "seconds": info.get("seconds"), "created": info.get("created"), "stamp": run["stamp"],
        "preferences": len(groups),
    }


def _interactions(folder: Path, documents: dict[str, Any]) -> tuple[list[dict], int]:
    """The interaction rows (each naming the signal chunk that holds its tokens, or none) and the number of chunks."""
    chunk_of: dict[tuple[str, int, int], int] = {}
    chunk: list[dict] = []
    count = 0
    for record in read_jsonl(folder / "signals.jsonl", SignalRecord):
        chunk_of[(record.arm, record.seed, record.index)] = count
        chunk.append({"arm": record.arm, "seed": record.seed, "index": record.index, "tokens": record.tokens, "advantage": record.advantage,
                      "reference": record.reference, "pair": record.pair})
        if len(chunk) == CHUNK:
            documents[f"signals-{count}"] = {"rows": chunk}
            chunk, count = [], count + 1
    if chunk:
        documents[f"signals-{count}"], count = {"rows": chunk}, count + 1
    rows = []
    for r in read_jsonl(folder / "interactions.jsonl", InteractionRecord):
        adv = r.advantage
        rows.append({
            "arm": r.arm, "seed": r.seed, "index": r.index, "step": r.step, "prompt": r.prompt, "response": r.response, "followup": r.followup,
            "satisfied": r.satisfied, "label": r.label, "profile": r.profile, "failed": r.failed, "tokens": r.response_tokens, "finished": r.finished,
            "flagged": r.guard.flagged if r.guard else None, "skipped": r.guard.skipped if r.guard else None,
            "adv": [_round(adv.get(k)) for k in ("mean", "min", "max")] if adv.get("tokens") else None,
            "neutral": adv.get("neutral_followup"), "kept": r.update.get("kept"), "why": r.update.get("why"),
            "chunk": chunk_of.get((r.arm, r.seed, r.index)),
        })
    return rows, count
