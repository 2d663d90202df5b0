"""Benchmark suites: the YAML loader, `hindsight eval` on the real SmolLM2 through real lm-eval and alpaca-eval (the
AlpacaEval judge over real HTTP to the stub provider), the result cache, IFEval equal to lm-eval's own CLI run, and
`hindsight regress` statistics, verdicts and exit codes against hand-computed values."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserInputError
from core.models import resolve_model
from core.stats import delta_se, mean_se, t_critical, two_sided_p, z_critical
from suites.nltk_data import ensure_punkt_tab
from suites.regress import compare_metric, regress
from suites.results import EntryResult, EvalResult, MetricResult
from suites.runner import EvalOptions, evaluate_checkpoint
from suites.suite import SUITES, load_suite

from conftest import HINDSIGHT
from stub_provider import StubProvider

REPLY = re.compile(r"Reply ([AB]):\n<<<\n(.*?)\n>>>", re.DOTALL)


# ----- the suite loader --------------------------------------------------------------------------------------------
def test_shipped_suites_load():
    for name in ("quick", "default", "paper"):
        suite = load_suite(name)
        assert suite.name == name and suite.entries
    assert [e.label() for e in load_suite("quick").entries] == ["ifeval_mini", "mc_mini", "alpaca_mini", "personalization-concise"]


@pytest.mark.parametrize(("body", "where", "words"), [
    ("name: s\nentries:\n  - kind: lm_eval\n    task: ifeval\n    limt: 3\n", ":5: field 'entries.0.limt'", "unknown field"),
    ("name: s\nentries:\n  - kind: lm_eval\n    task: ifeval\n  - kind: bogus\n", ":5: field 'entries.1'", "does not match any of the expected tags"),
    ("name: s\nentries:\n  - kind: alpaca_eval\n    data: x.json\n    annotator: {kind: rules}\n", ":5: field 'entries.0.annotator'", "llm or local"),
    ("name: s\nentries:\n  - kind: lm_eval\n    task: a\n    limit: -1\n", ":5: field 'entries.0.limit'", "greater than 0"),
    ("name: s\nentries:\n  - kind: lm_eval\n    task: mc_mini\n    path: nowhere\n", ":5: field 'entries.0.path'", "no task folder"),
    ("name: s\nentries:\n  - {kind: lm_eval, task: a}\n  - {kind: lm_eval, task: a}\n", ":4: field 'entries.1.name'", "two entries are labelled 'a'"),
    ("name: s\nentries: []\n", ":2: field 'entries'", "at least 1 item"),
    ("name: s\nentries:\n  - kind: lm_eval\n   task: x\n", ":4", "invalid YAML"),
])
def test_bad_suite_files_give_one_line_with_file_line_and_field(tmp_path, body, where, words):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(UserInputError) as caught:
        load_suite(str(path))
    message = caught.value.render()
    assert message.startswith(f"{path}{where}") and words in message and "\n" not in message


def test_a_bad_suite_is_one_line_and_exit_2_from_the_command(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: s\nentries:\n  - kind: lm_eval\n")
    done = subprocess.run([*HINDSIGHT, "eval", "smollm2-135m", "--suite", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and f"{path}:3: field 'entries.0.task': Field required" in done.stderr
    unknown = subprocess.run([*HINDSIGHT, "eval", "smollm2-135m", "--suite", "nosuch"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "no such suite (shipped: default, paper, quick" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and "Traceback" not in unknown.stderr, unknown.stderr


def test_paper_suite_offline_stops_at_once_naming_what_is_missing(tmp_path):
    done = subprocess.run([*HINDSIGHT, "eval", "smollm2-135m", "--suite", "paper"], capture_output=True, text=True, check=False,
                          env={**_env(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
    for missing in ("ifeval (google/IFEval)", "mmlu_pro (TIGER-Lab/MMLU-Pro)", "hellaswag (Rowan/hellaswag)", "alpaca_eval_2 (hf:tatsu-lab/alpaca_eval",
                    "arena_hard (file ", "usereval (file "):
        assert missing in done.stderr


# ----- statistics and verdicts, by hand ----------------------------------------------------------------------------
BASE = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # mean 0.625
CAND = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # mean 0.25; differences: three −1, five 0


def _metric(scores, higher_is_better=True, items=True):
    value, se = mean_se(scores)
    return MetricResult(value=value, stderr=se, n=len(scores), higher_is_better=higher_is_better,
                        items=[str(k) for k in range(len(scores))] if items else None, scores=list(scores) if items else None)


def test_standard_errors_by_hand():
    mean, se = mean_se([1.0, 0.0, 1.0, 1.0])  # sd = √(0.75/3) = 0.5
    assert mean == 0.75 and se == pytest.approx(0.5 / 2)
    assert mean_se([0.3]) == (0.3, None)
    # paired: differences d = (−1,0,0,−1,0,0,0,−1), mean −0.375, Σ(d − mean)² = 3·0.625² + 5·0.375² = 1.875
    assert delta_se(None, None, paired=(BASE, CAND)) == pytest.approx(math.sqrt(1.875 / 7) / math.sqrt(8))
    assert delta_se(0.1, 0.2) == pytest.approx(math.sqrt(0.05))
    assert delta_se(0.1, None) is None
    assert z_critical(0.95) == pytest.approx(1.959964, abs=1e-6) and z_critical(0.99) == pytest.approx(2.575829, abs=1e-6)
    assert two_sided_p(1.96, 1.0) == pytest.approx(0.05, abs=1e-4) and two_sided_p(0.0, 0.0) == 1.0 and two_sided_p(0.1, 0.0) == 0.0


def test_verdicts_from_paired_items_by_hand():
    se = math.sqrt(1.875 / 7) / math.sqrt(8)  # 0.18298; t = 0.375 / 0.18298 = 2.049 with 8 − 1 = 7 degrees of freedom
    c = compare_metric("e", "acc", _metric(BASE), _metric(CAND), confidence=0.95, min_effect=0.0)
    assert c.paired and c.delta == pytest.approx(-0.375) and c.se == pytest.approx(se) and c.n == 8
    # Student t, 7 dof: two-sided p = 0.0796 and 2.049 < t(0.975, 7) = 2.365; the normal z would say p = 0.040, regressed
    assert c.p == pytest.approx(0.0796, abs=5e-4) and c.verdict == "unchanged"
    assert compare_metric("e", "acc", _metric(BASE), _metric(CAND), confidence=0.90, min_effect=0.0).verdict == "regressed"  # 2.049 > 1.895
    assert compare_metric("e", "acc", _metric(BASE), _metric(CAND), confidence=0.90, min_effect=0.4).verdict == "unchanged"  # |−0.375| < 0.4
    assert compare_metric("e", "acc", _metric(CAND), _metric(BASE), confidence=0.90, min_effect=0.0).verdict == "improved"
    # lower is better (e.g. a degeneration rate): the same drop is an improvement
    assert compare_metric("e", "rate", _metric(BASE, False), _metric(CAND, False), confidence=0.90, min_effect=0.0).verdict == "improved"


def test_a_small_paired_sample_uses_student_t_with_n_minus_1_dof():
    # differences d = (−1, 0, −1): mean −2/3, sd = √((1/9 + 4/9 + 1/9) / 2) = 0.57735, se = sd / √3 = 1/3, t = 2 with 2 dof
    base, cand = _metric([1.0, 1.0, 1.0]), _metric([0.0, 1.0, 0.0])
    c = compare_metric("e", "acc", base, cand, confidence=0.90, min_effect=0.0)
    assert c.paired and c.n == 3 and c.se == pytest.approx(1 / 3)
    assert c.p == pytest.approx(1 - 2 / math.sqrt(6), abs=1e-9)  # 2 dof: P(|T| ≥ t) = 1 − t / √(t² + 2) = 0.1835 (z would say 0.0455)
    # 2 dof, solving 1 − t / √(t² + 2) = 0.1 by hand: the 90% critical value is √(2·0.9² / (1 − 0.9²)) = 2.920 > t = 2;
    # the normal 1.645 would call it a regression
    assert t_critical(2, 0.90) == pytest.approx(math.sqrt(2 * 0.9**2 / (1 - 0.9**2)), abs=1e-9) and c.verdict == "unchanged"
    assert compare_metric("e", "acc", base, cand, confidence=0.80, min_effect=0.0).verdict == "regressed"  # t(0.90, 2) = 1.886 < 2


def test_without_shared_items_the_errors_combine_as_independent():
    base, cand = _metric(BASE, items=False), _metric(CAND, items=False)
    c = compare_metric("e", "acc", base, cand, confidence=0.95, min_effect=0.0)
    se = math.sqrt(base.stderr**2 + cand.stderr**2)  # 0.18298² + 0.16366² → 0.2455
    assert not c.paired and c.se == pytest.approx(se) and c.verdict == "unchanged"  # 0.375 < 1.96 · 0.2455
    missing = compare_metric("e", "acc", base.model_copy(update={"stderr": None}), cand, confidence=0.95, min_effect=0.0)
    assert missing.se is None and missing.p is None and missing.verdict == "unchanged"


def _result(model: str, metrics: dict[str, MetricResult], suite: str = "quick") -> EvalResult:
    return EvalResult(model=model, model_path=model, suite=suite, suite_file=f"{suite}.yaml", created="now", backend="hf",
                      entries=[EntryResult(name="mc", kind="lm_eval", metrics=metrics, seconds=1.0, cache_key="k")])


def test_regress_command_exit_codes_and_report(tmp_path):
    base = tmp_path / "base.json"
    cand = tmp_path / "cand.json"
    base.write_text(_result("base", {"acc": _metric(BASE), "acc_norm": MetricResult(value=0.5, stderr=0.01)}).model_dump_json())
    cand.write_text(_result("cand", {"acc": _metric(CAND), "acc_norm": MetricResult(value=0.56, stderr=0.01)}).model_dump_json())
    report = tmp_path / "r.md"
    worse = subprocess.run([*HINDSIGHT, "regress", "--reference", str(base), "--candidate", str(cand), "--report", str(report), "--confidence", "0.9"],
                           capture_output=True, text=True, check=False)
    assert worse.returncode == 1, worse.stderr
    text = report.read_text()
    assert "| mc | acc | 0.625 | 0.250 | -0.375 ± 0.183 (paired) | 0.080 | regressed |" in text  # t = 2.049 > t(0.95, 7 dof) = 1.895
    assert "| mc | acc_norm | 0.500 | 0.560 | +0.060 ± 0.014 | 0.000 | improved |" in text  # √(0.01² + 0.01²) = 0.0141
    assert "**1 regressed**: mc/acc, 1 improved, 0 unchanged." in text
    lenient = subprocess.run([*HINDSIGHT, "regress", "--reference", str(base), "--candidate", str(cand), "--report", str(report)],
                             capture_output=True, text=True)  # 95%: 2.049 < t(0.975, 7 dof) = 2.365
    assert lenient.returncode == 0 and "no significant regression" in lenient.stdout
    other = tmp_path / "other.json"
    other.write_text(_result("x", {"acc": _metric(CAND)}, suite="default").model_dump_json())
    mixed = subprocess.run([*HINDSIGHT, "regress", "--reference", str(base), "--candidate", str(other)], capture_output=True, text=True, check=False)
    assert mixed.returncode == 2 and "suite 'quick' and the candidate on 'default'" in mixed.stderr


def test_regress_pairs_items_by_id_whatever_their_order():
    base = regress(_result("a", {"acc": _metric(BASE)}), _result("b", {"acc": _metric(CAND)})).comparisons[0]
    shuffled = _metric(CAND).model_copy(update={"items": [str(k) for k in reversed(range(8))], "scores": list(reversed(CAND))})
    again = regress(_result("a", {"acc": _metric(BASE)}), _result("b", {"acc": shuffled})).comparisons[0]
    assert again.paired and again.se == pytest.approx(base.se)


# ----- real evaluation: lm-eval, alpaca-eval, the cache ------------------------------------------------------------
def _shorter_wins(body: dict) -> tuple[str, int, int]:
    """A stand-in judge: the shorter reply wins, equal lengths tie."""
    (_, a), (_, b) = REPLY.findall(body["messages"][-1]["content"])
    return ("A" if len(a) < len(b) else "B" if len(b) < len(a) else "TIE"), 50, 1


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "HINDSIGHT_EVAL_CACHE": str(tmp_path / "eval-cache")}


SUITE = """
name: tiny
entries:
  - kind: lm_eval
    task: ifeval_mini
    path: {suites}/tasks/ifeval_mini
    metrics: [prompt_level_loose_acc, inst_level_loose_acc]
    limit: 3
    gen_kwargs: {{max_gen_toks: 40}}
  - kind: lm_eval
    task: mc_mini
    path: {suites}/tasks/mc_mini
    limit: 4
  - kind: alpaca_eval
    name: alpaca
    data: {suites}/data/alpaca_mini.json
    annotator: {{kind: llm, llm: {{model: openai/judge, api_base: "{base}", retries: 0, max_tokens: 4}}}}
    max_new_tokens: 40
    limit: 6
  - kind: personalization
    profile: concise
    n: 3
    max_new_tokens: 40
"""


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory):
    """The embedded model on a small suite, once: (suite file, result, stub requests, eval cache folder)."""
    import os

    tmp = tmp_path_factory.mktemp("tiny")
    requests: list[dict] = []
    with StubProvider(_shorter_wins, requests) as stub:
        path = tmp / "tiny.yaml"
        path.write_text(SUITE.format(suites=SUITES, base=stub.base))
        old = os.environ.get("HINDSIGHT_EVAL_CACHE")
        os.environ["HINDSIGHT_EVAL_CACHE"] = str(tmp / "eval-cache")
        try:
            result = evaluate_checkpoint("smollm2-135m", load_suite(str(path)), EvalOptions(batch_size=2, device="cpu"))
        finally:
            os.environ.pop("HINDSIGHT_EVAL_CACHE") if old is None else os.environ.__setitem__("HINDSIGHT_EVAL_CACHE", old)
        yield path, result, requests, tmp / "eval-cache"


def test_eval_result_has_every_metric_with_a_standard_error(tiny_eval):
    _, result, _, _ = tiny_eval
    names = {e.name: sorted(e.metrics) for e in result.entries}
    assert names == {"ifeval_mini": ["inst_level_loose_acc", "prompt_level_loose_acc"], "mc_mini": ["acc", "acc_norm"],
                     "alpaca": ["lc_win_rate", "win_rate"], "personalization-concise": ["compliance", "win_rate"]}
    assert result.cache_hits == 0
    for entry in result.entries:
        for name, m in entry.metrics.items():
            assert 0.0 <= m.value <= 1.0 and m.stderr is not None and m.stderr >= 0, (entry.name, name)
            assert m.scores and m.value == pytest.approx(sum(m.scores) / len(m.scores)), (entry.name, name)
    ifeval = result.metric("ifeval_mini", "prompt_level_loose_acc")
    assert ifeval.n == 3 and ifeval.stderr == pytest.approx(mean_se(ifeval.scores)[1])
    assert result.metric("mc_mini", "acc").n == 4


def test_alpaca_eval_runs_alpaca_evals_own_code_with_our_judge_over_http(tiny_eval):
    _, result, requests, _ = tiny_eval
    alpaca = next(e for e in result.entries if e.name == "alpaca")
    pairs = alpaca.details["pairs"]
    assert len(pairs) == 6 and alpaca.details["annotator"] == "litellm:openai/judge"
    # the stub prefers the shorter reply, so the model wins where its answer is shorter than the reference
    expected = [1.0 if len(p["output"].strip()) < len(p["reference"]) else 0.5 if p["output"].strip() == p["reference"] else 0.0 for p in pairs]
    assert alpaca.metrics["win_rate"].value == pytest.approx(sum(expected) / 6)
    assert alpaca.metrics["win_rate"].stderr == pytest.approx(mean_se(expected)[1])
    judged = [r for r in requests if "Which reply serves the instruction better?" in r["body"]["messages"][-1]["content"]]
    assert len(judged) == sum(p["output"].strip() != p["reference"] for p in pairs)  # alpaca-eval skips identical outputs
    assert 0.0 <= alpaca.metrics["lc_win_rate"].value <= 1.0 and alpaca.metrics["lc_win_rate"].n == 6


def test_an_unchanged_rerun_is_served_from_the_cache_without_loading_a_model(tiny_eval, tmp_path):
    path, first, _, cache = tiny_eval
    out = tmp_path / "again.json"
    # no stub is running now: a judge call or a model load would fail; the rerun must need neither
    env = {**_env(tmp_path), "HINDSIGHT_EVAL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*HINDSIGHT, "eval", "smollm2-135m", "--suite", str(path), "--batch-size", "2", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    again = EvalResult.model_validate_json(out.read_text())
    assert again.cache_hits == 4 and "4/4 entries from the cache" in done.stdout.replace("\n", " ")
    assert [e.metrics for e in again.entries] == [e.metrics for e in first.entries]
    assert "Loading weights" not in done.stderr and "running" not in done.stdout
    # a changed option is a different evaluation: not served from the cache (checked without running it)
    from suites.runner import entry_key, fingerprint

    suite = load_suite(str(path))
    model = fingerprint(resolve_model("smollm2-135m"))
    keys = {entry_key(e, suite, model, EvalOptions(batch_size=2, device="cpu"), "hf") for e in suite.entries}
    assert keys == {e.cache_key for e in first.entries}
    assert entry_key(suite.entries[0], suite, model, EvalOptions(batch_size=2, device="cpu", limit=2), "hf") not in keys


def test_ifeval_equals_lm_evals_own_cli_run_on_the_same_data_and_model(tiny_eval, tmp_path):
    _, result, _, _ = tiny_eval
    ours = next(e for e in result.entries if e.name == "ifeval_mini")
    folder = resolve_model("smollm2-135m")
    out = tmp_path / "lm-eval"
    nltk_data = ensure_punkt_tab()  # lm-eval's own CLI finds it through NLTK_DATA, as any user's would
    done = subprocess.run([str(Path(sys.executable).with_name("lm-eval")), "run", "--model", "hf", "--model_args", f"pretrained={folder},dtype=float32", "--device", "cpu",
                           "--tasks", "ifeval_mini", "--include_path", str(SUITES / "tasks" / "ifeval_mini"), "--limit", "3", "--batch_size", "2",
                           "--apply_chat_template", "--gen_kwargs", "max_gen_toks=40", "--output_path", str(out), "--log_samples"],
                          capture_output=True, text=True, env={**_env(tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NLTK_DATA": str(nltk_data)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["ifeval_mini"]
    assert ours.metrics["prompt_level_loose_acc"].value == results["prompt_level_loose_acc,none"]
    assert ours.metrics["inst_level_loose_acc"].value == results["inst_level_loose_acc,none"]
    samples = [json.loads(line) for line in next(out.rglob("samples_ifeval_mini_*.jsonl")).read_text().splitlines()]
    theirs = {s["doc_id"]: s["filtered_resps"][0] for s in samples}
    assert {r["doc_id"]: r["response"] for r in ours.details["responses"]["ifeval_mini"]} == theirs


def test_punkt_tab_is_written_locally_and_knows_english_abbreviations(tmp_path):
    import nltk
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTokenizer

    root = ensure_punkt_tab(tmp_path / "nltk_data")
    folder = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in folder.iterdir()) == ["abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"]
    text = "Dr. Smith met Mr. Jones at 3 p.m. on Monday. They spoke for an hour! Then both went home."
    assert str(nltk.data.find("tokenizers/punkt_tab/english/abbrev_types.txt")).startswith(str(root))  # found first on NLTK's path
    trained = PunktTokenizer("english").tokenize(text)
    assert trained == ["Dr. Smith met Mr. Jones at 3 p.m. on Monday.", "They spoke for an hour!", "Then both went home."]
    assert len(PunktSentenceTokenizer().tokenize(text)) > 3  # an untrained splitter breaks after "Dr." and "Mr."
    from lm_eval.tasks.ifeval.instructions_util import count_sentences  # IFEval's own counter finds the same data

    assert count_sentences(text) == 3
