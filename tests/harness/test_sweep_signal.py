"""The sweep report's training-signal table (harness/sweep/signal.py), from records written by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.records import EvalRecord, InteractionRecord, append_jsonl
from harness.sweep.signal import profile_signal

PLAIN = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaves of green plants."
LOOP = "1. It is a strong acid, " * 12


def _interaction(index: int, response: str, satisfied: bool, finished: bool = True) -> InteractionRecord:
    return InteractionRecord(arm="treated", seed=0, index=index, step=index // 4, prompt="Explain photosynthesis.", response=response,
                             response_tokens=len(response.split()), finished=finished, followup="ok" if satisfied else "Use a list.",
                             followup_raw="", satisfied=satisfied)


def _eval(interactions: int, looping: float) -> EvalRecord:
    shares = dict(compliance=0.5, clean=0.25, degenerate=looping, relevant=1.0, apology=0.0, meta=0.0, looping=looping, empty=0.0,
                  truncated=0.0, repetition=0.1, distinct2=0.9, prompt_similarity=0.6, reference_similarity=0.7)
    return EvalRecord(arm="treated", seed=0, interactions=interactions, n=32, mean_words=60.0, kl=0.1 * interactions, seconds=1.0, **shares)


def test_the_signal_tells_loops_the_user_read_from_loops_only_greedy_answers_show(tmp_path: Path):
    """Eight interactions (quarters of two): six complaints on plain answers, then two satisfied replies, one to a looping
    answer. The last quarter's sampled answers loop at 0.5, half the satisfied replies went to a loop, and the greedy share is
    the last evaluation's (0.75), not the first's."""
    run = tmp_path / "run"
    run.mkdir()
    for n in range(6):
        append_jsonl(run / "interactions.jsonl", _interaction(n, PLAIN, satisfied=False, finished=n % 2 == 0))
    append_jsonl(run / "interactions.jsonl", _interaction(6, LOOP, satisfied=True, finished=False))
    append_jsonl(run / "interactions.jsonl", _interaction(7, PLAIN, satisfied=True))
    for interactions, looping in ((0, 0.25), (8, 0.75)):
        append_jsonl(run / "metrics.jsonl", _eval(interactions, looping))
    signal = profile_signal("more_lists", [run])
    assert signal is not None and signal.interactions == 8
    assert signal.complaints == pytest.approx(6 / 8) and signal.finished == pytest.approx(4 / 8)
    assert signal.looping_sampled == pytest.approx(0.5) and signal.satisfied_bad == pytest.approx(0.5)
    assert signal.looping_greedy == pytest.approx(0.75) and signal.kl == pytest.approx(0.8)
    assert signal.rms is None and signal.off_topic_last is None  # no signals.jsonl, no embedder


def test_a_profile_without_treated_interactions_has_no_signal(tmp_path: Path):
    (tmp_path / "run").mkdir()
    assert profile_signal("concise", [tmp_path / "run"]) is None
