"""The Python API, for notebooks and scripts: run a personalization experiment and read runs back.

    >>> import harness
    >>> run = harness.personalize(profile="concise", interactions=16, control=False, set={"trainer.lr": 1e-5})
    >>> run.evals[-1].clean                       # typed records (core/records.py)
    >>> df = run.frame()                          # the evaluation records as a pandas DataFrame
    >>> df.pivot_table(index="interactions", columns="arm", values="clean")
    >>> old = harness.load_run("results/20250101-120000-sdpo-concise")

``personalize`` builds the same RunConfig as ``hindsight personalize`` (keyword arguments for its top-level fields and
the CLI's shortcuts such as ``eval_every`` or ``lr``, dotted overrides in ``set``, a starting ``config``), runs the same
checks before any model loads (bad input is a :class:`core.errors.UserInputError`, the one line the CLI prints), writes
the run folder under ``results`` and returns the loaded :class:`Run`. It prints nothing unless ``progress`` asks for it.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserInputError
from core.records import METRIC, EvalRecord, InteractionRecord, RunInfo, SampleRecord, TrainRecord, read_jsonl
from harness.config import RunConfig
from harness.overrides import Overrides
from harness.runs import check_run_id, new_run_id, preflight, run_kind

if TYPE_CHECKING:
    import pandas

__all__ = ["Run", "load_run", "personalize"]

# the CLI's options that set a nested field, by their Python names (as in `hindsight personalize --help`)
SHORTCUTS = {
    "model": "policy.model", "device": "policy.device", "eval_prompts": "prompts.eval_prompts", "max_new_tokens": "generation.max_new_tokens",
    "eval_every": "eval.every", "eval_persona": "eval.persona", "loss": "trainer.loss", "kl_anchor": "trainer.kl_anchor",
    "ignore_first_k": "trainer.ignore_first_k", "centre": "trainer.centre", "template": "trainer.template", "beta": "rlhi.beta",
    "persona": "rlhi.persona.source", "reward": "rlhi.reward.kind", "classifier": "rlhi.classifier", "candidates": "rlhi.candidates",
}
# top-level sections that also take a plain string, as the CLI's option of the same name does
SECTION_SHORTCUTS = {"prompts": "prompts.source", "simulator": "simulator.kind", "judge": "judge.kind"}
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class Run:
    """One run folder, read back: its config, its run info and every record it logged.

    ``evals``: an EvalRecord per arm, seed and evaluation point (arms ``initial`` and ``oracle`` at 0 interactions);
    ``train``: a TrainRecord per update; ``interactions``: an InteractionRecord per interaction; ``samples``: a
    SampleRecord per held-out answer at each evaluation point. ``frame()`` (alias ``to_pandas()``) puts ``evals`` in a
    pandas DataFrame, one row per record, one column per field.

        >>> run = harness.load_run("results/RUN")
        >>> run.config.profile, run.info.status, len(run.interactions)
        >>> run.frame().query("arm == 'treated'")[["interactions", "clean", "win_rate", "kl"]]
    """

    path: Path
    config: RunConfig
    info: RunInfo
    evals: list[EvalRecord] = field(repr=False)
    train: list[TrainRecord] = field(repr=False)
    interactions: list[InteractionRecord] = field(repr=False)
    samples: list[SampleRecord] = field(repr=False)

    @property
    def id(self) -> str:
        return self.path.name

    def frame(self, records: str = "evals") -> pandas.DataFrame:
        """A pandas DataFrame of ``records`` ('evals', the default; 'train', 'interactions' or 'samples'): a row a record.

        Train records' ``metrics`` and ``timings`` become columns of their own (``loss``, ``step_seconds``, …)."""
        if records not in ("evals", "train", "interactions", "samples"):
            raise ValueError(f"records: one of evals, train, interactions, samples (got {records!r})")
        pd = _pandas()
        rows = [r.model_dump() for r in getattr(self, records)]
        if records == "train":
            rows = [{**{k: v for k, v in r.items() if k not in ("metrics", "timings")}, **r["metrics"],
                     **{f"{k}_seconds": v for k, v in r["timings"].items()}} for r in rows]
        columns = None if rows else list({"evals": EvalRecord, "train": TrainRecord, "interactions": InteractionRecord,
                                          "samples": SampleRecord}[records].model_fields)
        return pd.DataFrame(rows, columns=columns)

    def to_pandas(self, records: str = "evals") -> pandas.DataFrame:
        """Same as :meth:`frame`."""
        return self.frame(records)


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("Run.frame() needs pandas: pip install pandas (the records themselves are in run.evals, run.train, "
                          "run.interactions and run.samples)") from None
    return pandas


def load_run(path: str | Path) -> Run:
    """Read the run folder ``path`` (written by ``hindsight personalize`` or :func:`personalize`) into a :class:`Run`.

        >>> run = harness.load_run("results/20250101-120000-sdpo-concise")
        >>> [(r.arm, r.interactions, r.clean) for r in run.evals]

    A folder without ``config.yaml`` is a UserInputError. A run that is still going or stopped reads as far as it got.
    """
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise UserInputError("not a run folder (no config.yaml)", path=path)
    config = RunConfig.from_file(path / "config.yaml")
    info_file = path / "run.json"
    info = RunInfo.model_validate_json(info_file.read_text(encoding="utf-8")) if info_file.is_file() else RunInfo(run_id=path.name)
    metrics = list(read_jsonl(path / "metrics.jsonl", METRIC))
    return Run(
        path=path, config=config, info=info,
        evals=[m for m in metrics if isinstance(m, EvalRecord)],
        train=[m for m in metrics if isinstance(m, TrainRecord)],
        interactions=list(read_jsonl(path / "interactions.jsonl", InteractionRecord)),
        samples=list(read_jsonl(path / "samples.jsonl", SampleRecord)),
    )


def personalize(
    profile: str | None = None,
    interactions: int | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    set: Mapping[str, Any] | None = None,
    results: str | Path = "results",
    run_id: str | None = None,
    progress: bool | Progress = False,
    dry_run: bool = False,
    **fields: Any,
) -> Run | RunConfig:
    """Run online personalization (``hindsight personalize``) and return the finished run.

    The config is built as the CLI builds it, later steps winning: ``config`` (a RunConfig, or a config YAML such as a
    run's ``config.yaml``), then the keyword arguments, then ``set``. Keyword arguments are RunConfig's top-level fields
    (``method``, ``seeds``, ``control``, ``oracle``, ``jobs``, ``max_kl``, …; a section such as ``trainer`` as a dict) or
    the CLI's shortcuts for nested fields (``eval_every``, ``eval_prompts``, ``max_new_tokens``, ``model``, ``device``,
    ``lr``, ``lora``, ``loss``, ``prompts="builtin"``, ``simulator="scripted"``, ``judge="rules"``, …). ``set`` maps
    dotted paths to values: ``set={"trainer.lr": 1e-5, "eval.kl_prompts": 0}``.

    Before any model loads, the same checks as the CLI: a bad field or value, an unknown or adversarial profile, a
    missing prompt file or an existing ``run_id`` folder raise :class:`core.errors.UserInputError` (its message is the
    CLI's one line). A run that cannot go on raises :class:`core.errors.RunError`; its folder can be resumed with
    ``hindsight personalize --resume RUN``.

    ``progress``: False (default) prints nothing; True prints phases, evaluations and finished arms to stderr; a
    callable receives every progress event (a dict with ``type``: phase, start, step, eval, done, stopped, error, usage).
    ``dry_run``: return the resolved RunConfig without running.

        >>> import harness
        >>> run = harness.personalize(profile="concise", interactions=16, eval_every=8, control=False, results="results")
        >>> run.frame()[["arm", "interactions", "clean", "win_rate"]]
    """
    data = _start(config)
    if profile is not None:
        fields["profile"] = profile
    if interactions is not None:
        fields["interactions"] = interactions
    method = fields.get("method") or data.get("method") or "sdpo"
    for name, value in fields.items():
        if value is None:
            continue
        origin = f"personalize({name}=…)"
        if name == "lr":  # the learning rate of whichever method runs, as --lr
            data.set("trainer.lr" if method == "sdpo" else "rlhi.lr", value, origin)
        elif name == "lora":
            data.set("policy.lora", ({} if value is True else value) if value is not False else None, origin)
        elif name in SHORTCUTS:
            data.set(SHORTCUTS[name], value, origin)
        elif name in SECTION_SHORTCUTS and isinstance(value, str):
            data.set(SECTION_SHORTCUTS[name], value, origin)
        elif name in RunConfig.model_fields:
            data.set(name, value.model_dump(mode="json") if hasattr(value, "model_dump") else value, origin)
        else:
            known = [*RunConfig.model_fields, *SHORTCUTS, "lr", "lora"]
            close = difflib.get_close_matches(name, known, n=1)
            raise TypeError(f"personalize() got an unexpected keyword argument {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    for key, value in (set or {}).items():
        data.set(key.strip(), value, f"set[{key.strip()!r}]")
    resolved, schedule = preflight(data.validate(RunConfig))
    if dry_run:
        return resolved
    results = Path(results)
    name = check_run_id(run_id) if run_id else new_run_id(resolved.profile, run_kind(resolved), results)
    run_dir = results / name
    if run_dir.exists():
        raise UserInputError(f"{run_dir} already exists; pick another run_id")
    from harness.loop import personalize as run_personalize

    sink = progress if callable(progress) else _print_progress if progress else _quiet
    run_personalize(resolved, run_dir, sink, command=f"harness.personalize(results={str(results)!r}, run_id={name!r})", schedule=schedule)
    return load_run(run_dir)


def _start(config: RunConfig | str | Path | None) -> Overrides:
    """The config data to start from: a RunConfig, a config YAML (errors name its lines) or nothing."""
    if isinstance(config, RunConfig):
        return Overrides(data=config.model_dump(mode="json"))
    return Overrides(Path(config) if config is not None else None)


def _quiet(event: dict) -> None:
    return None


def _print_progress(event: dict) -> None:
    """progress=True: one plain line per phase, evaluation, finished or stopped arm (no live bars: notebooks show them badly)."""
    kind = event["type"]
    where = f"{event.get('arm')} s{event.get('seed')}"
    if kind == "phase":
        line = event["text"]
    elif kind == "eval":
        r = event["record"]
        line = (f"eval {r['arm']} s{r['seed']} @ {r['interactions']}" + (f" for {r['profile']}" if r["profile"] else "")
                + f": clean {r['clean']:.0%} · compliant {r['compliance']:.0%} · {r['mean_words']:.0f} words"
                + (f" · KL {r['kl']:.3f}" if r["kl"] is not None else "") + (f" · win rate {r['win_rate']:.0%}" if r["win_rate"] is not None else ""))
    elif kind == "done":
        line = f"{where} done"
    elif kind in ("stopped", "error"):
        line = f"{where} {kind}: {event['text']}"
    else:
        return
    print(line, file=sys.stderr, flush=True)
