"""The `hindsight` command line: one module per command group, registered on one typer app.

``run`` is the console script (``harness.cli:run``); ``app`` is the typer app (tests run it in-process).

- base: the app, its consoles, one-line errors, --version
- options: shared typed options and their enums, RunOptions (personalize's options); overrides: options → config, --set
- experiments: personalize, flip, continual, redteam; sweep: sweep (a grid of runs, its status and report); train: train (offline)
- runs: runs, show, compare, report; view: view (the browser viewer), signal (per-token advantage heatmaps)
- judge: usereval, judge; data: data stats, data usereval
- eval: eval, regress; models: models warm, cache, serve; chat: chat (a learning server's terminal client); profiles: profiles list/show/validate
"""

from __future__ import annotations

import importlib

from harness.cli.base import app, reflow_help, run_app

# imported in this order, the command groups register their commands in the order `hindsight --help` lists them
for _group in ("experiments", "sweep", "runs", "view", "judge", "data", "train", "profiles", "models", "chat", "eval"):
    importlib.import_module(f"harness.cli.{_group}")
reflow_help(app)

from harness.cli.experiments import personalize  # noqa: E402  (the command: its signature lists every option)
from harness.runs import check_run_id  # noqa: E402

__all__ = ["app", "check_run_id", "personalize", "run"]


def run() -> None:
    """Console-script entry point: one-line errors (exit 2) for bad input, tracebacks only with --debug."""
    run_app()
