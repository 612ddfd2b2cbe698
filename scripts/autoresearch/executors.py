"""Where a wave's candidates are scored: executors behind one small interface.

An executor takes a `Job` (a train.py's text and the harness arguments of one scoring) and returns a future of
its `Outcome` (the harness's block, its held-out record, the worker that ran it). It never touches git, the
ledger or the held-out records: the head (`waves.py`, through the scorer) is their single writer.

    local  N slots on this machine; a slot gets its own share of the CPUs (threads capped, CPU affinity) or its
           own GPU (CUDA_VISIBLE_DEVICES), and its own folder under the run's (`slots/K/`)
    ray    each scoring is a Ray task on an existing cluster (executors_ray.py; the `ray` extra)
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.contract import Block
from autoresearch.gitops import Repo
from autoresearch.harness import HarnessRun, run_harness
from autoresearch.runs import read_json
from autoresearch.taskdir import Task

EXECUTORS = ("local", "ray")
SLOTS_DIR = "slots"  # in the run's folder: slots/K/ holds slot K's train.py copy, log, held-out output, pgid files
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
GPU_LIST_ENV = "AUTORESEARCH_GPUS"  # "0,1": the GPUs a run may use, when nvidia-smi is not the one to ask
NVIDIA_SMI_TIMEOUT_SECONDS = 10
# A train.py's bytes as a Job's text and back, exactly: the bytes need not be UTF-8 (a coding declaration makes
# latin-1 valid Python), and a copy scored from other bytes is not the commit the wave keeps. git's output is
# decoded the same way (GitPython: UTF-8 with surrogateescape).
SOURCE_ERRORS = "surrogateescape"


def source_text(data: bytes) -> str:
    """A train.py's bytes as a Job's source; `source_bytes` gives them back unchanged."""
    return data.decode("utf-8", SOURCE_ERRORS)


def source_bytes(source: str) -> bytes:
    return source.encode("utf-8", SOURCE_ERRORS)


@dataclass(frozen=True)
class Job:
    """One scoring: `source` (a train.py's text) through the run's frozen harness with `args` on top."""

    key: str  # unique in the run: "0007" for iter 7's screen, "0007-confirm-best" for the best on iter 7's folds
    source: str
    args: tuple[str, ...] = ()


@dataclass
class Outcome:
    run: HarnessRun  # the block (the candidate's score or failure), seconds, and a harness failure if any
    heldout: dict | None  # the harness's held-out record of this scoring (private to the head)
    worker: str  # where it ran: "local:0", "ray:10.0.0.3"
    attempts: int = 1  # more than 1 when a lost worker made the executor run it again elsewhere
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "block": dict(self.run.block.fields),
            "seconds": self.run.seconds,
            "harness_error": self.run.harness_error,
            "heldout": self.heldout,
            "worker": self.worker,
            "attempts": self.attempts,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, value: dict) -> Outcome:
        block = value.get("block")
        fields_ok = isinstance(block, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in block.items())
        run = HarnessRun(
            Block(block if fields_ok else {}),
            float(value.get("seconds") or 0.0),
            str(value.get("harness_error") or ("" if fields_ok else "the scorer's record of it is damaged")),
        )
        heldout = value.get("heldout")
        return cls(
            run,
            heldout if isinstance(heldout, dict) else None,
            str(value.get("worker", "")),
            int(value.get("attempts", 1) or 1),
            [str(n) for n in value.get("notes", []) if isinstance(n, str)],
        )


@dataclass(frozen=True)
class Scoring:
    """What every scoring of a run shares: the repository, the task, the run's folder, the harness's timeout
    and arguments (the run's frozen `harness_args`)."""

    root: Path
    task_rel: str
    folder: Path
    timeout: float
    harness_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # on top of this process's environment, for every scoring

    def task(self, repo: Repo) -> Task:
        from autoresearch.taskdir import find_task

        return find_task(repo, self.task_rel)


class Executor(ABC):
    """Scores jobs, up to `workers` at a time; `submit` returns at once."""

    workers: int
    name: str

    @abstractmethod
    def submit(self, job: Job) -> Future[Outcome]: ...

    @abstractmethod
    def close(self) -> None:
        """Stop taking jobs; scorings in flight are left to finish (or to die with this process)."""


class LocalExecutor(Executor):
    """N slots on this machine, each with its own CPUs (or its own GPU) and its own folder."""

    name = "local"

    def __init__(self, scoring: Scoring, workers: int, gpus: list[str] | None = None):
        self.scoring, self.workers, self.gpus = scoring, workers, list(gpus or [])
        self.repo = Repo(scoring.root)
        self.task = scoring.task(self.repo)
        self.free: queue.Queue[int] = queue.Queue()
        for slot in range(workers):
            self.free.put(slot)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slot")

    def submit(self, job: Job) -> Future[Outcome]:
        return self.pool.submit(self._score, job)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _score(self, job: Job) -> Outcome:
        slot = self.free.get()
        try:
            return self._score_in(slot, job)
        finally:
            self.free.put(slot)

    def _score_in(self, slot: int, job: Job) -> Outcome:
        where = slot_dir(self.scoring.folder, slot)
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        train, heldout = where / "train.py", where / "heldout.json"
        train.write_bytes(source_bytes(job.source))
        cpus = slot_cpus(slot, self.workers)

        def pin(pid: int) -> None:  # before the harness forks its folds: they inherit the slot's CPUs
            if cpus:
                try:
                    os.sched_setaffinity(pid, cpus)
                except OSError:
                    pass

        run = run_harness(
            self.repo,
            self.task,
            where,
            self.scoring.timeout,
            on_start=pin,
            extra_args=[*self.scoring.harness_args, *job.args],
            train=train,
            log_path=where / "run.log",
            private_out=heldout,
            env=slot_env(slot, self.workers, self.gpus, self.scoring.env),
        )
        keep_log(where / "run.log", self.scoring.folder / "logs" / f"{job.key}.log")
        return Outcome(run, read_json(heldout), f"local:{slot}")


def slot_dir(folder: Path, slot: int) -> Path:
    return folder / SLOTS_DIR / str(slot)


def keep_log(log: Path, to: Path) -> None:
    """The scoring's full output, kept per job (a slot's folder is reused by its next job)."""
    to.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(log, to)
    except OSError:
        pass


def available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def slot_cpus(slot: int, workers: int) -> set[int]:
    """Slot `slot`'s share of this process's CPUs: a contiguous slice; slots share CPUs when there are fewer
    CPUs than slots (empty: leave the affinity alone)."""
    cpus = available_cpus()
    if workers <= 1 or not cpus:
        return set()
    if len(cpus) < workers:
        return {cpus[slot % len(cpus)]}
    share = len(cpus) // workers
    return set(cpus[slot * share : (slot + 1) * share])


def slot_env(slot: int, workers: int, gpus: list[str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of slot `slot`: threads capped to its CPU share, and its own GPU when the run has GPUs."""
    env = dict(os.environ, **(base or {}))
    threads = str(max(1, len(available_cpus()) // max(workers, 1)))
    for name in THREAD_VARIABLES:
        env[name] = threads
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def detect_gpus() -> list[str]:
    """The GPUs this machine offers a run: $AUTORESEARCH_GPUS, else $CUDA_VISIBLE_DEVICES, else nvidia-smi's list."""
    for name in (GPU_LIST_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(name)
        if value is not None:
            return [g.strip() for g in value.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
