"""Compare two runs' records field by field (wall-clock timings and seconds aside): did a code change alter any number?

    python bench/compare_records.py results/before results/after
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEY = ("kind", "arm", "seed", "interactions", "index", "step", "profile", "prompt")


def load(path: Path) -> dict[str, dict]:
    records = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        records[json.dumps({k: record.get(k) for k in KEY}, sort_keys=True)] = record
    return records


def main(a: Path, b: Path) -> int:
    same = True
    for name in ("metrics.jsonl", "interactions.jsonl", "samples.jsonl"):
        left, right = load(a / name), load(b / name)
        differ: dict[str, int] = {}
        for key in left.keys() & right.keys():
            for field in (left[key].keys() | right[key].keys()) - {"timings", "seconds", "peak_memory_gb"}:
                if left[key].get(field) != right[key].get(field):
                    differ[field] = differ.get(field, 0) + 1
        only = len(left.keys() ^ right.keys())
        same &= not differ and not only
        print(f"{name}: {len(left)} / {len(right)} records, {only} unmatched; fields that differ (wall-clock timings and seconds aside): {differ or 'none'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
