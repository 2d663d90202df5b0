"""Pairwise persona judge: strict parsing, both orders, win-rate statistics, the rule judge and the local-model backend."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pytest
import torch

from judges.backends import BackendReply, LocalBackend
from judges.base import Pair, Verdict
from judges.pairwise import PairwiseJudge, combine, judge_messages, parse_verdict, summarize
from judges.rules import RuleJudge
from simulators.profile import load_profile

PROMPT = "How do plants make food?"
SHORT = "Photosynthesis: light, water and CO2 become sugar."
LONG = " ".join(["Plants make food through photosynthesis in their leaves, using sunlight!"] * 6)
REPLY = re.compile(r"Reply ([AB]):\n<<<\n(.*?)\n>>>", re.S)


class ShorterWins:
    """A deterministic judge that reads the rendered prompt and names the shorter reply; records what it was shown."""

    name = "shorter"

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def answer(self, prompts: Sequence[list[dict]]) -> list[BackendReply]:
        out = []
        for messages in prompts:
            shown = dict(REPLY.findall(messages[-1]["content"]))
            self.seen.append(shown)
            out.append(BackendReply("A" if len(shown["A"]) < len(shown["B"]) else "B" if len(shown["B"]) < len(shown["A"]) else "TIE"))
        return out


class Scripted:
    """Replies with given texts in turn (adversarial judge outputs)."""

    name = "scripted"

    def __init__(self, texts: list[str]):
        self.texts = iter(texts)

    def answer(self, prompts: Sequence[list[dict]]) -> list[BackendReply]:
        return [BackendReply(next(self.texts)) for _ in prompts]


@pytest.mark.parametrize(
    "text, expected",
    [("A", "A"), (" b \n", "B"), ("TIE", "tie"), ("tie.", "tie"), ("**A**", "A"), ("Answer: B", "B"), ("verdict: Tie", "tie"),
     ("**Answer:** A", "A"), ("(B)", "B"), ("`A`", "A"), ("A.", "A")],
)
def test_whole_reply_verdicts_parse(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text",
    ["BOTH", "A and B", "A or B", "I think A", "", "   ", "C", "Answer:", "AB", "A\nB", "Response A", "A, but B is close", "Tie-breaker: A", "neither"],
)
def test_anything_else_is_invalid(text):
    assert parse_verdict(text) == "invalid"


def test_prompt_carries_the_persona_and_both_replies():
    persona = load_profile("concise").description
    system, user = judge_messages(PROMPT, SHORT, LONG, persona)
    assert persona.strip() in system["content"] and "A, B, TIE" in system["content"]
    assert PROMPT in user["content"] and dict(REPLY.findall(user["content"])) == {"A": SHORT, "B": LONG}
    generic = judge_messages([{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "?"}, {"role": "user", "content": "again"}], SHORT, LONG)
    assert persona.strip() not in generic[0]["content"] and "User: again" in generic[1]["content"]


def test_each_pair_is_judged_in_both_orders_and_mapped_back():
    backend = ShorterWins()
    pairs = [Pair(PROMPT, SHORT, LONG), Pair(PROMPT, LONG, SHORT), Pair(PROMPT, SHORT, SHORT)]
    verdicts = PairwiseJudge(backend).compare(pairs, persona="I like short answers.")
    assert [v.winner for v in verdicts] == ["A", "B", "tie"]
    assert [v.orders for v in verdicts] == [("A", "A"), ("B", "B"), ("tie", "tie")]
    assert backend.seen[0] == {"A": SHORT, "B": LONG} and backend.seen[1] == {"A": LONG, "B": SHORT}  # second order swapped
    assert all(len(v.raw) == 2 and v.backend == "shorter" for v in verdicts)
    assert summarize(verdicts).swap_agreement == 1.0


def test_orders_that_disagree_make_a_tie():
    verdicts = PairwiseJudge(Scripted(["A", "A", "B", "B", "A", "B"])).compare([Pair(PROMPT, SHORT, LONG)] * 3)
    assert [v.orders for v in verdicts] == [("A", "B"), ("B", "A"), ("A", "A")]
    assert [v.winner for v in verdicts] == ["tie", "tie", "A"]
    assert summarize(verdicts).swap_agreement == pytest.approx(1 / 3)


def test_invalid_replies_are_counted_and_never_scored_as_losses():
    texts = ["BOTH", "B", "A or B", "A", "", "", "I think A", "B", "A", "B"]  # 4 invalid pairs, then a valid A win
    verdicts = PairwiseJudge(Scripted(texts)).compare([Pair(PROMPT, SHORT, LONG)] * 5)
    assert [v.winner for v in verdicts] == ["invalid"] * 4 + ["A"]
    assert verdicts[0].raw == ("BOTH", "B") and verdicts[0].orders == ("invalid", "A")
    summary = summarize(verdicts)
    assert (summary.wins, summary.losses, summary.ties, summary.invalid) == (1, 0, 0, 4)
    assert summary.win_rate == 1.0 and summary.invalid_rate == pytest.approx(0.8) and summary.swap_agreement == 1.0
    assert combine("invalid", "invalid") == combine("A", "invalid") == "invalid"
    nothing = summarize(verdicts[:4])
    assert nothing.win_rate is None and nothing.decisive is None and nothing.ci is None and nothing.swap_agreement is None


def _verdicts(wins: int, losses: int, ties: int, invalid: int = 0) -> list[Verdict]:
    winners = ["A"] * wins + ["B"] * losses + ["tie"] * ties + ["invalid"] * invalid
    return [Verdict(winner=w, orders=(w, w), raw=("", ""), backend="t") for w in winners]  # type: ignore[arg-type]


def test_win_rate_counts_ties_as_half_and_bootstraps_over_prompts():
    summary = summarize(_verdicts(6, 2, 2, 1))
    assert (summary.n, summary.wins, summary.losses, summary.ties, summary.invalid) == (11, 6, 2, 2, 1)
    assert summary.win_rate == pytest.approx(0.7) and summary.decisive == pytest.approx(0.75) and summary.invalid_rate == pytest.approx(1 / 11)
    low, high = summary.ci
    assert 0 <= low < 0.7 < high <= 1
    assert summarize(_verdicts(6, 2, 2, 1)).ci == summary.ci  # seeded
    assert summarize(_verdicts(6, 2, 2, 1), seed=1).ci != summary.ci
    assert summarize(_verdicts(9, 0, 0)).ci == (1.0, 1.0)
    # with many prompts the percentile interval matches the normal approximation of a share's standard error
    big = summarize(_verdicts(140, 60, 0))
    half = (big.ci[1] - big.ci[0]) / 2
    assert half == pytest.approx(1.96 * math.sqrt(0.7 * 0.3 / 200), rel=0.2)
    assert big.ci[0] < 0.7 < big.ci[1]


def test_rule_judge_prefers_fewer_failed_checks():
    judge = RuleJudge(load_profile("concise"))
    verdicts = judge.compare([Pair(PROMPT, SHORT, LONG), Pair(PROMPT, LONG, SHORT), Pair(PROMPT, SHORT, SHORT + " Done.")])
    assert [v.winner for v in verdicts] == ["A", "B", "tie"]
    assert "A fails 0" in verdicts[0].raw[0] and "at most 40 words" in verdicts[0].raw[0] and verdicts[0].backend == "rules:concise"


def test_local_backend_reads_verdict_token_probabilities(policy):
    backend = LocalBackend(policy)
    assert [policy.tokenizer.decode([i]) for i in backend.token_ids] == ["A", "B", "TI"]
    with pytest.raises(ValueError, match="share a first token"):
        LocalBackend(policy, labels=("A", "A"))
    persona = load_profile("concise").description
    pairs = [Pair(PROMPT, SHORT, LONG), Pair("Say hi.", "Hi.", "Hello there, friend!")]
    training = policy.model.training
    verdicts = PairwiseJudge(backend).compare(pairs, persona)
    assert policy.model.training == training
    assert len(verdicts) == 2 and all(v.backend == "local:smollm2-135m" and v.winner == combine(*v.orders) for v in verdicts)
    # the reported probabilities are the model's next-token distribution right after the assistant header
    messages = judge_messages(PROMPT, LONG, SHORT, persona)  # pair 0, second order
    ids = torch.tensor([policy.encode_chat(messages)])
    with torch.inference_mode():
        expected = torch.softmax(policy.model(input_ids=ids).logits[0, -1].float(), dim=-1)[backend.token_ids].tolist()
    reply = backend.answer([messages])[0]
    assert list(reply.probs.values()) == pytest.approx(expected, abs=1e-4)
    assert reply.text == ["A", "B", "TIE"][max(range(3), key=expected.__getitem__)]
    assert verdicts[0].raw[1] == reply.describe() and {"A": "B", "B": "A", "TIE": "tie"}[reply.text] == verdicts[0].orders[1]
