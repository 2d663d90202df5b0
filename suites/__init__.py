"""Benchmark suites for checkpoints (``hindsight eval``, ``hindsight regress``).

Entry types register themselves (suites/suite.py ``ENTRY_TYPES``, ``@entry_type``); the built-in ones are imported here.
A new entry type is one file with one ``@entry_type`` class, and one import line below.
"""

from suites import alpacaeval, generative, lmeval  # noqa: F401  (each registers its entry types)
