"""hindsight: teach language models from their users' follow-up messages, and measure whether it worked.

The Python API (``harness/api.py``), loaded on first use so that ``import harness`` stays light::

    import harness
    run = harness.personalize(profile="concise", interactions=16)   # runs, writes results/RUN/, returns a harness.Run
    run.frame()                                                      # its evaluation records (pandas)
    harness.load_run("results/RUN")                                  # any run folder, read back
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "load_run", "personalize"]

if TYPE_CHECKING:
    from harness.api import Run, load_run, personalize

_API = ("Run", "load_run", "personalize")


def __getattr__(name: str) -> Any:
    if name in _API:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
