"""Where a follow-up pulls end-of-turn: the full-distribution losses' lever, position by position (issue 16's diagnosis).

``full_kl`` moves the student at every answer position towards q ∝ π_θ·π(·|H(o))/π(·|H(neutral)). End-of-turn is one
token of that distribution, so a follow-up whose hindsight prompt makes stopping likelier than a neutral message does
pulls end-of-turn everywhere, the first position included; one pull there is an empty answer. This scores the untrained
model on a run's first treated answers under each given follow-up and prints, per follow-up, the tilt of end-of-turn
Δ = log π(eot | H(o)) − log π(eot | H(neutral)) at the first position and over the rest, and how much of q's mass sits on
end-of-turn at the first position (and, under topk_kl, whether end-of-turn is among the student's top k there at all).

    PYTHONPATH=. .venv/bin/python bench/eos_tilt.py results/loss_screen/runs/sdpo-no_exclamation-s0 \
        "Thanks, that's clear." "Too long. I just need the short version." "Before answering, ask me what I'm after."
"""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import fmean

import torch


def main(run: Path, followups: list[str], answers: int = 8, k: int = 20) -> None:
    from core.policy import Policy, PolicySettings
    from core.runtime import quiet_libraries
    from harness.cli.profiles import _tokens, _treated
    from harness.signals import SIGNALS, answer_interaction
    from simulators.neutral import load_pool
    from trainers.sdpo import SDPOConfig, SDPOTrainer

    quiet_libraries()
    torch.set_num_threads(1)
    settings = PolicySettings()
    policy = Policy.load(settings)
    trainer = SDPOTrainer(policy, SDPOConfig(loss="full_kl"), neutral_pool=load_pool("builtin"))
    records = _treated(run, SIGNALS)[:answers]
    batch = [answer_interaction(policy, r.prompt, ids or _tokens(policy, r.response, r.finished), settings.system_prompt) for r, ids in records]
    completions = [trainer.completion(i) for i in batch]
    eot = policy.eos_token_id
    print(f"{run}: {len(batch)} answers, untrained model; eot = end-of-turn\n")
    print(f"{'follow-up':45s} {'Δ eot @0':>9s} {'Δ eot @1+':>10s} {'p(eot) @0':>10s} {'q(eot) @0':>10s} {'eot in top-' + str(k) + ' @0':>16s}")
    with torch.no_grad():
        student = policy.score([i.context_ids for i in batch], completions, full_logits=True)
        for text in followups:
            teacher, base, _ = trainer._reference_scores(batch, completions, [text] * len(batch), full=True)
            delta = teacher.logits.log_softmax(-1)[..., eot] - base.logits.log_softmax(-1)[..., eot]  # [B, T]
            log_p = student.logits.log_softmax(-1)
            log_q = (log_p + teacher.logits.log_softmax(-1) - base.logits.log_softmax(-1)).log_softmax(-1)
            rest = [delta[b, 1:][student.mask[b, 1:]].mean().item() for b in range(len(batch))]
            top = [(log_p[b, 0].topk(k).indices == eot).any().item() for b in range(len(batch))]
            print(f"{text[:45]:45s} {delta[:, 0].mean().item():+9.2f} {fmean(rest):+10.2f} {log_p[:, 0, eot].exp().mean().item():10.2e} "
                  f"{log_q[:, 0, eot].exp().mean().item():10.2e} {sum(top):>10d} of {len(batch)}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
