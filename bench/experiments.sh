#!/usr/bin/env bash
# The runs behind docs/experiments.md: the default (3 seeds, control, oracle) and one-factor variations of it.
#
#   bench/experiments.sh              # all of them, two processes at a time (~2 h on 2 cores)
#   bench/experiments.sh plain lora   # only the named ones
#
# Each writes results/exp-NAME/ (log: results/exp-NAME.log); `hindsight compare results/exp-*` tabulates them,
# and each folder's summary.md and curve.png show its curves. Variants run seed 0 only and train one arm (no
# control) unless the variant is about the control itself: compare them with the default's seed 0. In `unrelated` and
# `unrelated-plain` the control arm's user answers with unrelated questions (the paper's irrelevant follow-ups): their
# summary.md and `hindsight show` say whether that arm moved against the untrained model.
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HINDSIGHT:-.venv/bin/hindsight}
REWRITE='{prompt}

(My reply to your first attempt, which fell short: {followup}) Improve your answer accordingly.'

args_of() {
  case "$1" in
    default)   ARGS=(--seeds 3) ;;
    plain)     ARGS=(--advantage-reference plain --jobs 1 --no-oracle) ;;
    complain)  ARGS=(--simulator complain --no-control --no-oracle) ;;
    long)      ARGS=(-n 128 --no-control --no-oracle) ;;
    kl0.1)     ARGS=(--kl-anchor 0.1 --no-control --no-oracle) ;;
    ignore2)   ARGS=(--ignore-first-k 2 --no-control --no-oracle) ;;
    lr1e-5)    ARGS=(--lr 1e-5 --no-control --no-oracle) ;;
    lr5e-5)    ARGS=(--lr 5e-5 --no-control --no-oracle) ;;
    lora)      ARGS=(--lora --lr 2e-4 --no-control --no-oracle) ;;
    unrelated) ARGS=(--neutral-pool unrelated --jobs 1 --no-oracle) ;;
    unrelated-plain) ARGS=(--neutral-pool unrelated --advantage-reference plain --jobs 1 --no-oracle) ;;
    template)  ARGS=(--template "$REWRITE" --no-control --no-oracle) ;;
    *) echo "unknown experiment '$1' (known: ${ORDER[*]})" >&2; exit 2 ;;
  esac
}
ORDER=(default plain complain long kl0.1 ignore2 lr5e-5 lora unrelated unrelated-plain template lr1e-5)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for name in "${names[@]}"; do args_of "$name"; done  # fail on a bad name before starting anything
for name in "${names[@]}"; do
  if [ -d "results/exp-$name" ]; then echo "results/exp-$name exists, skipped"; continue; fi
  args_of "$name"
  while [ "$(jobs -rp | wc -l)" -ge "${PARALLEL:-2}" ]; do wait -n || true; done
  echo "start exp-$name: ${ARGS[*]}"
  ( "$H" personalize "${ARGS[@]}" --run-id "exp-$name" > "results/exp-$name.log" 2>&1 && echo "done exp-$name" || echo "FAILED exp-$name (see results/exp-$name.log)" ) &
done
wait
