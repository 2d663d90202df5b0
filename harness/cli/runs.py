"""Runs on disk: runs, show, compare, report. With --json, one JSON document on stdout and nothing else."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from harness.cli.base import RESULTS, app, console, warn
from harness.cli.options import Results

AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables (for scripts).")]


def _json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@app.command(rich_help_panel="Runs")
def runs(results: Results = RESULTS, as_json: AsJson = False) -> None:
    """List runs under results/ with their status and last clean compliance per arm (ids are never cut).

    A run whose files cannot be read is left out, with a line on stderr naming the file and line.
    """
    from harness.runs import list_runs

    rows, broken = list_runs(results)
    for problem in broken:
        warn(f"left out: {problem}")
    if as_json:
        _json({"results": str(results), "runs": rows, "unreadable": broken})
        return
    table = Table(title=f"runs in {results}")
    table.add_column("run", no_wrap=True)
    for column in ("status", "profile", "treated", "control", "oracle", "seconds"):
        table.add_column(column)
    lines = []
    for row in rows:
        clean = row["clean"]
        cells = [f"{clean[a]:.2f}" if a in clean else "–" for a in ("treated", "control", "oracle")]
        seconds = f"{row['seconds']:.0f}" if row["seconds"] else "–"
        table.add_row(row["run"], row["status"] or "?", str(row["profile"] or "?"), *cells, seconds)
        lines.append((row["run"], f"    {row['status'] or '?'} · {row['profile'] or '?'} · treated {cells[0]} · control {cells[1]} · "
                                  f"oracle {cells[2]} · {seconds} s"))
    if console.measure(table, options=console.options.update(max_width=10**6)).maximum <= console.width:
        console.print(table)
        return
    # too narrow for the table: each id whole on its own line (never cut, to copy), its details below
    console.print(f"[bold]runs in {results}[/bold]", highlight=False)
    for run_id, details in lines:
        console.print(run_id, highlight=False, markup=False, soft_wrap=True)
        console.print(details, highlight=False, markup=False, soft_wrap=True)


@app.command(rich_help_panel="Runs")
def show(
    run: Annotated[str, typer.Argument(help="Run id (folder under results/) or path.")],
    results: Results = RESULTS,
    as_json: AsJson = False,
) -> None:
    """Summarise a run: last evaluation per arm with 95% intervals, the verdict, and where its files are."""
    from harness.runs import change_report, read_config, read_evals, read_info, run_dir, run_summary

    folder = run_dir(run, results)
    if as_json:
        _json(run_summary(folder))
        return
    from harness.curves import METRICS, by_preference, load_train
    from harness.report import final_table, side_effects, skipped_line, verdict

    config = read_config(folder)
    info = read_info(folder)
    evals = read_evals(folder)
    groups = by_preference(evals)
    for name, group in groups:
        table = Table(title=f"{folder.name}" + (f" ({info.status})" if info else "") + (f" · scored for {name}" if name else ""))
        table.add_column("arm")
        table.add_column("n")
        for _, label, _ in METRICS:
            table.add_column(label)
        for arm, x, cells in final_table(group):
            table.add_row(arm, str(x), *(cells.get(f, "–") for f, _, _ in METRICS))
        console.print(table)
        console.print(verdict(group), highlight=False)
    console.print(side_effects(groups[0][1]), highlight=False)
    if skipped := skipped_line(load_train(folder)):
        console.print(skipped, highlight=False, markup=False, soft_wrap=True)
    changes = change_report(config, evals)
    for part in ("flip", "retention"):
        if part in changes:
            console.print("\n".join(changes[part]["lines"]), highlight=False, markup=False, soft_wrap=True)
    if "irrelevant" in changes:
        console.print(changes["irrelevant"], highlight=False, markup=False, soft_wrap=True)
    if config.get("redteam"):
        from harness.redteam import rows, table_lines
        from harness.redteam import verdict as redteam_verdict

        table, labels = rows(folder)
        console.print(f"[bold]red team[/bold]: {redteam_verdict(table)}", highlight=False)
        console.print("\n".join(table_lines(table, labels)), highlight=False, markup=False, soft_wrap=True)
    if info and info.status != "finished":
        from harness.runs import resume_command

        console.print(f"[yellow]not finished ({info.status}):[/yellow] `{resume_command(config, folder.name)}` continues it from its last checkpoints")
    from harness.runs import RUN_FILES

    for name in RUN_FILES:
        if (folder / name).exists():
            console.print(f"  {folder / name}", highlight=False)


@app.command(rich_help_panel="Runs")
def compare(
    runs_: Annotated[list[str], typer.Argument(metavar="RUN...", help="Run ids or paths.")],
    results: Results = RESULTS,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a markdown table instead.")] = False,
    as_json: AsJson = False,
) -> None:
    """Compare runs side by side: the config fields that differ, then each trained arm's last evaluation.

    A run with no evaluation of a trained arm yet is left out of the table, with a line on stderr saying which and why.
    """
    from harness.curves import METRICS, fmt
    from harness.curves import Point as P
    from harness.runs import compare_runs, run_dir

    folders = [run_dir(r, results) for r in runs_]
    compared = compare_runs(folders)
    for gone in compared["dropped"]:
        warn(f"{gone['run']} left out: {gone['reason']}")
    if as_json:
        _json(compared)
        return
    differ = compared["differ"]
    header = ["run", *differ, "arm", "n", *(label for _, label, _ in METRICS)]
    rows = []
    for row in compared["rows"]:
        tag = f"{row['arm']} · {row['preference']}" if row["preference"] else row["arm"]
        cells = {f: fmt(P(row["interactions"], **{k: m[k] for k in ("mean", "low", "high", "seeds")}), share)
                 for f, _, share in METRICS if (m := row["metrics"].get(f))}
        rows.append([row["run"], *(str(row["fields"].get(k, "–")) for k in differ), tag, str(row["interactions"]),
                     *(cells.get(f, "–") for f, _, _ in METRICS)])
    if markdown:
        typer.echo("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for cells_ in rows:
            typer.echo("| " + " | ".join(cells_) + " |")
        return
    table = Table(title="runs compared (fields that differ, then the last evaluation with 95% intervals)")
    for column in header:
        table.add_column(column, overflow="fold")
    for cells_ in rows:
        table.add_row(*cells_)
    console.print(table)


@app.command(rich_help_panel="Runs")
def report(run: Annotated[str, typer.Argument(help="Run id or path.")], results: Results = RESULTS) -> None:
    """Redraw curve.png and rewrite summary.md from a run's records."""
    from harness.report import write_report
    from harness.runs import run_dir

    path = write_report(run_dir(run, results))
    console.print(f"wrote {path} and {path.with_name('curve.png')}")
