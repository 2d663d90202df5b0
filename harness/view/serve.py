"""`hindsight view --serve`: the site over HTTP on 127.0.0.1, its data rewritten on request when a run's files changed.

The pages poll the index every few seconds when served (never from ``file://``) and redraw when its stamp moved, so a
run in progress shows its new records without a reload.
"""

from __future__ import annotations

import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from core.errors import UserInputError
from harness.view.site import Site


class _Handler(SimpleHTTPRequestHandler):
    site: Site
    lock: threading.Lock
    last: list[float]
    every: float

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        with self.lock:
            if time.monotonic() - self.last[0] >= self.every:
                try:
                    self.site.refresh()
                except UserInputError as exc:  # the runs moved away: keep serving what was written, and say why
                    self.site.problems.append(exc.render())
                self.last[0] = time.monotonic()
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the signature http.server calls)
        pass


def make_server(site: Site, port: int = 8765, every: float = 1.0) -> ThreadingHTTPServer:
    """A server for ``site`` (built already) on 127.0.0.1:``port`` (0: any free port); refreshes at most every ``every`` s."""
    handler = type("Handler", (_Handler,), {"site": site, "lock": threading.Lock(), "last": [0.0], "every": every})
    return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=str(site.out)))
