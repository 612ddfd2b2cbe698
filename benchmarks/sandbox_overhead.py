"""What the isolation costs per iteration on the heart task: the harness with the candidate in the kernel sandbox
(one namespace per fold) against the same harness with the sandbox off (folds still forked one at a time, no
namespaces). Runs alternate so that a change in the machine's load falls on both. Prints figures.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/sandbox_overhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from autoresearch import sandbox, summary

ROOT = Path(__file__).resolve().parents[1]


def harness_run(sandboxed: bool) -> tuple[float, dict]:
    env = dict(os.environ, **({} if sandboxed else {sandbox.SWITCH_ENV: "off"}))
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(ROOT / "prepare.py")], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return time.monotonic() - started, summary.parse_block(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    box = sandbox.detect()
    if not box.active:
        sys.exit(f"nothing to compare: {box.describe()}")
    harness_run(True)  # compile and cache once
    walls: dict[bool, list[float]] = {True: [], False: []}
    scores: dict[bool, set[str]] = {True: set(), False: set()}
    for _ in range(args.runs):
        for sandboxed in (False, True):
            wall, block = harness_run(sandboxed)
            walls[sandboxed].append(wall)
            scores[sandboxed].add(block.get("fold_scores", ""))
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print("---")
    print(f"runs:                    {args.runs} of each, alternating")
    print(f"sandbox:                 {box.describe()}")
    print(f"median_wall_off_s:       {off:.2f}")
    print(f"median_wall_on_s:        {on:.2f}")
    print(f"overhead_s:              {on - off:.2f}")
    print(f"overhead_percent:        {100 * (on - off) / off:.1f}")
    print(f"same_fold_scores:        {'yes' if len(scores[True] | scores[False]) == 1 else 'no'}")


if __name__ == "__main__":
    main()
