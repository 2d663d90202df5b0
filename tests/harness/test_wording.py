"""`hindsight profiles wording` on the real SmolLM2: each follow-up line scored on the answers a scripted user would send it
to, with the SDPO trainer's own advantage."""

from __future__ import annotations

import json

import pytest

from core.records import InteractionRecord
from harness.wording import Answer, score_wordings, spread
from simulators.neutral import load_pool
from simulators.profile import Profile
from trainers.sdpo import SDPOConfig

LONG = ("Cooking rice is a wonderful skill that everyone should learn, and there are many ways to do it. First, measure your rice "
        "carefully, then rinse it several times until the water runs clear, which removes excess starch, and then boil it.")
SHORT = "Rinse one cup of rice, add two cups of water, and simmer it covered for 18 minutes."
TERSE = Profile.model_validate({
    "name": "terse", "description": "Wants the shortest answer that does the job.",
    "checks": [{"kind": "max_words", "value": 40, "followup": ["Too long. I just need the short version.", "Cut that down to one sentence."]},
               {"kind": "forbid", "pattern": "exclamation", "followup": ["No exclamation marks, please."]}],
    "satisfied": ["Perfect, short and to the point."]})


def test_each_line_is_scored_on_the_answers_it_would_be_sent_to(policy):
    ids = lambda text, done=True: tuple(policy.tokenizer.encode(text, add_special_tokens=False)) + ((policy.eos_token_id,) if done else ())  # noqa: E731
    answers = [Answer("How do I cook rice?", ids(LONG)), Answer("How do I cook rice?", ids(SHORT)), Answer("How do I cook rice?", ids(LONG, done=False))]
    rows = score_wordings(policy, SDPOConfig(), TERSE, answers, load_pool("builtin"))
    # the length complaints go to the two long answers (one cut before end-of-turn), no answer has an exclamation mark, the satisfied
    # reply goes to the short one
    assert [(w.kind, w.answers, w.on_all) for w in rows] == [("complaint: at most 40 words", 2, False)] * 2 + [("satisfied", 1, False)]
    assert all(w.eos is not None for w in rows)
    complaint, satisfied = rows[0], rows[2]
    alone = score_wordings(policy, SDPOConfig(), TERSE, answers[:1], load_pool("builtin"))  # the finished long answer by itself
    # end-of-turn A_t comes from the finished answers only: the cut one adds nothing; "too long" pushes the long answer to stop
    assert complaint.eos == pytest.approx(alone[0].eos, abs=1e-4) and complaint.eos > 0.5
    assert complaint.mean != pytest.approx(alone[0].mean, abs=1e-4)  # while the mean over answers takes both
    summary = spread(rows)
    assert summary["complaint_strongest"] == min(rows[0].mean, rows[1].mean) and summary["satisfied_mean"] == satisfied.mean
    # with no compliant answer, the satisfied reply is scored on every answer, and says so
    assert (alone[-1].kind, alone[-1].answers, alone[-1].on_all) == ("satisfied", 1, True)


def test_the_command_scores_a_run_of_each_profile(cli, tmp_path):
    """Profiles named on the command line, answers sampled from the untrained model; a profile without checks is refused."""
    result = cli("profiles", "wording", "concise", "--answers", "2", "--out", str(tmp_path / "w.json"))
    assert result.code == 0, result.stderr
    data = json.loads((tmp_path / "w.json").read_text())
    assert list(data) == ["concise"] and {r["kind"] for r in data["concise"]} <= {"complaint: at most 40 words", "satisfied"}
    assert "mean A_t" in result.stdout
    run = tmp_path / "run"  # a run from before signals.jsonl: its answers' text is tokenized again
    run.mkdir()
    (run / "config.yaml").write_text("profile: concise\n")
    records = [InteractionRecord(arm=arm, seed=0, index=i, step=0, prompt="How do I cook rice?", response=LONG, response_tokens=50, finished=True,
                                 followup="f", followup_raw="f", satisfied=False) for i, arm in enumerate(["treated", "control", "treated"])]
    (run / "interactions.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    result = cli("profiles", "wording", "--run", str(run), "--out", str(tmp_path / "r.json"))
    assert result.code == 0, result.stderr
    (complaint, *_) = json.loads((tmp_path / "r.json").read_text())["concise"]
    assert complaint["answers"] == 2 and complaint["eos"] is not None  # the two treated answers, finished
    bad = cli("profiles", "wording", "no_emojis", "--run", str(run))
    assert bad.code == 2 and "has no run of profile no_emojis" in bad.stderr
    bad = cli("profiles", "wording", "--answers", "2")
    assert bad.code == 2 and "name at least one profile" in bad.stderr
    bad = cli("profiles", "wording", "concise", "--set", "cut_eos=maybe")
    assert bad.code == 2 and "--set cut_eos" in bad.stderr
