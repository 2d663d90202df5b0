"""Live progress bars: one per arm and seed for personalize and its variants, one over optimizer steps for train."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.cli.base import console


class LiveProgress:
    """Rich progress: one bar per arm and seed with loss, share of satisfied users and last clean compliance."""

    def __init__(self, config):
        self.config = config
        self.progress = Progress(
            TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
        )
        self.tasks: dict[tuple[str, int], TaskID] = {}
        self.last_clean: dict[tuple[str, int], float] = {}
        self.started = time.perf_counter()

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        for arm, seed in self.config.arms():
            self.tasks[(arm, seed)] = self.progress.add_task(f"{arm} s{seed}", total=self.config.interactions, stats="waiting", start=False)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def handle(self, event: dict) -> None:
        kind = event["type"]
        key = (event.get("arm"), event.get("seed"))
        if kind == "phase":
            self.progress.console.print(f"[dim]{event['text']}…[/dim]")
        elif kind == "start":
            self.progress.start_task(self.tasks[key])
            self.progress.update(self.tasks[key], completed=event.get("done", 0), stats="loading")
        elif kind == "step":
            loss = event["loss"]
            sat = event["satisfied"]
            clean = self.last_clean.get(key)
            stats = f"loss {loss:+.3f}" if loss is not None else f"skipped: {event['skipped']}"
            stats += f" · satisfied {sat:.0%}" if sat is not None else ""
            stats += f" · clean {clean:.0%}" if clean is not None else ""
            self.progress.update(self.tasks[key], completed=event["done"], stats=stats)
        elif kind == "eval":
            record = event["record"]
            if key in self.tasks:
                self.last_clean[key] = record["clean"]
            self.progress.console.print(
                f"eval [bold]{record['arm']}[/bold] s{record['seed']} @ {record['interactions']:>3}"
                + (f" for {record['profile']}" if record["profile"] else "") + f": clean {record['clean']:.0%} · "
                f"compliant {record['compliance']:.0%} · degenerate {record['degenerate']:.0%} · relevant {record['relevant']:.0%} · "
                f"{record['mean_words']:.0f} words" + (f" · KL {record['kl']:.3f}" if record["kl"] is not None else "")
                + (f" · win rate {record['win_rate']:.0%}" if record["win_rate"] is not None else ""),
                highlight=False,
            )
        elif kind == "done":
            self.progress.update(self.tasks[key], description=f"{key[0]} s{key[1]} ✓")
        elif kind == "stopped":
            self.progress.update(self.tasks[key], description=f"{key[0]} s{key[1]} stopped")
            self.progress.console.print(f"[yellow]{key[0]} s{key[1]} stopped:[/yellow] {escape(event['text'])}", highlight=False)
        elif kind == "error":
            self.progress.console.print(f"[red]{key[0]} s{key[1]} failed:[/red]\n{event['text']}")


class TrainProgress:
    """A rich bar over optimizer steps with the last loss and learning rate (main process only)."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
        self.task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def step(self, record, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("train", total=total, completed=record.step - 1, stats="")
        m = record.metrics
        stats = f"loss {m['loss']:+.4f} · grad {m['grad_norm']:.2f} · lr {m['lr']:.2e}" + (f" · skipped: {record.skipped}" if record.skipped else "")
        self.progress.update(self.task, completed=record.step, stats=stats)
