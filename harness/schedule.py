"""Who the simulated user is over a run, and which preferences each evaluation scores.

Plain personalization: one profile throughout, scored alone. A flip (``flip_at``): the profile, then its
``opposite``; both are scored at every evaluation. Continual (``continual``): at stage k the user holds the first k
preferences at once (the union of their checks); each preference is scored on its own. An adversarial profile runs
only in a red-team run (``redteam``), never by accident.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserInputError
from harness.config import RunConfig
from simulators.profile import Profile, combine_profiles, load_profile


@dataclass(frozen=True)
class Schedule:
    """``stages``: (first interaction, the user's profile from then on); ``scored``: the preferences each evaluation scores."""

    stages: tuple[tuple[int, Profile], ...]
    scored: tuple[Profile, ...]

    def user_at(self, index: int) -> Profile:
        return next(profile for start, profile in reversed(self.stages) if index >= start)

    @property
    def changing(self) -> bool:
        return len(self.stages) > 1


def build_schedule(config: RunConfig) -> Schedule:
    schedule = _schedule(config)
    adversarial = [p.name for _, p in schedule.stages if p.adversarial] + [p.name for p in schedule.scored if p.adversarial]
    if adversarial and config.redteam is None:
        raise UserInputError(f"profile '{adversarial[0]}' is adversarial (a user who pushes toward harm): it runs only under `hindsight redteam`, "
                             "which trains an unguarded and a guarded arm side by side")
    if config.simulator.kind in ("scripted", "complain"):  # before any model loads, and under --dry-run
        unchecked = next((p for _, p in schedule.stages if not p.checks), None)
        if unchecked is not None:
            raise UserInputError(f"profile '{unchecked.name}' has no checks, so a {config.simulator.kind} user would never complain: "
                                 "add checks to the profile, or use --simulator llm (or local)")
    return schedule


def _schedule(config: RunConfig) -> Schedule:
    base = load_profile(config.profile)
    if config.flip_at is not None:
        if not base.opposite:
            raise UserInputError(f"profile '{base.name}' has no opposite to flip to; pick one that names an opposite (`hindsight profiles list`)")
        opposite = load_profile(base.opposite)
        return Schedule(((0, base), (config.flip_at, opposite)), (base, opposite))
    if config.continual is not None:
        profiles = [base, *map(load_profile, config.continual.add)]
        names = [p.name for p in profiles]
        if len(set(names)) < len(names):
            raise UserInputError(f"continual profiles must differ: {', '.join(names)}")
        stages = tuple((k * config.continual.stage, combine_profiles(profiles[: k + 1])) for k in range(len(profiles)))
        return Schedule(stages, tuple(profiles))
    return Schedule(((0, base),), (base,))
