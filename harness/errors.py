"""User-facing errors: one line naming the file, line and field, and what to fix. The CLI exits 2 on them."""

from __future__ import annotations

from pathlib import Path


class UserInputError(Exception):
    """Bad input from the user (file, option, config). Rendered as a single line, never a traceback."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.message = path, line, field, message
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path) + (f":{self.line}" if self.line is not None else "")
        if self.field:
            where = f"{where}: field '{self.field}'" if where else f"field '{self.field}'"
        return f"{where}: {self.message}" if where else self.message


def pydantic_message(exc: Exception) -> tuple[str, str]:
    """First (field, message) pair of a pydantic ValidationError, for one-line reporting."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return "", str(exc)
    first = errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    return field, first.get("msg", str(exc))


class RunError(Exception):
    """A run cannot go on (a provider still failing after its retries, the failure budget spent): one line, exit 1."""
