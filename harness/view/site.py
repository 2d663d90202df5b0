"""The static site: the pages (``assets/``, copied as they are) and the data (``data/**.js``), for a set of runs.

Every data file is one statement, ``HS.put("KEY", {...});``: pages load a document by adding a ``<script>`` for it, which
works from ``file://`` (where ``fetch`` does not) and loads nothing before it is needed. ``Site.refresh`` finds the runs
again and rewrites only those whose files changed (``hindsight view --serve`` calls it on each request).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from harness.view.data import run_document, stamp

ASSETS = Path(__file__).parent / "assets"
SKIP = {"view", "state", "checkpoints", "signal"}  # folders under a run or sweep that hold no run


def find_runs(folder: Path, depth: int = 3) -> list[Path]:
    """Run folders (holding config.yaml) at or below ``folder``, at most ``depth`` levels down, sorted."""
    if (folder / "config.yaml").is_file():
        return [folder]
    if depth == 0 or not folder.is_dir():
        return []
    return [run for child in sorted(folder.iterdir()) if child.is_dir() and child.name not in SKIP for run in find_runs(child, depth - 1)]


def sources(paths: list[Path]) -> list[tuple[Path, str | None]]:
    """(run folder, the sweep or folder it was found in, None for a run named directly) for each path given."""
    out: list[tuple[Path, str | None]] = []
    for path in paths:
        if not path.is_dir():
            raise UserInputError(f"{path}: no such run or sweep folder; `hindsight runs` lists runs")
        found = find_runs(path)
        if not found:
            raise UserInputError(f"{path}: no run under it (a run folder holds config.yaml)")
        out += [(run, None if run == path else path.name) for run in found]
    return out


def _key(folder: Path, taken: set[str]) -> str:
    """A name for the run's data folder and links: its folder's name, led by the sweep's (parent folders other than runs/)
    while another run holds it, then numbered."""
    clean = lambda name: re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "run"  # noqa: E731
    key = base = clean(folder.name)
    parents = iter(p.name for p in folder.parents if p.name and p.name != "runs")
    while key in taken and (parent := next(parents, None)) is not None:
        key = f"{clean(parent)}.{key}"
    n = 1
    while key in taken:
        n += 1
        key = f"{base}-{n}"
    taken.add(key)
    return key


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def script(key: str, document: Any) -> str:
    """One data file: the document handed to the page's store (JSON is JavaScript; NaN and Infinity are too)."""
    return f"HS.put({json.dumps(key)},{json.dumps(document, ensure_ascii=False, separators=(',', ':'))});\n"


@dataclass
class Site:
    """The site in ``out`` for the runs under ``paths`` (runs or sweeps), and loose signal figures (``figures``: JSON files)."""

    paths: list[Path]
    out: Path
    title: str = "hindsight runs"
    figures: list[Path] = field(default_factory=list)
    _stamps: dict[str, str] = field(default_factory=dict)
    _rows: dict[str, dict] = field(default_factory=dict)
    _keys: dict[Path, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def build(self) -> Path:
        """Write everything (pages and data); returns the index page."""
        self.out.mkdir(parents=True, exist_ok=True)
        for asset in ASSETS.iterdir():
            if asset.is_file():
                shutil.copyfile(asset, self.out / asset.name)
        self._stamps.clear()
        self.refresh()
        return self.out / "index.html"

    def refresh(self) -> bool:
        """Rewrite the runs whose files changed since the last call, and the index when anything changed."""
        found = sources(self.paths) if self.paths else []
        changed = False
        taken = set(self._keys.values())
        current = {}
        for folder, sweep in found:
            key = self._keys.get(folder.resolve()) or _key(folder, taken)
            self._keys[folder.resolve()] = key
            current[key] = folder
            now = stamp(folder)
            if self._stamps.get(key) == now:
                continue
            self._stamps[key] = now
            changed = True
            try:
                self._rows[key] = self._write_run(folder, key, sweep)
            except UserInputError as exc:  # an unreadable file: the run is left out, the rest still shows
                self._rows.pop(key, None)
                self.problems.append(exc.render())
        for key in set(self._rows) - set(current):
            changed = True
            self._rows.pop(key)
        if changed or not (self.out / "data" / "index.js").is_file():
            self._write_index()
        return changed

    def _write_run(self, folder: Path, key: str, sweep: str | None) -> dict:
        run, row, documents = run_document(folder, key, sweep)
        target = self.out / "data" / key
        names = {"run.js"}
        for name, document in documents.items():
            _write(target / f"{name}.js", script(f"{key}/{name}", document))
            names.add(f"{name}.js")
        _write(target / "run.js", script(f"{key}/run", run))
        for stale in target.glob("*.js"):
            if stale.name not in names:
                stale.unlink()
        return row

    def _write_index(self) -> None:
        figures = []
        for path in self.figures:
            key = f"figures/{re.sub(r'[^A-Za-z0-9_.-]+', '-', path.stem)}"
            _write(self.out / "data" / f"{key}.js", script(key, json.loads(path.read_text(encoding="utf-8"))))
            figures.append({"key": key, "name": path.stem})
        rows = sorted(self._rows.values(), key=lambda r: (r["sweep"] or "", r["id"]))
        document = {"title": self.title, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": rows,
                    "figures": figures, "problems": self.problems[-20:],
                    "stamp": hashlib.sha1("".join(r["stamp"] for r in rows).encode()).hexdigest()[:12]}
        _write(self.out / "data" / "index.js", script("index", document))
