"""Report curves from records: win rates over seeds, old records without the judge's fields, the panels drawn."""

from __future__ import annotations

import json

import pytest

from core.records import METRIC, EvalRecord, TrainRecord
from core.stats import interval
from harness.curves import curves
from harness.report import final_table, plot, skipped_line, skipped_updates, write_report

from builders import eval_record, write_run

BASE = dict(n=20, compliance=0.5, clean=0.5, degenerate=0.0, relevant=1.0, mean_words=10.0, apology=0.0, meta=0.0, looping=0.0,
            empty=0.0, truncated=0.0, repetition=0.0, distinct2=1.0, prompt_similarity=0.5, reference_similarity=0.5, kl=0.0, seconds=1.0)


def record(arm: str, seed: int, x: int, win: float | None, low: float | None = None, high: float | None = None, invalid: float = 0.0) -> EvalRecord:
    return EvalRecord(arm=arm, seed=seed, interactions=x, win_rate=win, win_low=low, win_high=high, invalid_rate=invalid, **BASE)  # type: ignore[arg-type]


def test_one_seed_keeps_its_bootstrap_interval_and_several_combine_like_shares():
    one = curves([record("treated", 0, 8, 0.7, 0.5, 0.85)], "win_rate", True)["treated"]
    assert [(p.interactions, p.mean, p.low, p.high) for p in one] == [(8, 0.7, 0.5, 0.85)]
    wins = [0.6, 0.7, 0.8]
    three = curves([record("treated", s, 8, w, 0.0, 1.0, invalid=0.25) for s, w in enumerate(wins)], "win_rate", True)["treated"][0]
    assert (three.mean, three.low, three.high, three.seeds) == pytest.approx((*interval(wins, 15, True), 3))  # 15 valid of 20 prompts
    assert three.mean == pytest.approx(0.7) and three.low < 0.6 and three.high > 0.8


def test_unjudged_points_are_left_out_and_the_initial_model_has_no_win_rate():
    evals = [record("initial", 0, 0, None), record("oracle", 0, 0, 0.9, 0.8, 1.0), record("treated", 0, 4, None), record("treated", 0, 8, 0.6, 0.4, 0.8)]
    series = curves(evals, "win_rate", True)
    assert set(series) == {"oracle", "treated"} and [p.interactions for p in series["treated"]] == [8]
    assert [p.interactions for p in curves(evals, "clean", True)["treated"]] == [0, 4, 8]  # other metrics still start at the untrained model
    rows = {arm: cells for arm, _, cells in final_table(evals)}
    assert rows["treated"]["win_rate"] == "0.60 [0.40, 0.80]" and "win_rate" not in rows["initial"]


def test_records_written_before_the_judge_existed_still_load(tmp_path):
    new = {"profile", "judge", "win_rate", "win_low", "win_high", "decisive", "ties", "invalid_rate", "swap_agreement"}
    old = record("treated", 0, 4, None).model_dump_json(exclude=new)
    assert "win_rate" not in old
    loaded = METRIC.validate_python(json.loads(old))
    assert isinstance(loaded, EvalRecord) and loaded.win_rate is None and loaded.profile is None and loaded.schema_version == 1
    evals = [loaded, record("treated", 0, 8, 0.75, 0.5, 1.0), record("oracle", 0, 0, 0.9, 0.8, 1.0), record("initial", 0, 0, None)]
    path = plot(tmp_path, evals, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_updates_not_applied_are_counted_per_arm_and_reason_in_the_summary_and_show(tmp_path, cli):
    satisfied = "every follow-up satisfied (learn_from complaints)"
    reasons = [None, satisfied, satisfied, "non-finite loss"]
    train = [TrainRecord(arm="treated", seed=0, step=s, interactions=4 * s, metrics={}, timings={}, skipped=why) for s, why in enumerate(reasons, 1)]
    train.append(TrainRecord(arm="control", seed=0, step=1, interactions=4, metrics={}, timings={}))
    assert skipped_updates(train) == {"treated/s0": {"updates": 4, satisfied: 2, "non-finite loss": 1}}  # the control applied all
    assert skipped_line(train) == f"**Updates not applied:** treated/s0 3 of 4 ({satisfied}: 2; non-finite loss: 1)."
    assert skipped_line(train[:1] + train[4:]) == ""
    folder = write_run(tmp_path / "run", "profile: concise\n", [eval_record("initial", 0), eval_record("treated", 16), *train])  # type: ignore[list-item]
    assert "treated/s0 3 of 4" in write_report(folder).read_text()
    assert "treated/s0 3 of 4" in cli("show", str(folder)).stdout
    assert json.loads(cli("show", str(folder), "--json").stdout)["skipped_updates"] == {"treated/s0": {"updates": 4, satisfied: 2, "non-finite loss": 1}}
