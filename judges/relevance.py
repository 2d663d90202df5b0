"""Content words for relevance: an answer that only repeats the prompt's words says nothing (the embedder that scores
semantic relevance is ``core.text.Embedder``)."""

from __future__ import annotations

import re

# Function words and content-free fillers: an answer made only of these plus the prompt's own words says nothing.
_STOP = set(
    """a an the and or but if then so of to in on at by for with from into onto about as is are was were be been being am do does did
    doing have has had having i you he she it we they me him her us them my your his its our their this that these those there here
    what which who whom whose when where why how not no yes can could will would shall should may might must just also very really
    too more most much many some any all each every other another such than same own only both either neither one ones thing things
    something anything everything nothing way ways kind type sort lot lots called call make makes made get gets got good great nice
    important special different various certain main simple basic well like way really quite often usually always never sure okay ok""".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and not w.endswith("'s")}


def novel_content_words(answer: str, prompt: str) -> int:
    """Content words in the answer that the prompt did not already contain (crude stemming: a trailing 's')."""
    seen = {w.rstrip("s") for w in content_words(prompt)}
    return len({w for w in content_words(answer) if w.rstrip("s") not in seen})
