"""The scorer: a background process per run that scores queued jobs on the run's executor, up to `workers` at a
time, and writes each outcome to a file. It never touches git, the ledger or the held-out records: `wait`
(waves.py) judges and records. `submit` and `wait` start it when it is not running; it exits when idle.

A job is three files in the run's `jobs/` folder: KEY.json (its harness arguments), KEY.train.py (the source),
then KEY.running (while an executor has it) and KEY.result.json (its Outcome). A scorer that died leaves
KEY.running without a result: `interrupt_orphans` records those as interrupted and kills what they left running.

    python -m autoresearch.scorer ROOT TAG
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import Future
from pathlib import Path

from autoresearch import executors, proc, sandbox, trust
from autoresearch.contract import Block
from autoresearch.executors import SLOTS_DIR, Job, Outcome, Scoring, source_bytes, source_text
from autoresearch.gitops import Repo
from autoresearch.harness import CHILD_PGID_FILE, HARNESS_PGID_FILE, HarnessRun, kill_recorded_group, timeout_for
from autoresearch.refs import open_config
from autoresearch.runs import RunConfig, RunError, read_json, run_dir, write_json

JOBS_DIR = "jobs"  # in the run's folder
SCORER_LOCK = "scorer.lock"  # held by the live scorer for its whole life: flock dies with it, SIGKILL too
SCORER_LOG = "scorer.log"  # the scorer's own output (a traceback if it ever fails), in the run's folder
IDLE_EXIT_SECONDS = 60  # a scorer with nothing to do exits; the next submit starts another (in about a second)
POLL_SECONDS = 0.2  # how often the scorer looks for new jobs and finished ones
INTERRUPTED = "interrupted"  # a result's key: the scoring died with its scorer


def jobs_dir(folder: Path) -> Path:
    return folder / JOBS_DIR


def enqueue(folder: Path, job: Job) -> None:
    """Queue `job`: its source first, then its record (a scorer takes only jobs whose record exists)."""
    where = jobs_dir(folder)
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{job.key}.train.py").write_bytes(source_bytes(job.source))
    write_json(where / f"{job.key}.json", {"key": job.key, "args": list(job.args)})


def job_state(folder: Path, key: str) -> str:
    """ "done", "running", "waiting", or "missing" (never queued, or its files are gone)."""
    where = jobs_dir(folder)
    if (where / f"{key}.result.json").exists():
        return "done"
    if (where / f"{key}.running").exists():
        return "running"
    return "waiting" if (where / f"{key}.json").exists() else "missing"


def outcome(folder: Path, key: str) -> Outcome | None:
    """The job's outcome; None while it is not scored. An interrupted one has `Outcome.worker == INTERRUPTED`."""
    value = read_json(jobs_dir(folder) / f"{key}.result.json")
    if value is None:
        return None
    if value.get(INTERRUPTED):
        return Outcome(HarnessRun(Block(), float(value.get("seconds", 0.0)), ""), None, INTERRUPTED)
    return Outcome.from_json(value)


def forget(folder: Path, key: str) -> None:
    """Remove a judged job's files (its log stays in logs/)."""
    for suffix in (".json", ".train.py", ".running", ".result.json"):
        (jobs_dir(folder) / f"{key}{suffix}").unlink(missing_ok=True)


def alive(folder: Path) -> bool:
    """Whether a scorer holds the run's scorer lock."""
    path = folder / SCORER_LOCK
    if not path.exists():
        return False
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def interrupt_orphans(folder: Path) -> list[str]:
    """With no scorer alive: jobs it had running are recorded as interrupted, and every process group a slot
    recorded is killed. Returns their keys. It holds the scorer lock meanwhile: a scorer starting now (another
    call's) exits at once instead of starting jobs that this would then record as interrupted, and kill."""
    if not folder.is_dir():
        return []
    with open(folder / SCORER_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # a scorer is alive
        return _interrupt(folder)


def _interrupt(folder: Path) -> list[str]:
    for slot in sorted((folder / SLOTS_DIR).glob("*")):
        kill_recorded_group(slot / HARNESS_PGID_FILE)
        kill_recorded_group(slot / CHILD_PGID_FILE)
    keys = []
    for marker in sorted(jobs_dir(folder).glob("*.running")):
        key = marker.name.removesuffix(".running")
        started = read_json(marker) or {}
        if not (jobs_dir(folder) / f"{key}.result.json").exists():
            seconds = time.time() - float(started.get("started", time.time()))
            write_json(jobs_dir(folder) / f"{key}.result.json", {INTERRUPTED: True, "seconds": round(seconds, 1)})
            keys.append(key)
        marker.unlink(missing_ok=True)
    return keys


def ensure_running(repo: Repo, tag: str) -> bool:
    """Start the run's scorer if jobs wait and none is alive (its orphans interrupted first); True if started."""
    folder = run_dir(repo, tag)
    if alive(folder):
        return False
    interrupt_orphans(folder)
    if not any(job_state(folder, p.name.removesuffix(".json")) == "waiting" for p in _records(folder)):
        return False
    with open(folder / SCORER_LOG, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "autoresearch.scorer", str(repo.root), tag],
            cwd=repo.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not in the agent's process group: a ^C or a killed shell does not stop it
        )
    return True


def _records(folder: Path) -> list[Path]:
    return sorted(p for p in jobs_dir(folder).glob("*.json") if not p.name.endswith(".result.json"))


def serve(root: Path, tag: str) -> int:
    """Score the run's queued jobs until none is left for IDLE_EXIT_SECONDS."""
    proc.hide_from_peers()  # it holds the harnesses' stdout pipes: no candidate may reach them through /proc
    repo = Repo(root)
    folder = run_dir(repo, tag)
    lock = open(folder / SCORER_LOCK, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another scorer serves this run
    config, _ = open_config(repo, tag)
    if config is None:
        print(f"scorer: no run {tag}", file=sys.stderr)
        return 2
    executor = make_executor(config, scoring_of(repo, config))
    running: dict[str, Future] = {}
    idle_since = time.monotonic()
    try:
        while True:
            for key, future in list(running.items()):
                if future.done():
                    _write_outcome(folder, key, future)
                    del running[key]
            for record in _records(folder):
                key = record.name.removesuffix(".json")
                if len(running) >= executor.workers:
                    break
                if key in running or job_state(folder, key) != "waiting":
                    continue
                running[key] = _start(folder, config, repo, executor, key)
            if running or any(job_state(folder, r.name.removesuffix(".json")) == "waiting" for r in _records(folder)):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                return 0
            time.sleep(POLL_SECONDS)
    finally:
        executor.close()


def scoring_of(repo: Repo, config: RunConfig) -> Scoring:
    return Scoring(
        repo.root,
        config.task,
        run_dir(repo, config.tag),
        timeout_for(config),
        tuple(config.extra.get("harness_args", [])),
    )


def _start(folder: Path, config: RunConfig, repo: Repo, executor, key: str) -> Future:
    where = jobs_dir(folder)
    record = read_json(where / f"{key}.json") or {}
    write_json(where / f"{key}.running", {"started": time.time(), "pid": os.getpid()})
    try:
        trust.verify(config.extra.get("trusted", {}), repo.root)  # as `try` does before every scoring
        if config.extra.get("sandbox") == "bubblewrap" and not sandbox.detect().active:  # loop._check_sandbox
            raise OSError(f"the run started with the candidate sandboxed, and now: {sandbox.detect().describe()}")
        source = source_text((where / f"{key}.train.py").read_bytes())
    except (trust.TrustError, OSError) as exc:
        failed: Future = Future()
        failed.set_result(Outcome(HarnessRun(Block(), 0.0, f"not scored: {exc}"), None, "head"))
        return failed
    args = tuple(str(a) for a in record.get("args", []))
    return executor.submit(Job(key, source, args))


def _write_outcome(folder: Path, key: str, future: Future) -> None:
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - an executor's failure is the harness's, never the candidate's
        traceback.print_exc()
        result = Outcome(HarnessRun(Block(), 0.0, f"the executor failed: {type(exc).__name__}: {exc}"), None, "")
    write_json(jobs_dir(folder) / f"{key}.result.json", result.to_json())
    (jobs_dir(folder) / f"{key}.running").unlink(missing_ok=True)


def make_executor(config: RunConfig, scoring: Scoring) -> executors.Executor:
    """The executor `start` froze in the run's record."""
    name = config.extra.get("executor", "local")
    workers = int(config.extra.get("workers", 1))
    if name == "local":
        return executors.LocalExecutor(scoring, workers, list(config.extra.get("gpus", [])))
    if name == "ray":
        try:
            from autoresearch.executors_ray import RayExecutor
        except ImportError as exc:
            raise RunError(
                f"run {config.tag} scores on Ray and Ray is not installed ({exc}); `uv sync --extra ray`"
            ) from None
        return RayExecutor(
            scoring, workers, config.extra.get("ray_address"), int(config.extra.get("gpus_per_candidate", 0))
        )
    raise RunError(
        f"run {config.tag}'s record names executor {name!r}; this library knows {', '.join(executors.EXECUTORS)}"
    )


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), sys.argv[2]))
