"""Judges: what scores an answer — degeneration flags, embedding relevance, and (with profiles) compliance."""
