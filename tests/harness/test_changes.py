"""The flip lag, continual retention and irrelevant-follow-up reports, on synthetic records with known answers."""

from __future__ import annotations

import json

from core.records import InteractionRecord
from harness.changes import _crossing, flip_lags, flip_lines, retention, retention_lines
from harness.curves import Point
from harness.report import irrelevant_followups, write_report

from builders import eval_record, write_run

PNG = b"\x89PNG\r\n\x1a\n"
# (concise, detailed) clean compliance per seed after each evaluation; the user flips to detailed at 16
TREATED = {0: {8: (0.5, 0.1), 16: (0.8, 0.1), 24: (0.6, 0.3), 32: (0.4, 0.6), 40: (0.3, 0.7), 48: (0.3, 0.8)},
           1: {8: (0.5, 0.1), 16: (0.8, 0.1), 24: (0.6, 0.2), 32: (0.5, 0.4), 40: (0.3, 0.6), 48: (0.2, 0.8)}}
# treated win rates (same for both seeds): detailed overtakes at 40 and falls back at 48
WINS = {8: (0.6, 0.2), 16: (0.9, 0.1), 24: (0.9, 0.1), 32: (0.8, 0.3), 40: (0.5, 0.6), 48: (0.6, 0.4)}
FLIP_CONFIG = "profile: concise\ninteractions: 48\nbatch_size: 4\nflip_at: 16\neval:\n  every: 8\n"


def flip_records() -> list:
    records = [eval_record("initial", 0, profile=p, clean=0.0) for p in ("concise", "detailed")]
    for seed, points in TREATED.items():
        for x, (old, new) in points.items():
            records += [eval_record("treated", x, seed, "concise", clean=old, win_rate=WINS[x][0]),
                        eval_record("treated", x, seed, "detailed", clean=new, win_rate=WINS[x][1])]
            # the control arm's user never flips: concise stays ahead, the win rates tie
            records += [eval_record("control", x, seed, "concise", clean=0.2, win_rate=0.5),
                        eval_record("control", x, seed, "detailed", clean=0.1, win_rate=0.5)]
    return records


def test_the_flip_lag_on_the_mean_and_per_seed_with_the_control_beside():
    lags = {(lag.field, lag.arm): lag for lag in flip_lags(flip_records(), flip_at=16)}
    clean = lags[("clean", "treated")]
    # means at 32: concise 0.45, detailed 0.50 → crossed 16 after the flip; seed 0 at 32, seed 1 at 40; stays above
    assert (clean.lag, clean.seeds, clean.x, clean.holds, clean.horizon) == (16, [16, 24], 32, True, 32)
    assert (round(clean.old.mean, 6), round(clean.new.mean, 6)) == (0.45, 0.5)
    assert clean.degenerate.mean == 0.1 and clean.relevant.mean == 0.9  # the arm's shares at the same evaluation
    win = lags[("win_rate", "treated")]
    assert (win.lag, win.seeds, win.holds) == (24, [24, 24], False)  # over at 40, back under at 48
    control = lags[("clean", "control")]
    assert (control.lag, control.seeds, control.x, control.describe()) == (None, [None, None], 48, "not within 32")
    assert lags[("win_rate", "control")].describe() == "not within 32"  # a tie is not ahead
    table = "\n".join(flip_lines(list(lags.values()), "concise", "detailed"))
    assert "| clean compliance | treated | 16 | 16, 24 | 32 |" in table and "| clean compliance | control | not within 32 | –, – | 48 |" in table


def test_already_ahead_at_the_flip_is_a_lag_of_zero():
    old = [Point(x, 0.2, 0.1, 0.3, 1) for x in (8, 16, 24)]
    new = [Point(x, 0.5, 0.4, 0.6, 1) for x in (8, 16, 24)]
    assert _crossing(old, new, 16) == (16, 24, True)
    assert _crossing(new, old, 16) == (None, 24, False)


def interaction(arm: str, index: int, finished: bool, tokens: int, eos: float | None, satisfied: bool | None) -> InteractionRecord:
    advantage = {"mean": -0.1, **({"eos": eos} if eos is not None else {})}
    return InteractionRecord(arm=arm, seed=0, index=index, step=index // 4, prompt="p", response="r", response_tokens=tokens,  # type: ignore[arg-type]
                             finished=finished, followup="f", followup_raw="f", satisfied=satisfied, profile="concise" if index < 16 else "detailed",
                             advantage=advantage)


def test_a_flip_runs_report_and_show_carry_the_lag_table_and_figure(tmp_path, cli):
    folder = write_run(tmp_path / "flip", FLIP_CONFIG, flip_records())
    # before the flip every answer ends, half satisfy; after it half are cut at the budget and the end-of-turn is pushed down
    logged = [interaction("treated", i, True, 40, -0.5, i % 2 == 0) for i in range(16)]
    logged += [interaction("treated", i, i % 2 == 0, 90, -1.5 if i % 2 == 0 else None, False) for i in range(16, 24)]
    logged += [interaction("control", i, True, 100, 0.0, None) for i in range(24)]
    (folder / "interactions.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in logged), encoding="utf-8")
    summary = write_report(folder).read_text()
    assert "| 8–16 | concise | treated | 0.50 | 1.00 | 40 | -0.100 | -0.500 |" in summary
    assert "| 16–24 | detailed | treated | 0.00 | 0.50 | 90 | -0.100 | -1.500 |" in summary
    assert "| 16–24 | neutral messages | control | – | 1.00 | 100 | -0.100 | +0.000 |" in summary
    assert "## Following the flip" in summary and "![flip](flip.png)" in summary
    assert "| clean compliance | treated | 16 | 16, 24 |" in summary
    assert (folder / "flip.png").read_bytes()[:8] == PNG
    shown = cli("show", str(folder))
    assert shown.code == 0 and "| win rate vs initial | treated | 24 | 24, 24 |" in shown.stdout and "flip.png" in shown.stdout
    document = json.loads(cli("show", str(folder), "--json").stdout)
    rows = {(r["field"], r["arm"]): r for r in document["flip"]["rows"]}
    assert rows[("clean", "treated")]["lag"] == 16 and rows[("clean", "control")]["lag"] is None


CONTINUAL = {  # clean compliance of each preference after each evaluation; a from 0, b from 8, c from 16
    "treated": {"a": (0.7, 0.6, 0.5), "b": (0.1, 0.8, 0.8), "c": (0.2, 0.3, 0.9)},
    "control": {"a": (0.1, 0.1, 0.1), "b": (0.1, 0.1, 0.2), "c": (0.1, 0.1, 0.1)},
}


def continual_records() -> list:
    records = [eval_record("initial", 0, profile=p, clean=0.0) for p in "abc"]
    for arm, prefs in CONTINUAL.items():
        for k, x in enumerate((8, 16, 24)):
            records += [eval_record(arm, x, profile=p, clean=values[k], degenerate=0.05 * k) for p, values in prefs.items()]
    return records


def test_retention_per_stage_against_the_control(tmp_path):
    rows = {(r.preference, r.arm): r for r in retention(continual_records(), stage=8, total=24)}
    a = rows[("a", "treated")]
    assert [p.mean for p in a.ends] == [0.7, 0.6, 0.5] and a.own == 0 and round(a.change, 6) == -0.2  # forgotten, a little
    assert round(rows[("b", "treated")].change, 6) == 0.0 and rows[("c", "treated")].change == 0.0  # c: its own stage is the last
    assert round(rows[("b", "control")].change, 6) == 0.1
    table = "\n".join(retention_lines(continual_records(), stage=8, total=24))
    assert "| a (0) | treated | **0.70 [" in table and "| b (8) | treated | 0.10 [" in table and "| -0.20 |" in table
    assert "| *degenerate* | treated | 0.00 [0.00, 0.16] | 0.05 [" in table
    folder = write_run(tmp_path / "cont", "profile: a\ninteractions: 24\nbatch_size: 4\ncontinual:\n  add: [b, c]\n  stage: 8\neval:\n  every: 8\n",
                       continual_records())
    summary = write_report(folder).read_text()
    assert "## Retention of earlier preferences" in summary and "![retention](retention.png)" in summary
    assert (folder / "retention.png").read_bytes()[:8] == PNG


def test_irrelevant_followups_name_the_control_against_the_untrained_model(tmp_path, cli):
    start = eval_record("initial", 0, clean=0.1, degenerate=0.1)
    still = [start, eval_record("control", 64, clean=0.15, degenerate=0.1), eval_record("treated", 64, clean=0.7)]
    line = irrelevant_followups("unrelated", "neutral", still)
    assert line.startswith("**Irrelevant follow-ups** (the control arm's user sends the `unrelated` pool; advantage reference neutral)")
    assert "after 64 interactions the control arm moved nothing beyond the 95% intervals" in line and "KL to initial 0" in line
    moved = [start, eval_record("control", 64, clean=0.1, degenerate=0.9)]
    assert "moved degenerate beyond the 95% intervals" in irrelevant_followups("unrelated", "plain", moved)
    assert irrelevant_followups("builtin", "neutral", moved) == ""  # small talk is the ordinary control, not this check
    folder = write_run(tmp_path / "unrelated", "profile: concise\nneutral_pool: unrelated\ntrainer:\n  advantage_reference: plain\n", moved)
    assert "advantage reference plain): after 64 interactions the control arm moved degenerate" in write_report(folder).read_text()
    assert "moved degenerate" in cli("show", str(folder)).stdout
