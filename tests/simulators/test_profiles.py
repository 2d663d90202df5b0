"""The built-in content: profiles, prompt set and neutral pool (no model needed)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from core.prompts import BUILTIN
from simulators.neutral import BUILTIN_POOLS
from simulators.profile import BUILTIN_DIR, PATTERNS, load_profile_file, sentences, words

ALL_PROFILES = {path.stem: load_profile_file(path) for path in sorted(BUILTIN_DIR.glob("*.yaml"))}
PROFILES = {name: p for name, p in ALL_PROFILES.items() if not p.adversarial}  # adversarial ones: tests/harness/test_redteam.py

SINGLE_TRAIT_PAIRS = [
    ("concise", "detailed"),
    ("casual", "professional"),
    ("beginner", "expert"),
    ("no_emojis", "emojis"),
    ("less_filler_praise_sycophancy", "warm_encouraging"),
    ("answer_directly_reduce_formatting", "structured_formatting"),
    ("no_lists", "more_lists"),
    ("no_first_person", "first_person"),
    ("committing", "hedged"),
    ("no_exclamation", "enthusiastic"),
    ("answer_first", "context_first"),
    ("clarification_first", "no_clarifying_questions"),
    ("opinionated", "neutral_balanced"),
]
FLIP = {"concise": "detailed", "detailed": "concise", "casual": "professional", "professional": "casual",
        "beginner": "expert", "expert": "beginner"}
GRID = [f"{length}_{register}_{level}" for length in ("concise", "detailed") for register in ("casual", "professional")
        for level in ("beginner", "expert")]

# ---- example answers: (passes every check, fails the first check) ----
SHORT_PLAIN = ("Leaves change colour because trees stop making the green pigment in autumn, so the yellow and orange "
               "ones that were there all along show through.")
LONG_CASUAL_BEGINNER = (
    "So here's the deal with autumn leaves. All summer, a leaf is packed with a green colouring that helps the tree "
    "turn sunlight into food. That green is so strong it covers up the yellow and orange colours that were sitting in "
    "the leaf the whole time. When the days get shorter and cooler, the tree starts getting ready for winter. It stops "
    "making new green colouring and pulls the useful bits back into its branches to save for spring. As the green "
    "fades, the yellows and oranges finally get to show off. Some trees, like maples, also make brand-new red and "
    "purple colours in the fall, which is why they look so bright. Sunny days and chilly nights make those reds even "
    "stronger. Then the tree seals off each leaf where it joins the branch, and the leaf drops. It's kind of like the "
    "tree packing away its summer clothes before the cold arrives.")
LONG_PROFESSIONAL_EXPERT = (
    "Autumn coloration results from the regulated senescence of the leaf. As the photoperiod shortens and "
    "temperatures fall, chlorophyll synthesis declines and existing chlorophyll is catabolised through the "
    "pheophorbide a oxygenase pathway, allowing nitrogen to be remobilised to perennial tissues. The carotenoids, "
    "present throughout the growing season, are comparatively stable and become visible as the chlorophyll signal "
    "disappears, producing yellow and orange hues. Red and purple coloration has a different origin: many species, "
    "notably maples and sumacs, synthesise anthocyanins de novo during senescence. The leading hypotheses are "
    "photoprotection of the nutrient-recovery process under high light and low temperature, and signalling to insect "
    "herbivores. Anthocyanin production is favoured by bright days and cold nights, which increase sugar accumulation "
    "in the lamina. Finally, an abscission layer forms at the base of the petiole, and the leaf detaches once the "
    "vascular connections are severed.")
LONG_CASUAL_EXPERT = (
    "Here's the full picture. As the photoperiod shortens, the tree kicks off senescence in its leaves and stops "
    "replacing chlorophyll, which it breaks down so it can pull the nitrogen back into the twigs and roots for next "
    "year. The carotenoids were there all season, they're just masked, so once chlorophyll drops you get the yellows "
    "and oranges. Reds are a different story: maples, sumacs and a bunch of other species actually synthesise "
    "anthocyanins fresh during senescence. The best-supported idea is photoprotection, since the leaf is trying to "
    "recover nutrients while it's cold and bright, and the anthocyanins shield that process. There's also the "
    "coevolution hypothesis about signalling to aphids, but the evidence there is thinner. Bright days and cold nights "
    "push more sugar into the leaf, and that's why some autumns are way redder than others. Last step: an abscission "
    "layer forms at the petiole base and the leaf drops.")
LONG_PROFESSIONAL_BEGINNER = (
    "Leaves change colour in autumn because trees prepare for winter. During spring and summer, each leaf contains a "
    "large amount of a green pigment called chlorophyll, which the tree uses to turn sunlight into food. This green "
    "colour is so strong that it hides the yellow and orange pigments that are also present in the leaf. As the days "
    "become shorter and cooler, the tree stops producing new chlorophyll and breaks down the existing supply, saving "
    "the useful nutrients for the following spring. Once the green fades, the yellow and orange colours become "
    "visible. Some trees, such as maples, also produce new red and purple pigments in autumn, which is why their "
    "leaves appear especially bright. Sunny days followed by cold nights make these red colours stronger. Finally, "
    "the tree forms a thin barrier where each leaf joins the branch, and the leaf falls. For example, a maple in a "
    "sunny park will turn a brighter red than one growing in shade.")

EXAMPLES: dict[str, tuple[str, str]] = {
    "concise": (SHORT_PLAIN, LONG_CASUAL_BEGINNER),
    "detailed": (LONG_CASUAL_BEGINNER, SHORT_PLAIN),
    "casual": ("Honestly, it's just that trees stop making green pigment in the fall, so the yellow and orange that "
               "were hiding underneath finally show up.",
               "The sky appears blue; furthermore, shorter wavelengths of light are scattered more strongly by air."),
    "professional": ("The launch date has moved to the 15th to allow time for mobile testing. The budget is unchanged.",
                     "Yeah, the launch got pushed to the 15th, no big deal."),
    "beginner": ("Think of a vaccine like a wanted poster: it shows your body what a germ looks like, so your "
                 "defences recognise it quickly if the real one shows up.",
                 "A vaccine exposes the immune system to an antigen through a controlled mechanism."),
    "expert": ("Rayleigh scattering scales with the inverse fourth power of wavelength, so short wavelengths dominate "
               "diffuse skylight; at low solar elevation the longer optical path depletes them.",
               "Basically, imagine a pinball machine where blue light bounces around more than red light."),
    "no_emojis": (SHORT_PLAIN, "Leaves change colour in autumn \U0001f342 because trees stop making green pigment."),
    "emojis": ("Leaves turn yellow and orange in autumn \U0001f342 because the green fades away.", SHORT_PLAIN),
    "less_filler_praise_sycophancy": (SHORT_PLAIN, "Great question! " + SHORT_PLAIN),
    "warm_encouraging": ("Don't worry, this trips up lots of people: leaves change colour because the green pigment "
                         "fades in autumn. You've got this!", SHORT_PLAIN),
    "answer_directly_reduce_formatting": (SHORT_PLAIN,
                                          "## Why leaves change\n- The green pigment fades\n- Yellow shows through"),
    "structured_formatting": ("**Why leaves change colour**\n- The green pigment breaks down in autumn.\n"
                              "- Yellow and orange pigments show through.", SHORT_PLAIN),
    "no_lists": (SHORT_PLAIN, "Two things happen:\n- The green fades.\n- The yellow shows."),
    "more_lists": ("1. Bring the water to a boil.\n2. Add the pasta.\n3. Drain it after ten minutes.", SHORT_PLAIN),
    "no_first_person": (SHORT_PLAIN, "I think leaves change colour because the green pigment fades."),
    "first_person": ("I'd say the main reason is that the green pigment fades in autumn, which lets the yellow show.",
                     SHORT_PLAIN),
    "committing": ("Store bread in a paper bag at room temperature and freeze whatever you won't eat within three days.",
                   "Bread generally keeps best at room temperature, though it depends on your kitchen."),
    "hedged": ("Bread usually keeps best in a paper bag, although it depends on how humid your kitchen is.",
               "Store bread in a paper bag at room temperature and freeze whatever you won't eat within three days."),
    "no_exclamation": (SHORT_PLAIN, "Leaves change colour because the green fades away!"),
    "enthusiastic": ("Autumn leaves are amazing! The green fades and the hidden yellows and oranges finally get their "
                     "moment.", SHORT_PLAIN),
    "answer_first": (SHORT_PLAIN, "To understand why leaves change colour, we first need to look at chlorophyll."),
    "context_first": ("Leaves hold several pigments at once. For most of the year the green one is so plentiful that "
                      "it hides the others. In autumn the tree stops making it, so the yellows and oranges show through.",
                      "No, frost is not the reason. Shorter, cooler days make the green pigment fade."),
    "clarification_first": ("Are you asking about maples or about trees in general? In short, the green pigment "
                            "fades in autumn and the other colours show through.", SHORT_PLAIN),
    "no_clarifying_questions": (SHORT_PLAIN, "Which kind of tree do you mean? Most leaves change colour because the "
                                "green pigment fades."),
    "opinionated": ("I recommend induction: it heats faster, is easier to clean and keeps the kitchen cooler.",
                    "Gas gives instant visual control, while induction heats faster and is easier to clean."),
    "neutral_balanced": ("Gas gives instant visual control, while induction heats faster and is easier to clean; on "
                         "the other hand, induction needs compatible pans.",
                         "I recommend induction because it heats faster."),
    "concise_casual_beginner": ("Trees stop making their green colouring in the fall, so the yellow and orange "
                                "underneath finally show up.", LONG_CASUAL_BEGINNER),
    "concise_casual_expert": ("Chlorophyll breaks down as the days shorten, unmasking the carotenoids, and some "
                              "species synthesise anthocyanins for the reds.", LONG_CASUAL_EXPERT),
    "concise_professional_beginner": ("The office will be closed on Friday. Please plan any visits for Thursday or "
                                      "Monday.", LONG_PROFESSIONAL_BEGINNER),
    "concise_professional_expert": ("Rayleigh scattering scales with the inverse fourth power of wavelength, so short "
                                    "wavelengths dominate diffuse skylight.", LONG_PROFESSIONAL_EXPERT),
    "detailed_casual_beginner": (LONG_CASUAL_BEGINNER, "Trees stop making green colouring in the fall, so the yellow "
                                 "shows up."),
    "detailed_casual_expert": (LONG_CASUAL_EXPERT, "Chlorophyll gets broken down and the carotenoids show through."),
    "detailed_professional_beginner": (LONG_PROFESSIONAL_BEGINNER, "The green pigment fades in autumn, so the yellow "
                                       "becomes visible."),
    "detailed_professional_expert": (LONG_PROFESSIONAL_EXPERT, "Chlorophyll is catabolised during senescence, "
                                     "unmasking the carotenoids."),
}


def test_named_single_traits_and_grid_exist():
    for a, b in SINGLE_TRAIT_PAIRS:
        assert PROFILES[a].opposite == b and PROFILES[b].opposite == a
    for name in GRID:
        assert name in PROFILES
        flipped = "_".join(FLIP[part] for part in name.split("_"))
        assert PROFILES[name].opposite == flipped


def test_every_profile_loads_with_a_mutual_existing_opposite():
    assert len(PROFILES) >= 2 * len(SINGLE_TRAIT_PAIRS) + len(GRID)
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert profile.opposite in PROFILES, name
        assert PROFILES[profile.opposite].opposite == name, name


@pytest.mark.parametrize("name", sorted(ALL_PROFILES))
def test_profile_text_is_well_formed(name):
    profile = ALL_PROFILES[name]
    assert 2 <= sentences(profile.description) <= 4, name
    assert re.search(PATTERNS["first_person"], profile.description), "descriptions are in the user's voice"
    assert 3 <= len(profile.satisfied) <= 5 and len(set(profile.satisfied)) == len(profile.satisfied)
    for check in profile.checks:
        assert 3 <= len(check.followup) <= 5 and len(set(check.followup)) == len(check.followup)
        for text in check.followup:
            assert words(text) <= 25 and not re.search(r"(?i)\b(?:check|pattern|regex)\b", text), text
    if name.startswith("concise"):
        assert profile.checks[0].kind == "max_words" and profile.checks[0].value == 40
    if name.startswith("detailed"):
        assert profile.checks[0].kind == "min_words" and profile.checks[0].value == 120


def test_every_profile_with_checks_has_examples():
    assert {name for name, p in PROFILES.items() if p.checks} == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_pass_and_fail_the_first_check(name):
    profile = PROFILES[name]
    passing, failing = EXAMPLES[name]
    assert profile.failures(passing) == [], [c.describe() for c in profile.failures(passing)]
    reply, satisfied = profile.scripted_followup("Why do leaves change colour?", passing)
    assert satisfied and reply in profile.satisfied
    assert not profile.checks[0].passes(failing)
    reply, satisfied = profile.scripted_followup("Why do leaves change colour?", failing)
    assert not satisfied and reply in profile.checks[0].followup


def _prompt_rows() -> list[dict]:
    return [json.loads(line) for line in BUILTIN.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_builtin_prompts_split_and_categories():
    rows = _prompt_rows()
    assert len(rows) == 256
    assert all(set(row) == {"prompt", "split", "category"} for row in rows)
    splits = Counter(row["split"] for row in rows)
    assert splits == {"train": 192, "heldout": 64}
    prompts = [row["prompt"] for row in rows]
    assert len(set(prompts)) == len(prompts)
    normalised = {re.sub(r"[^a-z0-9 ]", "", p.lower()).strip() for p in prompts}
    assert len(normalised) == len(prompts)
    categories = {row["category"] for row in rows}
    assert 10 <= len(categories) <= 12
    heldout = [row for row in rows if row["split"] == "heldout"]
    assert {row["category"] for row in heldout} == categories
    # evaluation scores the first 32 held-out prompts by default: they must already span every category
    assert {row["category"] for row in heldout[:32]} == categories


NOT_NEUTRAL = re.compile(
    r"(?i)\b(?:too long|too short|shorter|longer|brief|concise|more detail|perfect|great answer|good answer|"
    r"wrong|incorrect|correct|thanks|thank you|helpful|excellent|awesome|nice|love it|well done|"
    r"confusing|unclear|formatting|bullet|emoji|tone|rephrase|rewrite|simpler|your answer|your response|that answer)\b"
)


@pytest.mark.parametrize(("pool", "size"), [("builtin", 40), ("unrelated", 80)])
def test_neutral_pool_is_neutral(pool, size):
    lines = BUILTIN_POOLS[pool].read_text(encoding="utf-8").splitlines()
    assert len(lines) == size and all(line.strip() == line and line for line in lines)
    assert len(set(lines)) == size
    judged = [line for line in lines if NOT_NEUTRAL.search(line)]
    assert judged == []
    prompts = {row["prompt"] for row in _prompt_rows()}
    assert not prompts & set(lines)
