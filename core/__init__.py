"""The ground floor: what every other package may import, and which imports nothing of ours above it.

The policy and its generation engine, model loading, the LLM client, the run's records (the on-disk log format),
errors, YAML loading, statistics, prompt sets, conversation logs and the interaction type.
"""
