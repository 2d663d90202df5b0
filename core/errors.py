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
        return one_line(f"{where}: {self.message}" if where else self.message)


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so a message quoting any input stays one line."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def read_bytes(path: Path, missing: str = "no such file") -> bytes:
    """The file's bytes; a missing or unreadable file is a UserInputError naming it (``missing`` says what was expected)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(missing, path=path) from None
    except OSError as exc:
        raise UserInputError(f"cannot read: {exc.strerror or exc}", path=path) from None


def read_text(path: Path) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is a UserInputError naming it (and the line of a bad byte)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8", path=path, line=data[: exc.start].count(b"\n") + 1) from None


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
