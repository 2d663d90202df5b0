"""The fully resolved configuration of a personalization run (written as ``config.yaml``; rerunning it reproduces the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.policy import PolicySettings
from core.prompts import PromptSettings
from core.yamlio import load_model_file
from judges import JudgeSettings
from simulators import SimulatorSettings
from trainers import METHOD_HELP, METHODS, RLHIConfig, SDPOConfig
from trainers.guard import GuardMode

CONFIG_VERSION = 1



class GenerationSettings(BaseModel):
    """Sampling for training interactions (temperature 1 as in the paper: on-policy samples)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int | None = Field(None, ge=1, description="longest training answer; None: auto (see RunConfig.with_budgets)")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)


class EvalSettings(BaseModel):
    """Held-out evaluation (greedy, fixed prompts) every ``every`` interactions."""

    model_config = ConfigDict(extra="forbid")
    every: int = Field(16, ge=1, description="interactions between evaluations (a multiple of batch_size)")
    max_new_tokens: int | None = Field(None, ge=1, description="answers cut at this length are flagged truncated; None: auto")
    truncated_is_degenerate: bool = Field(False, description="count answers cut at max_new_tokens as degenerate")
    batch_size: int = Field(32, ge=1)
    # relevance thresholds, calibrated by bench/relevance_calibration.py (see bench/README.md)
    min_prompt_similarity: float = Field(0.3, description="relevant: cosine(answer, prompt) at least this")
    min_reference_similarity: float = Field(0.3, description="relevant: cosine(answer, untrained answer) at least this")
    min_similarity_gain: float = Field(-0.25, description="relevant: cosine to the untrained answer minus cosine to the prompt (an echo of the prompt scores low)")
    min_novel_words: int = Field(2, ge=0, description="relevant: content words the prompt did not already contain")
    persona: Literal["off", "trainer", "profile"] = Field(
        "off", description="persona-guided inference: the trained arms answer with a persona in the system prompt (RLHI's wording): 'trainer' = the "
        "persona the RLHI trainer holds at that point (none for sdpo), 'profile' = the profile's description (an oracle); 'off' = context only")
    kl_prompts: int = Field(8, ge=0, description="measure KL(π_θ ‖ π_0) on the answers to this many held-out prompts (0: off)")
    cache_untrained: bool = Field(True, description="reuse the untrained model's greedy answers across runs (same model, prompts, settings)")


class ContinualSettings(BaseModel):
    """Preferences added one after another (hindsight continual): from interaction k·stage on the user also holds ``add[k-1]``."""

    model_config = ConfigDict(extra="forbid")
    add: list[str] = Field(min_length=1, description="profiles (names or paths) added after `profile`, in order; complementary ones")
    stage: int = Field(ge=1, description="interactions between additions (a multiple of batch_size)")


class RedteamSettings(BaseModel):
    """hindsight redteam: beside the treated arm (trained with trainer.guard, normally mode none) a ``guarded`` arm, identical
    (same seed, prompts, user and flagger) but for the guard mode."""

    model_config = ConfigDict(extra="forbid")
    guard: GuardMode = Field("both", description="the guarded arm's guard mode: principles, skip_flagged or both")


class RunConfig(BaseModel):
    """One personalization experiment: the treated arm, and optionally its control and the in-context oracle, per seed."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = CONFIG_VERSION
    method: str = Field("sdpo", description=METHOD_HELP)
    profile: str = Field("concise", description="profile name or path to a profile YAML")
    interactions: int = Field(64, ge=1)
    batch_size: int = Field(4, ge=1)
    seed: int = 0
    seeds: int = Field(1, ge=1, description="repeat with seeds seed, seed+1, …; curves report means with 95% intervals")
    control: bool = Field(True, description="also run an identical arm whose follow-ups are always neutral messages")
    oracle: bool = Field(True, description="also evaluate the untrained model with the profile in its system prompt")
    flip_at: int | None = Field(None, ge=1, description="hindsight flip: the user holds the profile's opposite from this interaction on (a multiple "
                                "of batch_size); every evaluation scores both")
    continual: ContinualSettings | None = Field(None, description="hindsight continual: preferences added one after another; every evaluation scores each")
    redteam: RedteamSettings | None = Field(None, description="hindsight redteam: also train a 'guarded' arm with the update guard on (needed for adversarial profiles)")
    threads: int | None = Field(1, ge=1, description="torch threads per process (None: torch's default)")
    jobs: int = Field(2, ge=1, description="arms run in parallel processes")
    checkpoint_every: int | None = Field(16, ge=1, description="commit each arm's full training state (weights, optimizer, RNG, loop counters) at the "
                                         "first update ending at or past each multiple of K interactions, so that --resume continues a killed run exactly "
                                         "(None: off)")
    save_checkpoint: bool = Field(True, description="save the treated arms' final weights (safetensors)")
    max_kl: float | None = Field(None, gt=0, description="stop an arm when an evaluation measures KL(π_θ ‖ π_0) above this; the treated arm's "
                                 "checkpoint then holds the weights of its last evaluation within the limit (None: no limit)")
    fail_budget: int = Field(10, ge=0, description="interactions per arm and seed whose simulator call may fail after its retries (recorded, left out of "
                             "the update) before the run stops; 0 stops at the first (--fail-fast)")
    neutral_pool: str = Field("builtin", description="messages of the control arm's user and of the SDPO advantage's neutral reference (one pool): 'builtin' (small talk, acknowledgements), 'unrelated' (unrelated questions) or a text file")
    policy: PolicySettings = PolicySettings()
    prompts: PromptSettings = PromptSettings()
    generation: GenerationSettings = GenerationSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    judge: JudgeSettings = JudgeSettings()
    trainer: SDPOConfig = Field(SDPOConfig(), description="the SDPO update (method sdpo)")
    rlhi: RLHIConfig = Field(RLHIConfig(), description="the RLHI updates and their ablation methods (every method but sdpo)")
    eval: EvalSettings = EvalSettings()

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        return METHODS.check(method)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.eval.every % self.batch_size:
            raise ValueError(f"eval.every ({self.eval.every}) must be a multiple of batch_size ({self.batch_size})")
        if self.max_kl is not None and not self.eval.kl_prompts:
            raise ValueError("max_kl needs the KL measured: eval.kl_prompts must be at least 1")
        if self.flip_at is not None and self.continual is not None:
            raise ValueError("a run either flips (flip_at) or adds preferences (continual), not both")
        if self.redteam is not None:
            if not METHODS.info(self.method).get("guarded"):
                raise ValueError(f"the update guard that redteam compares is SDPO's (trainer.guard); method {self.method} has none")
            if self.changes():
                raise ValueError("a red-team run has one user throughout: no flip_at or continual")
            if self.redteam.guard == "none" or self.trainer.guard.mode != "none":
                raise ValueError("a red-team run compares the unguarded treated arm (trainer.guard.mode none) with the guarded arm (redteam.guard: "
                                 "principles, skip_flagged or both)")
            if self.redteam.guard in ("skip_flagged", "both") and self.trainer.guard.flagger == "off":
                raise ValueError(f"redteam.guard {self.redteam.guard} leaves out flagged follow-ups: trainer.guard.flagger must not be off")
        for change in self.changes():
            if change % self.batch_size or change >= self.interactions:
                raise ValueError(f"the user changes at interaction {change}: it must be a multiple of batch_size ({self.batch_size}) "
                                 f"below interactions ({self.interactions})")
        return self

    def changes(self) -> list[int]:
        """The interactions at which the simulated user's preferences change (none in plain personalization)."""
        if self.continual is not None:
            return [k * self.continual.stage for k in range(1, len(self.continual.add) + 1)]
        return [self.flip_at] if self.flip_at is not None else []

    @property
    def budgeted(self) -> bool:
        """Whether both token budgets are set (``with_budgets`` has nothing left to fill)."""
        return self.generation.max_new_tokens is not None and self.eval.max_new_tokens is not None

    def with_budgets(self, min_words: int) -> RunConfig:
        """Fill the automatic token budgets: 96 (train) and 160 (eval) tokens, or room for the profile's
        word minimum (2 tokens a word) when it asks for more, so that a cut answer is never judged too short."""
        if self.budgeted:
            return self
        need = 2 * min_words
        generation = self.generation.max_new_tokens or max(96, need)
        evaluation = self.eval.max_new_tokens or max(160, need)
        return self.model_copy(update={
            "generation": self.generation.model_copy(update={"max_new_tokens": generation}),
            "eval": self.eval.model_copy(update={"max_new_tokens": evaluation}),
        })

    def arms(self) -> list[tuple[str, int]]:
        """(arm, seed) pairs that train."""
        names = ["treated", *(["guarded"] if self.redteam else []), *(["control"] if self.control else [])]
        return [(arm, self.seed + k) for k in range(self.seeds) for arm in names]

    def trainer_for(self, arm: str) -> SDPOConfig:
        """The trainer settings of an arm: the guarded arm's guard mode is redteam.guard, every other arm's is trainer.guard's."""
        if arm != "guarded" or self.redteam is None:
            return self.trainer
        return self.trainer.model_copy(update={"guard": self.trainer.guard.model_copy(update={"mode": self.redteam.guard})})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_file(cls, path: Path) -> RunConfig:
        return load_model_file(cls, path)
