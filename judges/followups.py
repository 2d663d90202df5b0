"""Deprecated: the follow-up classifier is judges/followup.py. Only harness/cli.py still imports this name (its split
is under way); remove this module once it imports ``judges.followup``."""

from judges.followup import HeuristicClassifier, build_classifier

__all__ = ["HeuristicClassifier", "build_classifier"]
