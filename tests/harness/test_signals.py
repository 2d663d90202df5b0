"""signals.jsonl (written beside the run log, cut back on resume like the other logs) and `hindsight signal` on the real
SmolLM2: one answer's per-token advantage under the profile's complaint, a satisfied reply, an unrelated question and a
neutral message."""

from __future__ import annotations

import json

from core.records import SignalRecord, read_jsonl
from harness.checkpoint import ArmState, repair_logs
from harness.signals import SIGNALS, write_signals

LONG = ("Cooking rice is a wonderful skill that everyone should learn, and there are many ways to do it. First, measure your rice "
        "carefully, then rinse it several times until the water runs clear, which removes excess starch, and then boil it.")


def test_signals_are_written_compactly_and_cut_back_on_resume(tmp_path):
    signal = {"tokens": [" a", " b"], "ids": [1, 2], "advantage": [0.1234, -0.5], "reference": "neutral"}
    write_signals(tmp_path, "treated", 0, 0, [0, 1], [signal, {}])  # {}: nothing to record (e.g. the guard skipped it)
    write_signals(tmp_path, "treated", 0, 1, [2, 3], [signal, signal])
    write_signals(tmp_path, "control", 0, 0, [0], [signal])
    rows = list(read_jsonl(tmp_path / SIGNALS, SignalRecord))
    assert [(r.arm, r.step, r.index) for r in rows] == [("treated", 0, 0), ("treated", 1, 2), ("treated", 1, 3), ("control", 0, 0)]
    assert rows[0].advantage == [0.1234, -0.5] and rows[0].pair is None
    assert len((tmp_path / SIGNALS).read_text().splitlines()[0]) < 200
    with (tmp_path / SIGNALS).open("a") as handle:
        handle.write('{"arm": "treated", "se')  # a line torn by a kill
    repair = repair_logs(tmp_path, {("treated", 0): ArmState(step=0, done=2), ("control", 0): None}, untrained_done=True)
    assert (repair.torn, repair.dropped) == (1, 3)
    assert [(r.arm, r.index) for r in read_jsonl(tmp_path / SIGNALS, SignalRecord)] == [("treated", 0)]


def test_signal_scores_one_answer_under_four_follow_ups(cli, tmp_path):
    result = cli("signal", "--prompt", "How do I cook rice?", "--answer", LONG, "--profile", "concise", "--followup", "praise=What a great answer!",
                 "--out", str(tmp_path))
    assert result.code == 0, result.stderr
    (figure,) = tmp_path.glob("*.json")
    assert (tmp_path / f"{figure.stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(figure.read_text())
    labels = [row["label"] for row in data["rows"]]
    assert labels == ["complaint (at most 40 words)", "satisfied", "unrelated question", "neutral message", "praise"]
    assert data["reference"] == "neutral" and data["reference_followup"] and data["profile"] == "concise"
    assert data["rows"][3]["followup"] != data["reference_followup"]  # the reference's own message would give a row of zeros
    assert all(len(row["advantage"]) == len(data["tokens"]) for row in data["rows"])
    assert "".join(data["tokens"]).startswith("Cooking rice")
    complaint, satisfied = (sum(row["advantage"]) for row in data["rows"][:2])
    assert complaint < satisfied - 1.0  # the complaint pushes the long answer down; a satisfied reply does not, or less
    assert (tmp_path / "view" / "index.html").is_file()
    assert (tmp_path / "view" / "data" / "figures" / f"{figure.stem}.js").is_file()
    plain = cli("signal", "--prompt", "How do I cook rice?", "--answer", LONG, "--advantage-reference", "plain", "--out", str(tmp_path / "plain"))
    assert plain.code == 0, plain.stderr
    (other,) = (tmp_path / "plain").glob("*.json")
    assert json.loads(other.read_text())["reference"] == "plain" and json.loads(other.read_text())["reference_followup"] is None
