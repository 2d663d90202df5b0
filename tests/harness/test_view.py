"""`hindsight view` and `hindsight signal` on a real tiny run: the per-token signals it recorded, the site's data, the site
served over real HTTP following a run in progress, and the pages in headless Chromium (Debian's, driven by playwright):
curves drawn, tokens coloured by their advantage, filters, the signal page; screenshots are saved."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from core.records import InteractionRecord, RunInfo, SignalRecord, read_jsonl, write_json
from harness.view import Site, make_server
from simulators.profile import load_profile

from conftest import HINDSIGHT

CHROMIUM = Path("/usr/bin/chromium")
TINY = ["personalize", "--profile", "concise", "-n", "4", "--batch-size", "2", "--eval-every", "2", "--eval-prompts", "2", "--max-new-tokens", "12",
        "--set", "eval.max_new_tokens=12", "--set", "eval.kl_prompts=2", "--control", "--oracle", "--jobs", "2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A real run: 4 interactions per arm, evaluations at 0, 2 and 4 on 2 held-out prompts, control and oracle."""
    results = tmp_path_factory.mktemp("view")
    result = subprocess.run([*HINDSIGHT, *TINY, "--results", str(results), "--run-id", "tiny"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return results / "tiny"


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoints", "state", "view"))
    return target


def document(path: Path) -> tuple[str, dict]:
    """A data file's key and document: each is one statement, HS.put("KEY",{...});"""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("HS.put(") and text.endswith(");\n")
    key, _, body = text[len("HS.put("):-3].partition(",")
    return json.loads(key), json.loads(body)


def test_every_trained_interaction_has_its_tokens_and_their_advantages(tiny):
    interactions = list(read_jsonl(tiny / "interactions.jsonl", InteractionRecord))
    signals = {(s.arm, s.seed, s.index): s for s in read_jsonl(tiny / "signals.jsonl", SignalRecord)}
    assert len(interactions) == 8 and set(signals) == {(r.arm, r.seed, r.index) for r in interactions}
    for r in interactions:
        s = signals[(r.arm, r.seed, r.index)]
        assert s.step == r.step and s.reference == "neutral" and s.pair is None
        assert len(s.ids) == len(s.tokens) == len(s.advantage) == r.response_tokens == r.advantage["tokens"]
        assert sum(s.advantage) / len(s.advantage) == pytest.approx(r.advantage["mean"], abs=1e-3)
        assert "".join(s.tokens).strip().startswith(r.response[:20].strip())


def test_the_site_holds_each_runs_records_in_documents_loaded_on_demand(tiny, cli, tmp_path):
    out = tmp_path / "site"
    result = cli("view", str(tiny), "--out", str(out))
    assert result.code == 0, result.stderr
    assert (out / "index.html").is_file() and (out / "hs.js").is_file()
    html = (out / "index.html").read_text()
    assert "http" not in html.replace('name="viewport"', "")  # no network: every script and style is beside the page
    _, index = document(out / "data" / "index.js")
    (row,) = index["runs"]
    assert (row["id"], row["status"], row["profile"], row["method"], row["n"]) == ("tiny", "finished", "concise", "sdpo", 4)
    assert set(row["clean"]) == {"initial", "oracle", "treated", "control"} and row["clean"]["treated"][0] == 4
    files = sorted(p.name for p in (out / "data" / "tiny").iterdir())
    assert files == ["interactions.js", "run.js", "samples-0.js", "samples-2.js", "samples-4.js", "signals-0.js"]
    key, run = document(out / "data" / "tiny" / "run.js")
    assert key == "tiny/run" and run["points"] == [0, 2, 4] and run["interactions"] == 8
    curves = run["preferences"][0]["curves"]
    assert [p[0] for p in curves["clean"]["treated"]] == [0, 2, 4] and curves["clean"]["oracle"][0][0] == 0
    assert all(p[2] <= p[1] <= p[3] for p in curves["clean"]["treated"])  # [x, mean, low, high, seeds]
    assert run["checks"][""] == [c.describe() for c in load_profile("concise").checks] and "control" in run["preferences"][0]["verdict"]
    assert {"loss", "advantage_mean"} <= set(run["train"])
    _, interactions = document(out / "data" / "tiny" / "interactions.js")
    assert len(interactions["rows"]) == 8 and all(r["chunk"] == 0 and "tokens" in r for r in interactions["rows"])
    _, chunk = document(out / "data" / "tiny" / "signals-0.js")
    assert len(chunk["rows"]) == 8 and all(len(s["advantage"]) == len(s["tokens"]) for s in chunk["rows"])
    _, samples = document(out / "data" / "tiny" / "samples-4.js")
    assert {r["arm"] for r in samples["rows"]} == {"treated", "control"} and len(samples["rows"]) == 4
    everything = cli("view", "--results", str(tiny.parent))  # no run named: every run under --results, into results/view/
    assert everything.code == 0 and (tiny.parent / "view" / "data" / "tiny" / "run.js").is_file()


def test_a_sweeps_runs_are_found_below_it_and_keep_distinct_keys(tmp_path):
    """Runs are found up to three levels down (results/SWEEP/runs/CELL), never inside a run; equal names get distinct keys."""
    from harness.config import RunConfig
    from harness.view import find_runs, sources

    for cell in ("sweep/runs/concise-s0", "sweep/runs/no_emojis-s0", "other/runs/concise-s0", "plain"):
        (tmp_path / cell).mkdir(parents=True)
        (tmp_path / cell / "config.yaml").write_text(RunConfig().to_yaml())
    (tmp_path / "plain" / "view" / "nested").mkdir(parents=True)
    (tmp_path / "plain" / "view" / "nested" / "config.yaml").write_text("not looked at")
    assert [p.relative_to(tmp_path).as_posix() for p in find_runs(tmp_path)] == [
        "other/runs/concise-s0", "plain", "sweep/runs/concise-s0", "sweep/runs/no_emojis-s0"]
    assert [(p.name, sweep) for p, sweep in sources([tmp_path / "sweep", tmp_path / "plain"])] == [
        ("concise-s0", "sweep"), ("no_emojis-s0", "sweep"), ("plain", None)]
    site = Site([tmp_path], tmp_path / "view")
    site.build()  # runs that have not written a record yet still get a row
    _, index = document(tmp_path / "view" / "data" / "index.js")
    assert sorted(r["key"] for r in index["runs"]) == ["concise-s0", "no_emojis-s0", "plain", "sweep.concise-s0"]
    assert all(r["clean"] == {} and r["status"] is None for r in index["runs"])
    assert site.refresh() is False  # nothing changed: nothing rewritten
    (tmp_path / "plain" / "metrics.jsonl").write_text("")
    assert site.refresh() is True


def test_bad_input_is_one_line(cli, tmp_path):
    result = cli("view", "no-such-run", "--results", str(tmp_path))
    assert result.code == 2 and "no-such-run: no such run or sweep" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    result = cli("view", str(tmp_path / "empty"))
    assert result.code == 2 and "no run under it" in result.stderr
    result = cli("signal", "--prompt", "Hi")
    assert result.code == 2 and "give --run RUN" in result.stderr
    result = cli("signal", "--prompt", "Hi", "--answer", "Hello.", "--followup", "no equals sign")
    assert result.code == 2 and "LABEL=TEXT" in result.stderr


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_the_served_site_follows_a_run_in_progress(tiny, tmp_path):
    """Over real HTTP on 127.0.0.1: a run's new records show on the next request, and a new run in the sweep appears."""
    sweep = tmp_path / "sweep"
    run = copy_run(tiny, sweep / "runs" / "a")
    info = RunInfo.model_validate_json((run / "run.json").read_text())
    write_json(run / "run.json", info.model_copy(update={"status": "running"}))
    site = Site([sweep], sweep / "view")
    site.build()
    server = make_server(site, port=0, every=0.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert "HS.start()" in _get(base + "/")
        first = json.loads(_get(base + "/data/index.js")[len('HS.put("index",'):-3])
        assert [r["status"] for r in first["runs"]] == ["running"] and first["runs"][0]["sweep"] == "sweep"
        write_json(run / "run.json", info.model_copy(update={"status": "finished"}))
        copy_run(tiny, sweep / "runs" / "b")
        time.sleep(0.05)
        second = json.loads(_get(base + "/data/index.js")[len('HS.put("index",'):-3])
        assert [(r["id"], r["status"]) for r in second["runs"]] == [("a", "finished"), ("b", "finished")] and second["stamp"] != first["stamp"]
        assert '"status":"finished"' in _get(base + "/data/a/run.js")
    finally:
        server.shutdown()
        server.server_close()


# ----- in the browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests: {CHROMIUM} missing (`make test` as root installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests: playwright missing (pip install -e '.[view]')")
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield instance
        instance.close()


def open_page(browser, url: str, page: str):
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(url)
    tab.wait_for_selector(f"body[data-ready='{page}']", timeout=20_000)
    return tab, errors


def test_the_pages_in_chromium(tiny, cli, browser, tmp_path):
    run = copy_run(tiny, tmp_path / "results" / "tiny")
    result = cli("signal", "--run", str(run))  # the first treated interaction whose user complained → tiny/signal/
    assert result.code == 0, result.stderr
    out = tmp_path / "site"
    assert cli("view", str(run), "--out", str(out)).code == 0
    home = (out / "index.html").as_uri()

    index, errors = open_page(browser, home, "index")
    assert index.locator("table.runs tbody tr").count() == 1
    index.fill("input.filter", "no such run")
    assert index.locator("table.runs tbody tr").count() == 0 and "0 of 1 runs" in index.inner_text(".count")
    index.fill("input.filter", "conc")  # matches the profile
    assert index.locator("table.runs tbody tr").count() == 1
    index.screenshot(path=str(tmp_path / "index.png"))

    page, errors_run = open_page(browser, home + "#page=run&run=tiny", "run")
    paths = page.locator("svg.chart path.line")
    assert paths.count() >= 7 * 2  # every metric, treated and control
    assert all(len(d or "") > 10 for d in paths.evaluate_all("(ps) => ps.map((p) => p.getAttribute('d'))"))
    assert page.locator("svg.chart polygon.band").count() > 0 and page.locator("svg.chart line.ref").count() > 0
    assert page.locator("table.side-by-side tbody tr").count() == 2  # the two held-out prompts
    assert page.locator("table.side-by-side thead th").all_inner_texts()[1:] == ["untrained", "in-context oracle", "treated (4)", "control (4)"]
    assert page.locator("td.answer .badge.pass, td.answer .badge.fail").count() > 8  # each check's result, clean, the verdict
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    tab, errors_tab = open_page(browser, home + "#page=interactions&run=tiny", "interactions")
    assert tab.locator("article.interaction").count() == 8
    coloured = tab.locator("article.interaction .tok[data-v]")
    assert coloured.count() == sum(r.response_tokens for r in read_jsonl(run / "interactions.jsonl", InteractionRecord))
    backgrounds = coloured.evaluate_all("(ts) => ts.map((t) => getComputedStyle(t).backgroundColor)")
    assert all(b.startswith("rgba(") and b != "rgba(0, 0, 0, 0)" for b in backgrounds)
    assert {b.split(",")[0] for b in backgrounds} == {"rgba(33", "rgba(178"}  # blue (pushed up) and red (pushed down)
    assert " · A = " in coloured.first.get_attribute("title")
    tab.select_option("select[aria-label=arm]", "control")
    tab.wait_for_function("document.querySelectorAll('article.interaction').length === 4")
    assert set(tab.locator("article.interaction").evaluate_all("(as) => as.map((a) => a.dataset.arm)")) == {"control"}
    assert "arm=control" in tab.url
    cards = "[...document.querySelectorAll('article.interaction')]"
    tab.select_option("select[aria-label=arm]", "")
    satisfied = sum(r.satisfied is True for r in read_jsonl(run / "interactions.jsonl", InteractionRecord))
    tab.select_option("select[aria-label=satisfied]", "yes")  # only the treated arm's user says whether it is satisfied
    tab.wait_for_function(f"{cards}.length === {satisfied} && {cards}.every((a) => a.dataset.arm === 'treated')")
    assert tab.locator("article.interaction .badge.pass", has_text="satisfied").count() == satisfied
    tab.select_option("select[aria-label=satisfied]", "")
    tab.fill("input[aria-label='update from']", "1")
    tab.wait_for_function(f"{cards}.length === 4 && {cards}.every((a) => a.innerText.includes('update 1'))")
    tab.screenshot(path=str(tmp_path / "interactions.png"))

    name = next(iter((run / "signal").glob("*.json"))).stem
    signal, errors_signal = open_page(browser, home + f"#page=signal&doc=tiny/signal-{name}", "signal")
    rows = signal.locator("table.heatmap tr")
    assert rows.count() == 4 and rows.locator(".tok[data-v]").count() == 4 * len(json.loads((run / "signal" / f"{name}.json").read_text())["tokens"])
    assert rows.nth(0).inner_text().startswith("complaint")
    signal.screenshot(path=str(tmp_path / "signal.png"))

    compare, errors_compare = open_page(browser, home + "#page=compare&runs=tiny", "compare")
    assert compare.locator("svg.chart path.line").count() >= 7
    assert errors + errors_run + errors_tab + errors_signal + errors_compare == []
    assert all((tmp_path / f"{n}.png").read_bytes()[:4] == b"\x89PNG" for n in ("index", "run", "interactions", "signal"))


def test_a_served_page_redraws_when_its_run_moves_on(tiny, browser, tmp_path):
    run = copy_run(tiny, tmp_path / "results" / "tiny")
    info = RunInfo.model_validate_json((run / "run.json").read_text())
    write_json(run / "run.json", info.model_copy(update={"status": "running"}))
    site = Site([run], tmp_path / "site")
    site.build()
    server = make_server(site, port=0, every=0.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page, errors = open_page(browser, f"http://127.0.0.1:{server.server_address[1]}/#page=run&run=tiny", "run")
        assert page.inner_text(".run-head .badge") == "running"
        write_json(run / "run.json", info.model_copy(update={"status": "finished"}))
        page.wait_for_function("document.querySelector('.run-head .badge').textContent === 'finished'", timeout=15_000)  # the page polls every 3 s
        assert errors == []
    finally:
        server.shutdown()
        server.server_close()
