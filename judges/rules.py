"""A judge from a profile's machine-checkable checks: the response that fails fewer checks wins; as many is a tie."""

from __future__ import annotations

from collections.abc import Sequence

from judges.base import Pair, Verdict, Winner
from simulators.profile import Profile


class RuleJudge:
    """Offline and order-free, so one judgement per pair; the persona text is not read (the checks stand for it)."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.name = f"rules:{profile.name}"

    def compare(self, pairs: Sequence[Pair], persona: str | None = None) -> list[Verdict]:
        out = []
        for pair in pairs:
            failed_a, failed_b = self.profile.failures(pair.a), self.profile.failures(pair.b)
            winner: Winner = "A" if len(failed_a) < len(failed_b) else "B" if len(failed_b) < len(failed_a) else "tie"
            raw = f"A fails {len(failed_a)} ({_names(failed_a)}); B fails {len(failed_b)} ({_names(failed_b)})"
            out.append(Verdict(winner=winner, orders=(winner,), raw=(raw,), backend=self.name))
        return out


def _names(checks: Sequence) -> str:
    return ", ".join(c.describe() for c in checks) or "none"
