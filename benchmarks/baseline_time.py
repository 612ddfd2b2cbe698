"""Time of `uv run train.py` on the heart baseline, imports included, as a person runs it: idle, then beside two
CPU-bound processes (`python3 -c 'while True: pass'` x2, started and killed here). Prints figures.

Per run: the command's wall time, and from the summary block the candidate's sandbox in wall time
(`train_seconds`) and in CPU time (`train_cpu_seconds`, what the budget counts).

AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/baseline_time.py [--runs 5] [--train FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from autoresearch import summary  # noqa: E402


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    busy = [subprocess.Popen(["python3", "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def one_run(train: Path) -> tuple[float, float, float]:
    """(command wall s, sandbox wall s, sandbox CPU s) of one scoring."""
    started = time.monotonic()
    done = subprocess.run(["uv", "run", str(train)], cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    block = summary.parse_block(done.stdout)
    if block.get("status") != "ok":
        raise SystemExit(f"the baseline did not score: {block.get('error') or done.stdout[-500:]}")
    return wall, summary.parse_float(block.get("train_seconds")), summary.parse_float(block.get("train_cpu_seconds"))


def report(label: str, runs: list[tuple[float, float, float]]) -> None:
    walls, sandbox_walls, cpus = zip(*runs, strict=True)
    print(f"{label}_median_wall_s:         {statistics.median(walls):.2f}")
    print(f"{label}_max_wall_s:            {max(walls):.2f}")
    print(f"{label}_median_train_s:        {statistics.median(sandbox_walls):.2f}  (sandbox, wall)")
    print(f"{label}_median_train_cpu_s:    {statistics.median(cpus):.2f}  (sandbox, CPU: the budget's clock)")
    print(f"{label}_max_train_cpu_s:       {max(cpus):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train", type=Path, default=ROOT / "train.py", help="the candidate (default: the baseline)")
    args = parser.parse_args()
    one_run(args.train)  # warm caches once
    idle = [one_run(args.train) for _ in range(args.runs)]
    with busy_processes(2):
        loaded = [one_run(args.train) for _ in range(args.runs)]
    print("---")
    print(f"runs:                       {args.runs} idle, {args.runs} beside two busy processes")
    report("idle", idle)
    report("busy", loaded)


if __name__ == "__main__":
    main()
