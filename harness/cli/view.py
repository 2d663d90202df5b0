"""Looking at runs in a browser: view (a static site, or served live) and signal (one answer's per-token advantage
under several follow-ups)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import UserInputError
from harness.cli.base import RESULTS, app, console
from harness.cli.options import AdvantageReference, Results, plain


def _out(paths: list[Path], results: Path) -> Path:
    """One run or sweep: its own view/ folder; several (or all runs): results/view/."""
    return paths[0] / "view" if len(paths) == 1 and paths[0] != results else results / "view"


@app.command(rich_help_panel="Runs")
def view(
    runs: Annotated[Optional[list[str]], typer.Argument(metavar="[RUN|SWEEP]...", help=(
        "Run ids or paths, or sweep folders (every run below them). Default: every run under --results."))] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the site (default: RUN/view/ for one run or sweep, else results/view/).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the site on 127.0.0.1 and keep it current while runs are in progress (Ctrl-C stops).")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port for --serve (0: any free one).")] = 8765,
    results: Results = RESULTS,
) -> None:
    """Write a static site of runs: the runs index (sortable, filterable), each run's curves, held-out answers and config,
    its interactions with every answer's tokens coloured by their advantage, runs compared, and `hindsight signal` figures.

    The site opens from disk (index.html; no network, no library) and loads each run's records only when a page needs
    them. With --serve it is served on 127.0.0.1, rewritten on request when a run's files change, and the open page redraws.

    Examples:

      hindsight view RUN                 # writes results/RUN/view/; open results/RUN/view/index.html

      hindsight view results/SWEEP       # every run of a sweep, one index

      hindsight view --serve --port 8765 # every run under results/, live
    """
    from harness.view import Site, make_server

    paths = [_folder(r, results) for r in runs] if runs else [results]
    if not runs and not results.is_dir():
        raise UserInputError(f"{results}: no such folder (--results names where runs are)")
    site = Site(paths, out or _out(paths, results), title=", ".join(p.name for p in paths) if runs else f"runs in {results}")
    index = site.build()
    for problem in site.problems:
        console.print(f"[yellow]left out:[/yellow] {problem}", highlight=False)
    console.print(f"wrote {index} ({len(site._rows)} runs); open it in a browser", highlight=False)
    if not serve:
        return
    try:
        server = make_server(site, port)
    except OSError as exc:
        raise UserInputError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); pick another port, or 0 for any free one") from None
    console.print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _folder(run: str, results: Path) -> Path:
    """A run id or path, or a folder holding runs (a sweep)."""
    path = Path(run)
    if path.is_dir():
        return path
    if (results / run).is_dir():
        return results / run
    raise UserInputError(f"{run}: no such run or sweep (looked for {path} and {results / run}); `hindsight runs` lists runs")


@app.command(rich_help_panel="Runs")
def signal(
    run: Annotated[Optional[str], typer.Option("--run", help="Take the prompt and answer from this run's interactions (see --index).")] = None,
    arm: Annotated[str, typer.Option(help="With --run: the arm whose interaction is taken.")] = "treated",
    seed: Annotated[Optional[int], typer.Option(help="With --run: the seed (default: any).")] = None,
    index: Annotated[Optional[int], typer.Option(help="With --run: the interaction's index (default: the first whose user complained).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="The prompt (instead of --run).")] = None,
    answer: Annotated[Optional[str], typer.Option(help="The answer to score (instead of --run).")] = None,
    profile: Annotated[Optional[str], typer.Option(help=(
        "The profile whose complaint and satisfied reply are rows (default: the run's user at that interaction, else concise)."))] = None,
    followup: Annotated[Optional[list[str]], typer.Option("--followup", help="An extra row, LABEL=TEXT (repeatable).")] = None,
    advantage_reference: Annotated[Optional[AdvantageReference], typer.Option(help=(  # type: ignore[valid-type]
        "The advantage reference (default: the run's trainer.advantage_reference, else neutral)."))] = None,
    model: Annotated[Optional[str], typer.Option(help=(
        "The model scoring the answer, e.g. a run's checkpoints/treated-s0 (default: the run's, else the embedded one)."))] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write (default: RUN/signal/ with --run, else results/signal/).")] = None,
    results: Results = RESULTS,
) -> None:
    """The per-token advantage SDPO would give one answer under several follow-ups: the profile's complaint, a satisfied
    reply, an unrelated question and a neutral message, as rows of one heatmap (the SDPO paper's signal analysis).

    Writes NAME.png and NAME.json (NAME: the interaction, or the prompt, and the reference); with --run they go to
    RUN/signal/ and `hindsight view RUN` shows them on its signal page, otherwise OUT/view/ holds a site with the figure.
    Scored with the SDPO trainer's own code (nothing is trained).

    Examples:

      hindsight signal --run RUN                                  # the first treated interaction whose user complained

      hindsight signal --prompt "How do I boil an egg?" --answer "Put the egg in boiling water for 9 minutes." --profile concise
    """
    from core.policy import Policy, PolicySettings
    from core.runtime import quiet_libraries
    from harness.runs import read_config, run_dir
    from harness.signals import draw, pick_interaction, signal_figure, slug
    from simulators.neutral import load_pool
    from simulators.profile import load_profile
    from trainers.sdpo import SDPOConfig

    if run is None and (prompt is None or answer is None):
        raise UserInputError("give --run RUN (an answer from its interactions), or both --prompt and --answer")
    if run is not None and (prompt is not None or answer is not None):
        raise UserInputError("--run takes the prompt and answer from the run: leave out --prompt and --answer")
    extra = []
    for item in followup or []:
        label, sep, text = item.partition("=")
        if not sep or not label.strip() or not text.strip():
            raise UserInputError(f"--followup {item!r}: write LABEL=TEXT, e.g. --followup 'praise=Great answer!'")
        extra.append((label.strip(), text.strip()))
    config: dict = {}
    folder = None
    if run is not None:
        folder = run_dir(run, results)
        config = read_config(folder)
    trainer = dict(config.get("trainer") or {})
    if advantage_reference is not None:
        trainer.pop("baseline", None)  # the old name of the field, in runs written before the rename
        trainer["advantage_reference"] = plain(advantage_reference)
    trainer_config = SDPOConfig.model_validate(trainer)
    policy_settings = PolicySettings.model_validate(config.get("policy") or {})
    if model is not None:
        policy_settings = policy_settings.model_copy(update={"model": model, "lora": None})
    record, ids = pick_interaction(folder, arm, seed, index) if folder is not None else (None, None)
    if record is None and not answer.strip():
        raise UserInputError("--answer is empty: there is no token to score")
    flipped = record.profile if record is not None and config.get("flip_at") else None  # the user's profile at that interaction
    the_profile = load_profile(profile or flipped or config.get("profile") or "concise")
    pool = load_pool(config.get("neutral_pool") or "builtin")
    quiet_libraries()
    with console.status("loading the model"):
        policy = Policy.load(policy_settings)
    if record is not None:
        prompt, name = record.prompt, f"{record.arm}-s{record.seed}-i{record.index}-{trainer_config.advantage_reference}"
        source = f"{folder.name} {record.arm} s{record.seed} interaction {record.index}"
        if ids is None:  # a run from before signals.jsonl: the answer's text, tokenized again
            ids = policy.tokenizer.encode(record.response, add_special_tokens=False) + ([policy.eos_token_id] if record.finished else [])
    else:
        ids = policy.tokenizer.encode(answer, add_special_tokens=False) + [policy.eos_token_id]
        source, name = "the command line", f"{slug(prompt)}-{hashlib.sha1(answer.encode()).hexdigest()[:6]}-{trainer_config.advantage_reference}"
    with console.status(f"scoring {len(ids)} tokens under {4 + len(extra)} follow-ups"):
        figure = signal_figure(policy, trainer_config, prompt, ids, the_profile, extra, model=str(policy_settings.model), source=source,
                               neutral_pool=pool, system=policy_settings.system_prompt)
    target = out or (folder / "signal" if folder is not None else results / "signal")
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{name}.json").write_text(figure.to_json(), encoding="utf-8")
    png = draw(figure, target / f"{name}.png")
    console.print(f"wrote {png} and {png.with_suffix('.json')}", highlight=False)
    for row in figure.rows:
        values = row.advantage
        console.print(f"  {row.label:<28} mean {sum(values) / len(values):+.4f}  min {min(values):+.4f}  max {max(values):+.4f}  ({row.followup})",
                      highlight=False, markup=False)
    if folder is None:
        from harness.view import Site

        index = Site([], target / "view", title="signal figures", figures=sorted(target.glob("*.json"))).build()
        console.print(f"wrote {index} (the signal page)", highlight=False)
    else:
        console.print(f"`hindsight view {run}` shows it on the run's signal page", highlight=False)
