#!/usr/bin/env bash
# SDPO vs RLHI (user-guided rewrites, user-based rewards) vs SFT on the kept rewrites, under one simulator, profile,
# seed, prompt stream, interaction budget and judge: one treated arm each, evaluated every $EVERY (16) interactions
# (evaluation is greedy and draws no random numbers, so it does not change the training trajectory).
#
#   bench/compare_methods.sh                      # sdpo rlhi-rewrite rlhi-reward sft, one after another (~1.5-2 h on 2 cores)
#   bench/compare_methods.sh rlhi-reward sft      # only these methods
#
# Each writes results/cmp-METHOD/ (log: results/cmp-METHOD.log), queued on /tmp/hindsight-heavy.lock so it never runs
# beside another heavy job; then bench/compare_methods.py draws results/cmp-methods.png and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}  # runs this checkout's code (the working directory comes first on sys.path)
N=${N:-64}
EVERY=${EVERY:-16}
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(sdpo rlhi-rewrite rlhi-reward sft)
todo=()
for method in "${methods[@]}"; do
  if [ -d "results/cmp-$method" ]; then echo "results/cmp-$method exists, skipped"; else todo+=("$method"); fi
done
run_all() {  # one lock for the whole sequence, so other queued jobs cannot slip in between the methods
  for method in "$@"; do
    "$PY" -c "from harness.cli import run; run()" personalize --method "$method" -n "$N" --eval-every "$EVERY" --no-control --no-oracle \
      --set save_checkpoint=false --run-id "cmp-$method" > "results/cmp-$method.log" 2>&1
  done
}
export -f run_all
export PY N EVERY
[ ${#todo[@]} -eq 0 ] || flock /tmp/hindsight-heavy.lock bash -c 'run_all "$@"' _ "${todo[@]}"
PYTHONPATH=. "$PY" bench/compare_methods.py "${methods[@]/#/results/cmp-}"
