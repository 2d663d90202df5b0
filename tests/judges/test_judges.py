"""Degeneration flags and embedding relevance (the real all-MiniLM-L6-v2)."""

import pytest

from core.text import Embedder
from judges.degeneration import assess


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("I'm sorry for the misunderstanding, but as a chatbot I cannot cook.", "apology"),
        ("Sorry! Rice needs water.", "apology"),
        ("As an AI language model, I think rice is nice.", "meta"),
        ("Thank you for your feedback. Rice is boiled in water.", "meta"),
        ("a leaf's fate is determined, a leaf's fate is determined, a leaf's fate is determined, a leaf's fate is determined", "looping"),
        ("", "empty"),
        ("...", "empty"),
    ],
)
def test_degeneration_flags(text, flag):
    report = assess(text)
    assert flag in report.reasons()
    assert report.degenerate


def test_a_plain_answer_is_not_degenerate():
    report = assess("Rinse one cup of rice, add two cups of water, boil, then simmer covered for 18 minutes.")
    assert report.reasons() == [] and not report.degenerate


def test_truncation_counts_only_when_asked():
    text = "Rice is a grain eaten across the world in many different dishes and styles"
    assert assess(text, finished=False).reasons() == ["truncated"]
    assert not assess(text, finished=False).degenerate
    assert assess(text, finished=False, truncated_counts=True).degenerate


def test_relevance_separates_on_topic_from_off_topic():
    embedder = Embedder()
    prompt = "How do I cook rice?"
    on, off = embedder.similarity(
        ["Rinse the rice, add twice as much water, boil, then simmer covered for 18 minutes.", "The Treaty of Westphalia ended the Thirty Years' War in 1648."],
        [prompt, prompt],
    )
    assert on > 0.5 > 0.2 > off
    vectors = embedder.embed(["a", "b c"])
    assert vectors.shape == (2, 384)
    assert vectors.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
