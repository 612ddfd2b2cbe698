"""Wall time of `uv run train.py` on the heart baseline, imports included, as a person runs it. Prints figures.

AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/baseline_time.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(["uv", "run", "train.py"], cwd=ROOT, check=True, capture_output=True)  # warm caches once
    walls = []
    for _ in range(args.runs):
        started = time.monotonic()
        subprocess.run(["uv", "run", "train.py"], cwd=ROOT, check=True, capture_output=True)
        walls.append(time.monotonic() - started)
    print("---")
    print(f"runs:                    {args.runs}")
    print(f"median_wall_s:           {statistics.median(walls):.2f}")
    print(f"max_wall_s:              {max(walls):.2f}")


if __name__ == "__main__":
    main()
