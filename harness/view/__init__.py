"""`hindsight view`: a static site (no network, no library) for runs and sweeps: the runs index, a run's curves and
held-out answers, its interactions with their per-token signal, runs compared, and `hindsight signal` figures."""

from __future__ import annotations

from harness.view.serve import make_server
from harness.view.site import Site, find_runs, sources

__all__ = ["Site", "find_runs", "make_server", "sources"]
