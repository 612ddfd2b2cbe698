"""Waves' throughput and overhead on the heart task: candidates scored per hour with 1 and 2 local workers, what
a wave adds per candidate on top of `try`, and a simulation for 8 and 16 workers from the measured costs.

For each worker count it builds a throwaway repository with the heart task, starts a run with `--workers W`,
submits CANDIDATES edits (each a different C, so none is a no-op) and times from the first submit until `wait`
returns. Then, in a run of its own, the same edits go through sequential `try`s for the comparison.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/wave_throughput.py [--candidates 8]

Figures: `per_hour_*` counts candidates judged per hour of the machine's time (the agent's thinking between
waves is not counted: it overlaps the scoring). `overhead_per_candidate_s` = (wall time of the wave - the
harness seconds of its scorings, confirm included) / candidates, with 1 worker: what the queue, the scorer and
`wait` add; `try_overhead_s` is the same for `try` (wall - harness seconds). The simulation takes the measured
harness seconds per scoring `c` (1 worker, no contention) and head overhead per candidate `o`: a wave of K on N
workers takes ceil(K/N)*c for the screens, c for the confirm step (the winner and the best at once) and K*o.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATCHET = [sys.executable, str(ROOT / "scripts" / "ratchet.py")]
SIMULATED_WORKERS = (8, 16)
SIMULATED_WAVE = 12  # the wave size the SkyPilot account found useful (10-13)


def make_repo(where: Path) -> Path:
    where.mkdir(parents=True)
    for name in ("prepare.py", "train.py", ".gitignore"):
        shutil.copy(ROOT / name, where / name)
    for args in (("init", "-q", "-b", "main"), ("add", "-A")):
        subprocess.run(["git", *args], cwd=where, check=True, capture_output=True)
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "task"],
        cwd=where,
        check=True,
        capture_output=True,
    )
    return where


def ratchet(repo: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([*RATCHET, *args], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ratchet {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def edits(source: str, n: int) -> list[str]:
    return [source.replace("C = 1.0", f"C = {0.25 + 0.1 * i:.2f}", 1) for i in range(n)]  # never 1.0, the best


def harness_seconds(repo: Path, tag: str) -> list[float]:
    with open(repo / "results.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["tag"] == tag and r["iter"] != "0"]
    return [float(r["seconds"]) for r in rows]


def wave(tmp: Path, workers: int, n: int) -> dict:
    repo = make_repo(tmp / f"wave{workers}")
    ratchet(repo, "start", "bench", "--workers", str(workers))
    source = (repo / "train.py").read_text()
    submits = []
    started = time.monotonic()
    for i, text in enumerate(edits(source, n)):
        (repo / "train.py").write_text(text)
        t = time.monotonic()
        ratchet(repo, "submit", f"C edit {i}")
        submits.append(time.monotonic() - t)
    out = ratchet(repo, "wait", "--all")
    wall = time.monotonic() - started
    scorings = harness_seconds(repo, "bench")
    subprocess.run(["pkill", "-f", f"autoresearch.scorer {repo}"], capture_output=True)
    return {"wall": wall, "harness": sum(scorings), "submit": statistics.median(submits), "last": out.stdout}


def sequential(tmp: Path, n: int) -> dict:
    repo = make_repo(tmp / "try")
    ratchet(repo, "start", "bench")
    source = (repo / "train.py").read_text()
    walls = []
    for i, text in enumerate(edits(source, n)):
        (repo / "train.py").write_text(text)  # each a C the run has not tried: an edit whatever is kept
        t = time.monotonic()
        ratchet(repo, "try", f"C edit {i}")
        walls.append(time.monotonic() - t)
    scorings = harness_seconds(repo, "bench")
    return {"wall": sum(walls), "harness": sum(scorings), "per_scoring": statistics.median(scorings)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=8)
    args = parser.parse_args()
    n = args.candidates
    with tempfile.TemporaryDirectory() as tmp:
        one = wave(Path(tmp), 1, n)
        two = wave(Path(tmp), 2, n)
        tried = sequential(Path(tmp), n)
    c = tried["per_scoring"]
    head = (one["wall"] - one["harness"]) / n
    try_overhead = (tried["wall"] - tried["harness"]) / n
    print("---")
    print(f"candidates:                {n}")
    print(f"harness_s_per_scoring:     {c:.1f}")
    print(f"per_hour_try:              {3600 * n / tried['wall']:.0f}")
    print(f"per_hour_1_worker:         {3600 * n / one['wall']:.0f}")
    print(f"per_hour_2_workers:        {3600 * n / two['wall']:.0f}")
    print(f"submit_median_s:           {one['submit']:.2f}")
    print(f"overhead_per_candidate_s:  {head:.2f}")
    print(f"try_overhead_s:            {try_overhead:.2f}")
    print(f"wave_minus_try_overhead_s: {head - try_overhead:+.2f}")
    for workers in SIMULATED_WORKERS:
        for size in (workers, SIMULATED_WAVE):
            wall = math.ceil(size / workers) * c + c + size * head
            print(f"simulated_per_hour_{workers}_workers_wave_{size}: {3600 * size / wall:.0f}")


if __name__ == "__main__":
    main()
