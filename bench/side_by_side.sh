#!/usr/bin/env bash
# The default `hindsight personalize` of an older commit and of this tree, one after the other on this machine, each
# with an empty answer cache (the converted model and NLTK data shared), then both wall times and their ratio.
# Leave the machine idle while it runs (~20 min on 2 cores).
#
#   bench/side_by_side.sh OLD_COMMIT [OUT_DIR, default /tmp/side-by-side]
set -euo pipefail
old=${1:?usage: bench/side_by_side.sh OLD_COMMIT [OUT_DIR]}
out=${2:-/tmp/side-by-side}
root=$(git rev-parse --show-toplevel)
py=$root/.venv/bin/python
cache_root=$(cd "$root" && "$py" -c "from core.runtime import cache_dir; print(cache_dir())")
mkdir -p "$out"
tree=$out/tree-$old
[ -d "$tree" ] || git -C "$root" worktree add --detach "$tree" "$old" >/dev/null
for side in old new; do
    src=$root; [ "$side" = old ] && src=$tree
    cache=$out/cache-$side
    rm -rf "$cache" "${out:?}/$side"; mkdir -p "$cache"
    for shared in models nltk_data; do [ -e "$cache_root/$shared" ] && ln -s "$cache_root/$shared" "$cache/$shared"; done
    echo "$side: $(git -C "$src" rev-parse --short HEAD)$([ -n "$(git -C "$src" status --porcelain)" ] && echo ' (with uncommitted changes)')"
    start=$(date +%s)
    (cd "$src" && HINDSIGHT_CACHE=$cache PYTHONPATH=$src "$py" -m harness personalize --run-id "$side" --results "$out" > "$out/$side.log" 2>&1)
    echo "$side: $(( $(date +%s) - start )) s wall (log: $out/$side.log)"
done
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
seconds = {side: json.loads((out / side / "run.json").read_text())["seconds"] for side in ("old", "new")}
evals = {side: sorted({json.loads(l)["interactions"] for l in (out / side / "metrics.jsonl").read_text().splitlines()
                        if json.loads(l)["kind"] == "eval" and json.loads(l)["arm"] == "treated"}) for side in ("old", "new")}
print(f"run seconds: old {seconds['old']:.0f} (evaluations at {evals['old']}), new {seconds['new']:.0f} (at {evals['new']}); "
      f"new / old = {seconds['new'] / seconds['old']:.2f}")
PY
