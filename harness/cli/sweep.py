"""hindsight sweep: a grid of ordinary runs from one spec file, on this machine or a Ray cluster; its status and its report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import UserInputError
from harness.cli.base import RESULTS, app, console
from harness.cli.options import Executor, Results, plain

if TYPE_CHECKING:
    from harness.sweep.spec import Plan

ACTIONS = ("status", "report")


@app.command(rich_help_panel="Experiments")
def sweep(
    target: Annotated[str, typer.Argument(metavar="SPEC.yaml | status SWEEP | report SWEEP", help=(
        "A sweep spec to run (or resume), or `status SWEEP` (cells done / running / failed, with progress) or `report SWEEP` "
        "(rewrite summary.md and the figures)."))],
    name_arg: Annotated[Optional[str], typer.Argument(metavar="[SWEEP]", help="With status or report: the sweep's name (under --results) or folder.",
                                                      show_default=False)] = None,
    executor: Annotated[Executor, typer.Option(help=(  # type: ignore[valid-type]
        "local: a process per cell on this machine, as many at once as cores and memory allow; ray: a Ray task per cell on the cluster at "
        "--address (pip install -e '.\\[ray]')."))] = Executor("local"),
    address: Annotated[Optional[str], typer.Option(help="For --executor ray: the cluster's address (host:6379, ray://host:10001 or auto).")] = None,
    parallel: Annotated[Optional[int], typer.Option(min=1, help=(
        "For --executor local: arm processes at once. (default: the cores, or what the available memory holds at --memory-per-arm)"))] = None,
    memory_per_arm: Annotated[float, typer.Option(min=0.1, help=(
        "GB one arm process holds (the embedded model on CPU: ~5): how many run at once locally, the memory a Ray task declares."))] = 5.0,
    records_back: Annotated[bool, typer.Option("--records-back", help=(
        "Workers write into a scratch folder of their own and send each run's records back, even when they see the results folder "
        "(they do so anyway when they do not). Checkpoints stay with the worker."))] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=(
        "Override a config field in every cell, over the spec's set: --set trainer.lr=1e-5 (repeatable; the value is YAML)."))] = None,
    name: Annotated[Optional[str], typer.Option(help="The sweep's folder under --results. (default: the spec's name, else its file's stem)")] = None,
    results: Results = RESULTS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the spec, print the cells and the shared controls; run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With status: one JSON document on stdout.")] = False,
) -> None:
    """Run a grid of personalization runs: every profile × seed × method × grid value in a spec, each an ordinary run folder.

    The spec (YAML): [bold]profiles[/bold] (a list, or `all`: every benign shipped profile), [bold]seeds[/bold] (a count or a list),
    [bold]methods[/bold] (default: sdpo alone), [bold]set[/bold] (dotted config keys → values for every cell, as --set), [bold]grid[/bold]
    (dotted key → list of values, crossed with the rest), [bold]name[/bold]. Cells run their arms one after another and keep no final
    weights unless the spec sets jobs / save_checkpoint. Cells that differ only in the profile share one control arm (its user sends
    neutral messages only), scored against each profile; the untrained and oracle answers are cached on disk and generated once.

    Writes results/SWEEP/: runs/CELL/ (ordinary runs), shared/ (the shared controls), sweep.log, status/, summary.md, curve.png
    (win rate and clean compliance over interactions, mean over profiles with 95% intervals) and heatmap.png (treated − control per
    profile). Rerunning the same command skips finished cells and resumes the others from their checkpoints; a failed cell is
    recorded with its error and the others go on (exit 1 at the end). A cell that another sweep under --results finished
    with the same config is copied in, not rerun, and so is a shared control that scored the profiles this one needs (sweep.log
    and summary.md name where each came from).

    Examples:

      hindsight sweep sweeps/all_profiles.yaml

      hindsight sweep sweeps/paper_profiles.yaml --executor ray --address head-node:6379

      hindsight sweep status all_profiles
    """
    if target in ACTIONS:
        if name_arg is None:
            raise UserInputError(f"hindsight sweep {target} SWEEP: name the sweep (a folder under {results})")
        _status(name_arg, results, as_json) if target == "status" else _report(name_arg, results)
        return
    if name_arg is not None:
        raise UserInputError(f"one spec file at a time (got '{name_arg}' too); `hindsight sweep status SWEEP` shows a sweep")
    spec = Path(target)
    if not spec.is_file():
        raise UserInputError("no such spec file (`hindsight sweep --help` shows the format)", path=spec)
    kind = plain(executor)
    if kind == "ray" and not address:
        raise UserInputError("--executor ray needs --address: the cluster's address (host:6379, ray://host:10001, or auto)")
    if kind == "local" and address:
        raise UserInputError("--address is for --executor ray")
    from harness.sweep.driver import run_sweep
    from harness.sweep.folder import SweepFolder
    from harness.sweep.spec import make_plan

    plan = make_plan(spec, set_, name)
    folder = SweepFolder(results / plan.name)
    _describe(plan, folder.folder, verbose=dry_run)
    if dry_run:
        return
    if kind == "ray":
        from harness.sweep.executors import RayExecutor

        runner: Any = RayExecutor(address, memory_per_arm)  # type: ignore[arg-type]
    else:
        from harness.sweep.executors import LocalExecutor, local_slots

        gpus = 0
        if plan.cells[0].config.policy.device == "cuda":
            import torch

            gpus = torch.cuda.device_count()
        runner = LocalExecutor(*local_slots(plan.cells[0].config.threads or 1, memory_per_arm, parallel, gpus), gpus=gpus)
    console.print(f"executor {escape(runner.description)}", highlight=False)
    with SweepProgress() as progress:
        outcome = run_sweep(plan, folder, runner, progress.handle, records_back, command=shlex.join(["hindsight", *sys.argv[1:]]))
    failed = outcome["failed"]
    console.print(f"{outcome['ran']} task(s) ran in {outcome['seconds']:.0f} s, {len(failed)} failed; report {outcome['report']}", highlight=False)
    for task_id, error in failed.items():
        console.print(f"[red]failed[/red] {task_id}: {escape(error)}", highlight=False, soft_wrap=True)
    if failed:
        console.print(f"rerun `hindsight sweep {escape(str(spec))}` to retry them (finished cells are skipped)", highlight=False)
        raise typer.Exit(1)


def _describe(plan: Plan, folder: Path, verbose: bool) -> None:
    shared = sum(len(s.cells) for s in plan.controls)
    console.print(f"[bold]sweep[/bold] {plan.name} → {folder}: {len(plan.cells)} cells ({len({c.profile for c in plan.cells})} profiles × "
                  f"{len({c.seed for c in plan.cells})} seed(s) × {len({c.variant for c in plan.cells})} method/grid point(s)); "
                  f"{len(plan.controls)} shared control arm(s) for {shared} cells", highlight=False)
    if not verbose:
        return
    table = Table(title="cells")
    for column in ("cell", "profile", "seed", "variant", "budgets (train/eval)", "control"):
        table.add_column(column, overflow="fold")
    for c in plan.cells:
        table.add_row(c.id, c.profile, str(c.seed), c.variant, f"{c.config.generation.max_new_tokens}/{c.config.eval.max_new_tokens}",
                      c.control or "its own" if c.config.control else "none")
    console.print(table)
    for s in plan.controls:
        console.print(f"{s.id}: seed {s.seed}, scored for {', '.join(p.name for p in s.schedule.scored)}", highlight=False, soft_wrap=True)


def _status(name: str, results: Path, as_json: bool) -> None:
    import json

    from harness.sweep.folder import sweep_folder, sweep_status

    status = sweep_status(sweep_folder(name, results))
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    counts = ", ".join(f"{n} {state}" for state, n in status["cells"].items() if n)
    table = Table(title=f"sweep {status['sweep']}: {counts}" + (" · driver running" if status["driver_running"] else " · no driver running"))
    for column in ("task", "state", "progress", "node", "seconds", "error"):
        table.add_column(column, overflow="fold")
    colour = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow"}
    for row in status["tasks"]:
        state = f"[{colour[row['state']]}]{row['state']}[/]" if row["state"] in colour else row["state"]
        progress = f"{row['progress']:.0%}" if row["progress"] is not None else "–"
        seconds = f"{row['seconds']:.0f}" if row["seconds"] else "–"
        table.add_row(row["id"], state, progress, str(row["node"] or "–")[:16], seconds, escape(row["error"] or ""))
    console.print(table)
    if any(r["state"] in ("interrupted", "failed", "pending") for r in status["tasks"]) and not status["driver_running"]:
        console.print("rerun the sweep's command to resume it (finished cells are skipped)", highlight=False)


def _report(name: str, results: Path) -> None:
    from harness.sweep.folder import sweep_folder
    from harness.sweep.report import write_report

    folder = sweep_folder(name, results)
    path = write_report(folder.folder)
    console.print(f"wrote {path}", highlight=False)


class SweepProgress:
    """One bar over the sweep's tasks, one per running task (its arm's interactions); a line when a task starts or ends."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), console=console)
        self.overall: TaskID | None = None
        self.bars: dict[str, TaskID] = {}

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def handle(self, event: dict) -> None:
        kind, task = event["type"], event.get("task")
        if kind == "sweep":
            self.overall = self.progress.add_task("tasks", total=event["total"], completed=event["total"] - event["pending"], stats="")
        elif kind == "task" and event["state"] == "running":
            self.bars[task] = self.progress.add_task(task[:40], total=None, stats=f"node {str(event['node'])[:12]}")
        elif kind == "task":
            if task in self.bars:
                self.progress.remove_task(self.bars.pop(task))
            if self.overall is not None:
                self.progress.advance(self.overall)
            mark = "[green]done[/green]" if event["state"] == "done" else "[red]failed[/red]"
            self.progress.console.print(f"{mark} {escape(task)} ({event['seconds']:.0f} s)" + (f": {escape(event['error'])}" if event["error"] else ""),
                                        highlight=False, soft_wrap=True)
        elif kind in ("start", "step") and task in self.bars:
            stats = f"{event['arm']} s{event['seed']}" + (f" · loss {event['loss']:+.3f}" if event.get("loss") is not None else "")
            self.progress.update(self.bars[task], total=event["total"], completed=event["done"], stats=stats)
