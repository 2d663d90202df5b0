"""Page-load time of `hindsight view` on a large sweep, in headless Chromium.

    .venv/bin/python bench/view_load.py                 # a synthetic 34-profile sweep (1 seed, 64 interactions each)
    .venv/bin/python bench/view_load.py --runs 34 --seeds 3 --repeats 5

Writes a synthetic sweep (every benign shipped profile, or --runs of them, each a full run log with the sizes of a real
default run: 64 interactions per arm in batches of 4, evaluations every 32 on 32 held-out prompts, a 96-token signal
per interaction), builds its site, then opens the runs index and one run page from disk (file://) in Chromium
(/usr/bin/chromium, or --chromium) and times each from navigation until the page has drawn (``body[data-ready]``),
best and median of --repeats. Target: both under 2 s. Prints a markdown table and one JSON line; exit 1 over target.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.records import EvalRecord, InteractionRecord, RunInfo, SampleRecord, SignalRecord, TrainRecord, append_jsonl, write_json  # noqa: E402
from harness.config import RunConfig  # noqa: E402
from harness.view import Site  # noqa: E402
from simulators.profile import available_profiles, load_profile  # noqa: E402

TARGET = 2.0
WORDS = "the a policy answer user short long because which tokens model learns from follow up message concise clear".split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _eval(arm: str, seed: int, x: int, rng: random.Random, judged: bool) -> EvalRecord:
    share = lambda: round(rng.random(), 4)  # noqa: E731
    win = round(rng.random(), 4) if judged else None
    return EvalRecord(arm=arm, seed=seed, interactions=x, n=32, compliance=share(), clean=share(), degenerate=share(), relevant=share(),
                      mean_words=rng.uniform(20, 120), apology=0.0, meta=0.0, looping=share(), empty=0.0, truncated=share(), repetition=share(),
                      distinct2=share(), prompt_similarity=share(), reference_similarity=share(), kl=None if arm == "oracle" else rng.random(),
                      seconds=60.0, judge="rules" if judged else None, win_rate=win, win_low=None if win is None else max(0, win - 0.1),
                      win_high=None if win is None else min(1, win + 0.1))


def synthetic_run(folder: Path, profile: str, seeds: int, interactions: int = 64, batch: int = 4, every: int = 32, prompts: int = 32) -> None:
    """A complete run log of the default run's shape, with random numbers and text."""
    rng = random.Random(profile)
    folder.mkdir(parents=True)
    config = RunConfig(profile=profile, interactions=interactions, batch_size=batch, seeds=seeds)
    (folder / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    write_json(folder / "run.json", RunInfo(run_id=folder.name, status="finished", seconds=rng.uniform(600, 1200)))
    checks = [c.describe() for c in load_profile(profile).checks]
    held = [f"held-out prompt {k}: {_text(rng, 8)}?" for k in range(prompts)]

    def samples(arm: str, seed: int, x: int) -> None:
        for prompt in held:
            failed = [c for c in checks if rng.random() < 0.5]
            append_jsonl(folder / "samples.jsonl", SampleRecord(
                arm=arm, seed=seed, interactions=x, prompt=prompt, answer=_text(rng, rng.randint(10, 110)), words=40, compliant=not failed,
                failed_checks=failed, degeneration=[], prompt_similarity=0.5, reference_similarity=0.7, novel_words=5, relevant=True,
                clean=not failed, verdict=None if arm == "initial" else rng.choice(["A", "B", "tie"])))

    for arm in ("initial", "oracle"):
        append_jsonl(folder / "metrics.jsonl", _eval(arm, 0, 0, rng, judged=arm == "oracle"))
        samples(arm, 0, 0)
    for seed in range(seeds):
        for arm in ("treated", "control"):
            for step in range(interactions // batch):
                for index in range(step * batch, (step + 1) * batch):
                    tokens = [rng.choice(WORDS) for _ in range(96)]
                    append_jsonl(folder / "interactions.jsonl", InteractionRecord(
                        arm=arm, seed=seed, index=index, step=step, prompt=_text(rng, 10), response=" ".join(tokens), response_tokens=96,
                        finished=False, followup=_text(rng, 6), followup_raw="", satisfied=rng.random() < 0.5 if arm == "treated" else None,
                        advantage={"mean": 0.0, "min": -1.0, "max": 1.0, "tokens": 96}))
                    append_jsonl(folder / "signals.jsonl", SignalRecord(arm=arm, seed=seed, index=index, step=step, tokens=[" " + t for t in tokens],
                                                                        ids=list(range(96)), advantage=[round(rng.gauss(0, 0.3), 4) for _ in tokens],
                                                                        reference="neutral"))
                x = (step + 1) * batch
                metrics = {"loss": rng.random(), "grad_norm": rng.random(), "advantage_mean": rng.gauss(0, 0.1)}
                append_jsonl(folder / "metrics.jsonl", TrainRecord(arm=arm, seed=seed, step=step, interactions=x, timings={"step": 20.0}, metrics=metrics))
                if x % every == 0:
                    append_jsonl(folder / "metrics.jsonl", _eval(arm, seed, x, rng, judged=True))
                    samples(arm, seed, x)


def synthetic_sweep(folder: Path, runs: int, seeds: int) -> list[str]:
    profiles = sorted(name for name in available_profiles() if not load_profile(name).adversarial)[:runs]
    for name in profiles:
        synthetic_run(folder / "runs" / name, name, seeds)
    return profiles


def _time_pages(site: Path, pages: dict[str, str], repeats: int, chromium: str) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {name: [] for name in pages}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for _ in range(repeats):
            for name, fragment in pages.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})  # a new page each time: nothing cached in memory
                start = time.perf_counter()
                page.goto((site / "index.html").as_uri() + fragment)
                page.wait_for_selector(f"body[data-ready='{fragment.split('&')[0].removeprefix('#page=') or 'index'}']", timeout=30_000)
                times[name].append(time.perf_counter() - start)
                page.close()
        browser.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=34)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hindsight-view-bench-") as tmp:
        sweep = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        profiles = synthetic_sweep(sweep, args.runs, args.seeds)
        t1 = time.perf_counter()
        site = Site([sweep], sweep / "view")
        site.build()
        t2 = time.perf_counter()
        size = sum(f.stat().st_size for f in (sweep / "view").rglob("*") if f.is_file())
        run = site._keys[(sweep / "runs" / profiles[len(profiles) // 2]).resolve()]
        pages = {"runs index": "", "run page": f"#page=run&run={run}", "interactions page": f"#page=interactions&run={run}"}
        times = _time_pages(sweep / "view", pages, args.repeats, args.chromium)
    rows = {name: {"best": min(v), "median": statistics.median(v)} for name, v in times.items()}
    print(f"| page ({len(profiles)} runs × {args.seeds} seed(s); site {size / 1e6:.1f} MB, built in {t2 - t1:.1f} s) | best (s) | median (s) | target |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['best']:.3f} | {row['median']:.3f} | {'< 2 s' if name != 'interactions page' else '–'} |")
    print(json.dumps({"runs": len(profiles), "seeds": args.seeds, "write_s": round(t1 - t0, 2), "build_s": round(t2 - t1, 2), "site_bytes": size,
                      **{name.replace(" ", "_"): {k: round(v, 3) for k, v in row.items()} for name, row in rows.items()}}))
    over = [name for name in ("runs index", "run page") if rows[name]["median"] >= TARGET]
    if over:
        print(f"over the {TARGET} s target: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
