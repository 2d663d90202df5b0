"""Options shared between commands, defined once and typed; every choice is an enum, so `--help` and shell completion
list it.

The enums mirror the component layers' ``Literal`` types (the loss, the device, …); importing those layers would load
torch on every `hindsight --help`, so tests/test_cli.py checks that each enum lists exactly its ``Literal``'s values.
The registry-backed choices (``--method``, ``--simulator``, ``--judge``) use ``registry_choice``: their names are
read from the registry when a value is parsed or completed, so a newly registered method, simulator or judge is a
choice without touching the CLI.

``RunOptions`` holds the options of ``personalize``, ``flip``, ``continual`` and ``redteam``; each field names the
config key it sets (``field(metadata={"key": ...})``), next to its option, so one table maps options to config.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from harness.cli.base import RESULTS


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str-valued enum whose members are ``values`` (click shows and completes the values)."""
    return enum.Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


Loss = _choices("Loss", ("sampled_token", "full_kl", "topk_kl"))
AdvantageReference = _choices("AdvantageReference", ("neutral", "plain"))
Teacher = _choices("Teacher", ("live", "ema", "initial"))
LearnFrom = _choices("LearnFrom", ("all", "complaints"))
PairJudge = _choices("PairJudge", ("rules", "llm", "local"))  # `hindsight judge`
ModelJudge = _choices("ModelJudge", ("llm", "local"))  # `hindsight usereval`, eval/regress overrides
Device = _choices("Device", ("auto", "cpu", "cuda"))
PersonaSource = _choices("PersonaSource", ("heuristic", "inferred", "profile", "none"))
RewardKind = _choices("RewardKind", ("rules", "llm", "model"))
ClassifierKind = _choices("ClassifierKind", ("heuristic", "llm", "local"))
EvalPersona = _choices("EvalPersona", ("off", "trainer", "profile"))
Guard = _choices("Guard", ("principles", "skip_flagged", "both"))
GuardMode = _choices("GuardMode", ("none", "principles", "skip_flagged", "both"))  # `hindsight serve --learn`
Flagger = _choices("Flagger", ("rules", "llm", "local"))
TrainMethod = _choices("TrainMethod", ("sdpo", "sft"))
Schedule = _choices("Schedule", ("cosine", "constant"))
Backend = _choices("Backend", ("auto", "hf", "vllm"))
Executor = _choices("Executor", ("local", "ray"))  # `hindsight sweep`: where its cells run


def registry_choice(names: Callable[[], list[str]], metavar: str) -> dict[str, Any]:
    """typer.Option arguments for a choice among a registry's names, read when a value is parsed or completed (the
    registries load torch; `hindsight --help` need not). ``metavar`` shows the built-in names."""

    def parse(value: str) -> str:
        known = names()
        if value not in known:
            raise typer.BadParameter(f"{value!r} is not one of " + ", ".join(repr(n) for n in known))
        return value

    return {"parser": parse, "metavar": metavar, "autocompletion": lambda incomplete: [n for n in names() if n.startswith(incomplete)]}


def method_names() -> list[str]:
    import trainers

    return trainers.METHODS.names()


def simulator_names() -> list[str]:
    import simulators

    return simulators.SIMULATORS.names()


def judge_names() -> list[str]:
    import judges

    return judges.judge_kinds()


def plain(value: Any) -> Any:
    """An enum member's value; anything else unchanged."""
    return value.value if isinstance(value, enum.Enum) else value


# options shared by several commands
Results = Annotated[Path, typer.Option(help="Where runs are written.")]
DeviceOption = Annotated[Device, typer.Option(help="auto (CUDA when present, bf16 there), cpu or cuda.")]  # type: ignore[valid-type]
JudgeModel = Annotated[Optional[str], typer.Option(help="For llm: a litellm model ('openai/NAME' with --judge-api-base); for local: a model spec. "
                                                   "(default: openai/local for llm, smollm2-135m for local)")]
JudgeApiBase = Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --judge llm, e.g. http://127.0.0.1:8000/v1 (`hindsight serve`).")]
JudgeKeyEnv = Annotated[Optional[str], typer.Option(help="Name of the environment variable holding the judge's API key (the key itself is never stored).")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override any config field: --set trainer.lr=1e-5 (repeatable; the value is YAML).")]
FILE_HELP = ('Conversations: JSONL, one {"conversation": [{"role", "content"}, ...], "hashed_ip"|"user_id", "language", "model", "timestamp"} a line, '
             "or hf:NAME[:SPLIT] (needs `datasets`).")
MaxTurnChars = Annotated[Optional[int], typer.Option(help="Drop conversations with a turn longer than this. (default: 4096)", min=1, rich_help_panel="Filters")]
MaxConversationChars = Annotated[Optional[int], typer.Option(help="Drop conversations longer than this in all. (default: 100000)", min=1,
                                                            rich_help_panel="Filters")]
MinMessages = Annotated[Optional[int], typer.Option(help="Drop conversations with fewer messages. (default: 3)", min=2, rich_help_panel="Filters")]
Languages = Annotated[Optional[list[str]], typer.Option("--language", rich_help_panel="Filters", help=(
    "Keep only this language (repeatable, case-insensitive, e.g. English). (default: all)"))]
ContextMessages = Annotated[Optional[int], typer.Option(help="History kept before an answer: the last N messages, starting on a user turn. (default: 5)", min=1,
                                                        rich_help_panel="Filters")]
Limit = Annotated[Optional[int], typer.Option(help="Read at most N records. (default: all)", min=1, rich_help_panel="Filters")]


@dataclass(frozen=True)
class Filters:
    """The conversation-import filters (ImportSettings fields) given as options."""

    max_turn_chars: int | None = None
    max_conversation_chars: int | None = None
    min_messages: int | None = None
    languages: list[str] | None = None
    context_messages: int | None = None
    max_conversations: int | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def config_field(config_key: str | None = None, default: Any = None) -> Any:
    """A RunOptions field: its default and the config key it sets (None: handled by name in overrides.run_overrides)."""
    return field(default=default, metadata={"key": config_key})


ADVANTAGE_REFERENCE_HELP = ("Advantage reference of the SDPO update: neutral = the hindsight prompt with a neutral follow-up (cancels the prompt's own pull), "
                            "plain = the prompt alone (the paper).")
METHOD_HELP = (
    "How the policy learns from the follow-ups: sdpo (self-distillation, the --lr/--loss/--advantage-reference options below), rlhi-rewrite "
    "(user-guided rewrites, quality filter, persona-conditioned DPO), rlhi-reward (N candidates ranked by a persona-conditioned reward, online DPO), "
    "or an ablation method: rewrite-scratch, rewrite-nofilter, reward-agnostic, sft (SFT on the kept rewrites), sft-reward. "
    "Every method writes the same records and plots. (default: sdpo)"
)


@dataclass(frozen=True)
class RunOptions:
    """The options of `hindsight personalize` (and of flip, continual and redteam), typed; ``key`` metadata: the config key."""

    profile: Annotated[Optional[str], typer.Option("--profile", "-p", rich_help_panel="What", help=(
        "Profile name (`hindsight profiles list`) or path to a profile YAML. (default: concise)"))] = config_field("profile")
    model: Annotated[Optional[str], typer.Option(rich_help_panel="What", help=(
        "Policy: 'smollm2-135m' (embedded), a .gguf file, a model folder or a hub id. (default: smollm2-135m)"))] = config_field("policy.model")
    prompts: Annotated[Optional[str], typer.Option(rich_help_panel="What", help=(
        "'builtin', 'redteam' (everyday-risk requests), a JSONL file of {\"prompt\": ...} (optional \"split\": train|heldout), "
        "or hf:NAME."))] = config_field("prompts.source")
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", rich_help_panel="What", help=(
        "DANGEROUS: run the Python code a hub model ships with (it runs with your permissions); only for models you trust. "
        "(default: off)"))] = config_field(default=False)
    interactions: Annotated[Optional[int], typer.Option("--interactions", "-n", min=1, rich_help_panel="Budget", help=(
        "Interactions per arm. (default: 64)"))] = config_field("interactions")
    batch_size: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Budget", help=(
        "Interactions per update. (default: 4)"))] = config_field("batch_size")
    eval_every: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Budget", help=(
        "Evaluate every K interactions (multiple of batch size). (default: 32)"))] = config_field("eval.every")
    eval_prompts: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Budget", help=(
        "Held-out prompts per evaluation. (default: 32)"))] = config_field("prompts.eval_prompts")
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Budget", help=(
        "Longest training answer in tokens. (default: 96, more for profiles with a word minimum)"))] = config_field("generation.max_new_tokens")
    seed: Annotated[Optional[int], typer.Option(rich_help_panel="Budget", help="First seed. (default: 0)")] = config_field("seed")
    seeds: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Budget", help=(
        "Repeat with N seeds; curves show means with 95% intervals. (default: 1)"))] = config_field("seeds")
    eval_persona: Annotated[Optional[EvalPersona], typer.Option(rich_help_panel="Budget", help=(  # type: ignore[valid-type]
        "Persona-guided inference at evaluation: off, trainer (the RLHI trainer's current persona in the system prompt), "
        "profile (the profile's description: an oracle). (default: off)"))] = config_field("eval.persona")
    control: Annotated[Optional[bool], typer.Option("--control/--no-control", rich_help_panel="Arms", help=(
        "Also run an identical arm whose user only sends neutral messages: tells learning from the hindsight prompt's own pull. "
        "(default: on)"))] = config_field("control")
    oracle: Annotated[Optional[bool], typer.Option("--oracle/--no-oracle", rich_help_panel="Arms", help=(
        "Also evaluate the untrained model with the profile in its system prompt (reference line). (default: on)"))] = config_field("oracle")
    neutral_pool: Annotated[Optional[str], typer.Option(rich_help_panel="Arms", help=(
        "Messages of the control arm's user and of the neutral advantage reference: builtin (small talk, acknowledgements), "
        "unrelated (unrelated questions) or a text file, one message per line. (default: builtin)"))] = config_field("neutral_pool")
    simulator: Annotated[Optional[str], typer.Option(**registry_choice(simulator_names, "[scripted|complain|llm|local]"), rich_help_panel="User", help=(
        "Who writes follow-ups: scripted (profile rules, offline), llm (litellm), local (a local model), "
        "complain (diagnostic: complains whatever the answer). (default: scripted)"))] = config_field("simulator.kind")
    simulator_model: Annotated[Optional[str], typer.Option(rich_help_panel="User", help=(
        "For --simulator llm: a litellm model ('openai/NAME' with --api-base); for local: a model spec."))] = config_field()
    api_base: Annotated[Optional[str], typer.Option(rich_help_panel="User", help=(
        "OpenAI-compatible base URL for --simulator llm, e.g. http://127.0.0.1:8000/v1."))] = config_field()
    api_key_env: Annotated[Optional[str], typer.Option(rich_help_panel="User", help=(
        "Name of the environment variable holding the API key (the key itself is never stored)."))] = config_field()
    judge: Annotated[Optional[str], typer.Option(**registry_choice(judge_names, "[rules|none|llm|local]"), rich_help_panel="Judge", help=(
        "Who judges each held-out answer against the untrained model's (win rate vs initial): rules (the profile's checks, offline), "
        "llm (litellm, both orders), local (a local model's verdict-token probabilities, both orders), none. (default: rules)"))] = config_field("judge.kind")
    judge_model: Annotated[Optional[str], typer.Option(rich_help_panel="Judge", help=(
        "For --judge llm: a litellm model ('openai/NAME' with --judge-api-base); for local: a model spec. "
        "Giving it without --judge means llm."))] = config_field()
    judge_api_base: Annotated[Optional[str], typer.Option(rich_help_panel="Judge", help=(
        "OpenAI-compatible base URL for --judge llm, e.g. http://127.0.0.1:8000/v1 (`hindsight serve`)."))] = config_field()
    judge_api_key_env: Annotated[Optional[str], typer.Option(rich_help_panel="Judge", help=(
        "Name of the environment variable holding the judge's API key (the key itself is never stored)."))] = config_field()
    method: Annotated[Optional[str], typer.Option(**registry_choice(method_names, "[sdpo|rlhi-rewrite|rlhi-reward|…]"), rich_help_panel="Method",
                                                  help=METHOD_HELP)] = (
        config_field("method"))
    beta: Annotated[Optional[float], typer.Option(rich_help_panel="Method", help="DPO β of the RLHI methods. (default: 0.1)")] = config_field("rlhi.beta")
    persona: Annotated[Optional[PersonaSource], typer.Option(rich_help_panel="Method", help=(  # type: ignore[valid-type]
        "RLHI persona: heuristic (offline: the user's most frequent feedback), inferred (--rlhi-model summarizes the user's messages), "
        "profile (the simulated user's description: an oracle), none. (default: heuristic)"))] = config_field("rlhi.persona.source")
    reward: Annotated[Optional[RewardKind], typer.Option(rich_help_panel="Method", help=(  # type: ignore[valid-type]
        "RLHI persona-conditioned reward: rules (offline: profile checks + MiniLM relevance − degeneration; reads the profile, an oracle), "
        "llm (--rlhi-model rates 1-10), model (--set rlhi.reward.model=DIR: a transformers sequence-classification reward model). "
        "(default: rules)"))] = config_field("rlhi.reward.kind")
    classifier: Annotated[Optional[ClassifierKind], typer.Option(rich_help_panel="Method", help=(  # type: ignore[valid-type]
        "RLHI follow-up classifier: heuristic (offline), llm (--rlhi-model), local (--set rlhi.classifier_model=SPEC). "
        "(default: heuristic)"))] = config_field("rlhi.classifier")
    candidates: Annotated[Optional[int], typer.Option(min=2, rich_help_panel="Method", help=(
        "rlhi-reward: answers sampled per request. (default: 4)"))] = config_field("rlhi.candidates")
    rlhi_model: Annotated[Optional[str], typer.Option(rich_help_panel="Method", help=(
        "The LLM behind --classifier llm, --persona inferred and --reward llm: a litellm model ('openai/NAME' with --rlhi-api-base)."))] = config_field()
    rlhi_api_base: Annotated[Optional[str], typer.Option(rich_help_panel="Method", help=(
        "OpenAI-compatible base URL for --rlhi-model, e.g. http://127.0.0.1:8000/v1."))] = config_field()
    rlhi_api_key_env: Annotated[Optional[str], typer.Option(rich_help_panel="Method", help=(
        "Name of the environment variable holding --rlhi-model's API key."))] = config_field()
    lr: Annotated[Optional[float], typer.Option(rich_help_panel="Trainer", help=(
        "Learning rate of the method's update (trainer.lr for sdpo, rlhi.lr for the others). (default: 2e-5)"))] = config_field()
    loss: Annotated[Optional[Loss], typer.Option(rich_help_panel="Trainer", help=(  # type: ignore[valid-type]
        "sampled_token (policy gradient on the sampled tokens), full_kl or topk_kl (distillation over the whole next-token distribution, or its "
        "top k plus the rest; the divergence is --alpha). (default: sampled_token)"))] = config_field("trainer.loss")
    alpha: Annotated[Optional[float], typer.Option(min=0, max=1, rich_help_panel="Trainer", help=(
        "Divergence of --loss full_kl/topk_kl, as TRL's distillation_alpha: 0 = forward KL(teacher ‖ policy), 0.5 = Jensen-Shannon, "
        "1 = reverse KL(policy ‖ teacher). (default: 1)"))] = config_field("trainer.alpha")
    teacher: Annotated[Optional[Teacher], typer.Option(rich_help_panel="Trainer", help=(  # type: ignore[valid-type]
        "Weights that score the hindsight prompt: live (the policy now, the paper), ema (a moving average of them, rate "
        "--set trainer.ema_rate=0.05; one more copy of the trained weights in memory), initial (the untrained model). (default: live)"
    ))] = config_field("trainer.teacher")
    learn_from: Annotated[Optional[LearnFrom], typer.Option(rich_help_panel="Trainer", help=(  # type: ignore[valid-type]
        "Which follow-ups an SDPO update learns from: all, or complaints (follow-ups the user marked satisfied are left out; an "
        "update whose follow-ups were all satisfied is skipped and reported). (default: all)"))] = config_field("trainer.learn_from")
    advantage_reference: Annotated[Optional[AdvantageReference], typer.Option(rich_help_panel="Trainer", help=(  # type: ignore[valid-type]
        ADVANTAGE_REFERENCE_HELP + " (default: neutral)"))] = config_field("trainer.advantage_reference")
    baseline: Annotated[Optional[AdvantageReference], typer.Option(  # type: ignore[valid-type]
        hidden=True, help="Deprecated: --advantage-reference.")] = config_field()
    kl_anchor: Annotated[Optional[float], typer.Option(rich_help_panel="Trainer", help=(
        "Weight of a KL penalty to the initial policy. (default: 0)"))] = config_field("trainer.kl_anchor")
    ignore_first_k: Annotated[Optional[int], typer.Option(rich_help_panel="Trainer", help=(
        "Leave the first k answer tokens out of the loss. (default: 0)"))] = config_field("trainer.ignore_first_k")
    centre: Annotated[Optional[bool], typer.Option("--centre/--no-centre", rich_help_panel="Trainer", help=(
        "Subtract each answer's mean advantage. (default: off)"))] = config_field("trainer.centre")
    lora: Annotated[Optional[bool], typer.Option("--lora/--no-lora", rich_help_panel="Trainer", help=(
        "Train a LoRA adapter (r=16) instead of all weights. (default: off)"))] = config_field()
    template: Annotated[Optional[str], typer.Option(rich_help_panel="Trainer", help=(
        "Hindsight user turn with {prompt} and {followup}. (default: the paper's wording)"))] = config_field("trainer.template")
    device: Annotated[Optional[Device], typer.Option(rich_help_panel="Machine", help=(  # type: ignore[valid-type]
        "auto (CUDA when present, bf16 there), cpu or cuda. (default: auto)"))] = config_field("policy.device")
    threads: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Machine", help=(
        "torch threads per process (see bench/README.md). (default: 1)"))] = config_field("threads")
    jobs: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Machine", help=(
        "Arms (treated/control × seeds) trained in parallel processes; each holds ~5 GB of memory on CPU "
        "(fp32 weights, the initial copy, AdamW state). (default: 2)"))] = config_field("jobs")
    llm_concurrency: Annotated[Optional[int], typer.Option(min=1, rich_help_panel="Machine", help=(
        "LLM requests in flight at once per batch (simulator, judge, RLHI classifier/persona/reward, flagger): sets concurrency "
        "in every llm section of the config; 1: one after another. Replies, records and costs do not depend on it. (default: 8)"))] = config_field()
    max_kl: Annotated[Optional[float], typer.Option(min=0, rich_help_panel="Reliability", help=(
        "Stop an arm when an evaluation measures its KL to the initial policy above X (a collapsing run); the treated arm keeps the "
        "checkpoint of its last evaluation within the limit, the other arms and the report finish. (default: no limit)"))] = config_field("max_kl")
    fail_budget: Annotated[Optional[int], typer.Option(min=0, rich_help_panel="Reliability", help=(
        "Interactions per arm and seed whose LLM simulator call may still fail after its retries (recorded as failed, left out of the "
        "update) before the run stops. (default: 10)"))] = config_field("fail_budget")
    fail_fast: Annotated[bool, typer.Option("--fail-fast", rich_help_panel="Reliability", help=(
        "Stop the run at the first simulator call that fails after its retries (--fail-budget 0)."))] = config_field(default=False)
    checkpoint_every: Annotated[Optional[int], typer.Option(min=0, rich_help_panel="Reliability", help=(
        "Commit each arm's full training state (weights, optimizer, RNG, counters) every K interactions so that --resume can continue "
        "it exactly; 0: off. (default: 16)"))] = config_field()
    resume: Annotated[Optional[str], typer.Option(rich_help_panel="Reliability", help=(
        "Continue a stopped run (killed, crashed, failed) from its last committed states, with its own config.yaml: RUN is its id or "
        "folder. No other option may be given but --jobs, --threads (the machine's share; a different thread count may change the "
        "last digits of the numbers from there on) and --seeds N, which grows the run (finished or not) to N seeds: the new seeds train as in a "
        "run started with --seeds N. The finished log equals an uninterrupted run's; a finished run is otherwise refused."))] = config_field()
    config: Annotated[Optional[Path], typer.Option("--config", "-c", rich_help_panel="Config", help=(
        "Start from a config YAML (e.g. a run's config.yaml); options given here override it."))] = config_field()
    set_: Annotated[Optional[list[str]], typer.Option("--set", rich_help_panel="Config", help=(
        "Override any config field: --set trainer.epochs=2 (repeatable; the value is YAML)."))] = config_field()
    run_id: Annotated[Optional[str], typer.Option(rich_help_panel="Config", help=(
        "Folder name under results/. (default: date-method-profile)"))] = config_field()
    results: Annotated[Path, typer.Option(rich_help_panel="Config", help="Where runs are written.")] = config_field(default=RESULTS)
    dry_run: Annotated[bool, typer.Option("--dry-run", rich_help_panel="Config", help=(
        "Check every input (profiles, prompts, neutral pool) and print the resolved config; train nothing."))] = config_field(default=False)

    def given(self) -> list[str]:
        """The options given (not at their defaults), as flags."""
        return [flag(f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]


def flag(name: str) -> str:
    """A parameter's option: set_ → --set, run_id → --run-id."""
    return "--" + name.rstrip("_").replace("_", "-")


def with_options(cls: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command (its own options, then ``options: cls``) every field of the dataclass ``cls`` as an option; typer sees
    one flat signature, the command one typed object."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(command, eval_str=True)
        mine = [p for p in own.parameters.values() if p.name != "options"]
        hints = typing.get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclasses.fields(cls)]
        shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
                  for f in dataclasses.fields(cls) if f.name not in own.parameters]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            options = cls(**{n: kwargs.pop(n) for n in names if n in kwargs})
            command(**kwargs, options=options)

        wrapper.__signature__ = own.replace(parameters=[*mine, *shared])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*mine, *shared]} | {"return": None}
        return wrapper

    return decorate


with_run_options = with_options(RunOptions)
