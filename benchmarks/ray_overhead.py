"""What scoring on Ray costs over the local executor: a one-node Ray cluster started on this machine (its start
time measured), then the heart task's baseline scored one job at a time by each executor, alternating so that a
change in the machine's load falls on both. Per job: the wall time from submit to Outcome, and the harness's own
seconds inside it; the difference is the executor's overhead. Prints figures; stops the cluster.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run --extra ray benchmarks/ray_overhead.py [--jobs 4]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
from autoresearch.executors import Job, LocalExecutor, Scoring
from autoresearch.executors_ray import RayExecutor

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
TASK_FILES = ("prepare.py", "train.py")  # the heart task, at the repository's root
TIMEOUT_SECONDS = 600


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def task_repository(where: Path) -> Path:
    """A throwaway repository holding the heart task's committed files, as a run's repository does."""
    repo = where / "repo"
    repo.mkdir()
    for name in TASK_FILES:
        shutil.copy(ROOT / name, repo / name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "add", "-A")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "task")
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(executor, job: Job) -> tuple[float, float]:
    started = time.monotonic()
    outcome = executor.submit(job).result(timeout=TIMEOUT_SECONDS)
    if not outcome.run.scored:
        sys.exit(f"{executor.name}: not scored: {outcome.run.harness_error or outcome.run.block.error}")
    return time.monotonic() - started, outcome.run.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited to 107 bytes
    repo = task_repository(where)
    scoring = Scoring(root=repo, task_rel=".", folder=where / "run", timeout=TIMEOUT_SECONDS, harness_args=())
    port = free_port()
    started = time.monotonic()
    subprocess.run(
        [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        check=True, capture_output=True,
    )  # fmt: skip
    start_s = time.monotonic() - started
    try:
        started = time.monotonic()
        on_ray = RayExecutor(scoring, 1, f"127.0.0.1:{port}")
        connect_s = time.monotonic() - started
        local = LocalExecutor(scoring, 1)
        source = (repo / "train.py").read_text()
        first_ray, _ = timed(on_ray, Job("warm-ray", source))  # a worker process, the runtime env, the bytecode
        first_local, _ = timed(local, Job("warm-local", source))
        runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
        for i in range(args.jobs):
            for name, executor in (("local", local), ("ray", on_ray)):
                runs[name].append(timed(executor, Job(f"{name}-{i}", source)))
        on_ray.close()
        local.close()
    finally:
        ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, check=False)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(where, ignore_errors=True)

    def median(name: str, k: int) -> float:
        return statistics.median(r[k] for r in runs[name])

    print("---")
    print(f"jobs:                      {args.jobs} per executor, alternating, one at a time (heart task baseline)")
    print(f"ray_start_s:               {start_s:.1f}")
    print(f"ray_connect_s:             {connect_s:.1f}")
    print(f"first_job_wall_ray_s:      {first_ray:.1f}")
    print(f"first_job_wall_local_s:    {first_local:.1f}")
    for name in ("local", "ray"):
        print(f"{f'median_wall_{name}_s:':<27}{median(name, 0):.2f}")
        print(f"{f'median_harness_{name}_s:':<27}{median(name, 1):.2f}")
    overhead = {name: statistics.median(w - h for w, h in runs[name]) for name in runs}
    print(f"overhead_local_s:          {overhead['local']:.2f}")
    print(f"overhead_ray_s:            {overhead['ray']:.2f}")
    print(f"ray_minus_local_s:         {median('ray', 0) - median('local', 0):.2f}")


if __name__ == "__main__":
    main()
