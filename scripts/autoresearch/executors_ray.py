"""Scoring a wave's candidates as tasks on an existing Ray cluster (`start --executor ray`; the `ray` extra).

Each Job is one Ray task holding the resources it declares: its GPUs when the run gives a candidate GPUs (Ray
sets CUDA_VISIBLE_DEVICES on the worker, which the harness passes on to the candidate), else one CPU. The task
runs the run's frozen harness on the worker, in a scratch folder holding the task folder's committed files
(shipped as bytes from the head, which verified them: a node needs the project's Python environment, not this
repository) and the candidate's train.py. The head stays the single writer of git, the ledger and the held-out
records: a task hands back the block, the held-out record and the log.

The library reaches the worker twice. The Ray task's own code comes from `py_modules` (the head's
scripts/autoresearch, shipped by Ray at connection). The harness itself runs `python -I`, which ignores
PYTHONPATH: it imports the `autoresearch` installed in the node's environment, and the task refuses to score
(a harness failure, not the candidate's) when that library's bytes are not the head's.

A lost worker (the Ray worker process killed, its node gone) is the environment's failure: the job runs once
more (on another node when its node is gone); a second loss is a harness failure, never the candidate's crash.
Ray's own retries are off: a candidate that crashes or hangs is judged by the harness, once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import ray.exceptions
from ray._private import auto_init_hook, ray_constants

from autoresearch import proc, trust
from autoresearch.contract import Block
from autoresearch.data import sha256_of
from autoresearch.executors import THREAD_VARIABLES, Executor, Job, Outcome, Scoring, source_bytes
from autoresearch.gitops import Repo
from autoresearch.harness import CHILD_PGID_FILE, HARNESS_PGID_FILE, HarnessRun, run_harness_command
from autoresearch.runs import RunError, read_json
from autoresearch.taskdir import Task

RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable: the cluster to join when the run's record names none
LIBRARY_DIR = Path(__file__).resolve().parent  # shipped to every node as a py_module
ATTEMPTS = 2  # a job whose worker is lost runs once more; a second loss is a harness failure
CPUS_PER_CANDIDATE = 1  # a CPU candidate's share of a node: the harness scores its folds one at a time
RESULT_GRACE_SECONDS = 300  # on top of the harness's timeout: a worker's start-up, the runtime env, a busy node
SWEEP_TIMEOUT_SECONDS = 60  # for the clean-up after a lost worker, one small task per node
MAX_SHIPPED_BYTES = 50_000_000  # the task folder's files travel through Ray's object store with every job
PASSED_ENV = ("AUTORESEARCH_DATA_MIRROR",)  # the head's data settings that hold on every node (a shared mirror)
SCRATCH_ROOT = "autoresearch-ray"  # under the node's temp folder: one folder per job in flight, <run>-<key>
PYCACHE_DIR = "pycache"  # in SCRATCH_ROOT: the harness's private bytecode cache on the node (trust.harness_python)
# Ray's uv hook: a driver started by `uv run` (the scorer is) makes Ray copy its whole working directory (the
# work tree, the candidate's edits included) to every worker and build a fresh environment there: minutes per
# node, and not the project's environment. Off unless the user sets it.
UV_HOOK_ENV = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"
CONNECT_TIMEOUT_SECONDS = 10  # a TCP connection to the cluster's GCS before ray.init, which waits minutes
LIBRARY_PROBE = "import autoresearch, os; print(os.path.dirname(os.path.abspath(autoresearch.__file__)))"
LIBRARY_PROBE_TIMEOUT_SECONDS = 120  # an interpreter start on a busy node
# The loss of the process or node that ran the task: the environment's failure, retried once.
LOST_WORKER_ERRORS = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.OutOfMemoryError,  # Ray's memory monitor killed the worker to save its node
    ray.exceptions.ObjectLostError,  # the result was on a node that is gone
)


class RayExecutor(Executor):
    """Each job a Ray task on an existing cluster, at most `workers` in flight."""

    name = "ray"

    def __init__(self, scoring: Scoring, workers: int, address: str | None = None, gpus_per_candidate: int = 0):
        self.scoring, self.workers, self.gpus = scoring, max(1, int(workers)), max(0, int(gpus_per_candidate))
        self.repo = Repo(scoring.root)
        self.task = scoring.task(self.repo)
        self.shipped = shipped_files(self.repo, self.task)
        self.library = {path.name: sha256_of(path) for path in trust.library_files()}
        self.run_id = hashlib.sha256(str(scoring.folder.resolve()).encode()).hexdigest()[:12]
        self.address = address or os.environ.get(RAY_ADDRESS_ENV) or ""
        connect(self.address)
        self._check_resources()
        self.remote = score_on_worker.options(
            num_cpus=CPUS_PER_CANDIDATE, num_gpus=self.gpus, max_retries=0, retry_exceptions=False
        )
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ray-job")

    def _check_resources(self) -> None:
        """A job asking for more than the whole cluster has would wait forever: say so now, in one line."""
        total = ray.cluster_resources()
        if self.gpus and total.get("GPU", 0) < self.gpus:
            raise RunError(
                f"the Ray cluster at {self.address} has {total.get('GPU', 0):g} GPUs; "
                f"a candidate of this run asks for {self.gpus}"
            )
        if not self.gpus and total.get("CPU", 0) < CPUS_PER_CANDIDATE:
            raise RunError(f"the Ray cluster at {self.address} has no CPU to score a candidate on")

    def submit(self, job: Job) -> Future[Outcome]:
        return self.pool.submit(self._score, job)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _score(self, job: Job) -> Outcome:
        started = time.monotonic()
        try:
            files = {name: (self.task.dir / name).read_bytes() for name in self.shipped}
        except OSError as exc:
            return _failed(f"cannot read the task's files to ship them: {exc}", started, "ray:", 1, [])
        args = [*self.scoring.harness_args, *job.args]
        env = dict(self.scoring.env)
        env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ and k not in env})
        scratch = f"{self.run_id}-{re.sub(r'[^A-Za-z0-9_.-]', '_', job.key)}"
        notes: list[str] = []
        worker = "ray:"  # where the last attempt ran, once it said so
        for attempt in range(1, ATTEMPTS + 1):
            deadline = time.monotonic() + self.scoring.timeout + RESULT_GRACE_SECONDS
            where, scoring = "a Ray worker, before it began", None
            try:
                scoring = self.remote.remote(files, job.source, args, self.scoring.timeout, env, self.library, scratch)
                ran = next_value(scoring, deadline)
                worker, where = ran["worker"], "the Ray worker {worker} (pid {pid})".format(**ran)
                value = next_value(scoring, deadline)
            except LOST_WORKER_ERRORS as exc:
                again = "scored again" if attempt < ATTEMPTS else "not scored again"
                notes.append(f"attempt {attempt}: lost {where} ({type(exc).__name__}); {again}")
                sweep(scratch)  # the lost worker's harness, left running on its node, stops now, not at its timeout
                continue
            except ray.exceptions.GetTimeoutError:
                ray.cancel(scoring, force=True)
                why = f"the Ray task gave no result within {self.scoring.timeout + RESULT_GRACE_SECONDS:g} s"
                return _failed(f"{why}; cancelled", started, worker, attempt, notes)
            except (ray.exceptions.RayError, StopIteration) as exc:  # the task's code or Ray failed: not the candidate
                return _failed(f"the Ray task failed: {one_line(exc)}", started, worker, attempt, notes)
            outcome = Outcome.from_json(value)
            outcome.attempts, outcome.notes = attempt, [*notes, *outcome.notes]
            log = self.scoring.folder / "logs" / f"{job.key}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(value.get("log", b""))
            return outcome
        why = f"the Ray worker was lost {ATTEMPTS} times while it scored this train.py ({notes[-1]})"
        return _failed(why, started, worker, ATTEMPTS, notes)


def sweep(scratch: str) -> None:
    """Kill what a lost worker's scoring left in its scratch folder, on every node alive (the head does not know
    which node ran it); best effort, bounded."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    except ray.exceptions.RayError:
        return  # no connection left: nothing to sweep with
    refs = [
        clear_scratch_on_node.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote(scratch)
        for node in nodes
    ]
    ray.wait(refs, num_returns=len(refs), timeout=SWEEP_TIMEOUT_SECONDS)


def _failed(why: str, started: float, worker: str, attempts: int, notes: list[str]) -> Outcome:
    return Outcome(HarnessRun(Block(), time.monotonic() - started, why), None, worker, attempts, list(notes))


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def next_value(scoring, deadline: float) -> dict:
    """The next thing a running `score_on_worker` yields: where it runs, then its result (GetTimeoutError past
    `deadline`; a lost worker's error when it dies first)."""
    ready, _ = ray.wait([scoring], timeout=max(0.0, deadline - time.monotonic()))
    if not ready:
        raise ray.exceptions.GetTimeoutError("no result in time")
    return ray.get(next(scoring))


def connect(address: str) -> None:
    """Join the cluster at `address`; never start one. RunError in one line when it fails. A process joins one
    cluster: a second executor in it uses the first one's connection."""
    if ray.is_initialized():
        return
    if not address:
        raise RunError(
            f"this run scores on Ray and no cluster is named: start --ray-address HOST:PORT, or set ${RAY_ADDRESS_ENV}"
        )
    reachable(address)
    keep_ray_from_improvising()
    try:
        ray.init(
            address=address,
            runtime_env={"py_modules": [str(LIBRARY_DIR)], "excludes": ["__pycache__"]},
            log_to_driver=False,  # the candidate's output is the job's log, brought back with its result
            logging_level=logging.WARNING,
        )
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError... for this
        raise RunError(f"cannot reach the Ray cluster at {address}: {one_line(exc)}") from None


def keep_ray_from_improvising() -> None:
    """Two things Ray does on its own that a run must not: start a local cluster when a call finds no connection
    (a job in flight after `close`), and copy a `uv run` driver's work tree to every worker (UV_HOOK_ENV).
    Their switches are environment variables Ray reads when it is imported, which may be done already."""
    auto_init_hook.enable_auto_connect = False  # RAY_ENABLE_AUTO_CONNECT=0
    if os.environ.get(UV_HOOK_ENV) is None:
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def reachable(address: str) -> None:
    """RunError unless something listens at a HOST:PORT address: ray.init waits minutes on a closed port.
    Other forms ("auto", "ray://...") are left to Ray."""
    match = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address)
    if match is None:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise RunError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is it started (`ray start --head`)?"
        ) from None


def shipped_files(repo: Repo, task: Task) -> list[str]:
    """What a worker needs of the task folder: every file git tracks there but train.py (the candidate's comes
    with the job), relative to the folder. A task at the repository's root ships its own files, not the
    subfolders (the library, the tests, other tasks)."""
    listed = repo.git.ls_files("-z", "--", "." if task.rel == "." else task.rel).split("\0")
    prefix = "" if task.rel == "." else f"{task.rel}/"
    names = [name[len(prefix) :] for name in listed if name.startswith(prefix)]
    names = [n for n in names if n and n != "train.py" and (task.rel != "." or "/" not in n)]
    names = [n for n in names if (task.dir / n).is_file()]  # a tracked file deleted in the work tree is not shipped
    size = sum((task.dir / n).stat().st_size for n in names)
    if size > MAX_SHIPPED_BYTES:
        raise RunError(
            f"the task folder {task.rel} holds {size / 1e6:.0f} MB of committed files, too many to ship with every "
            f"Ray job (at most {MAX_SHIPPED_BYTES / 1e6:.0f} MB): keep data out of git (the harness downloads it)"
        )
    return names


# -- on the worker -------------------------------------------------------------------------------------------
@ray.remote(num_returns="streaming", max_retries=0, retry_exceptions=False)
def score_on_worker(
    files: dict[str, bytes],
    source: str,
    args: list[str],
    timeout: float,
    env: dict[str, str],
    library: dict[str, str],
    scratch: str,
) -> Iterator[dict]:
    """One scoring on this node: the task's files and `source` in a scratch folder, the frozen harness run on
    them as the head runs it. Yields where it runs first (so that the head can name a worker that dies), then
    Outcome.to_json() and the log's bytes."""
    proc.hide_from_peers()  # the candidate runs as this user: no forging the block through this process's /proc
    gpus = [str(g) for g in ray.get_gpu_ids()]
    worker = f"ray:{ray.util.get_node_ip_address()}" + (f"/gpu{'+'.join(gpus)}" if gpus else "")
    yield {"worker": worker, "pid": os.getpid()}
    wrong = library_mismatch(library)
    if wrong:
        run = HarnessRun(Block(), 0.0, wrong)
        yield {**Outcome(run, None, worker).to_json(), "log": wrong.encode()}
        return
    where = Path(tempfile.gettempdir()) / SCRATCH_ROOT / scratch
    clear_scratch(where)  # an earlier attempt at this job, whose worker was lost, may have left its harness running
    try:
        task_dir, work = where / "task", where / "work"
        work.mkdir(parents=True)
        for name, data in files.items():
            target = (task_dir / name).resolve()
            if not target.is_relative_to(task_dir.resolve()):
                raise ValueError(f"a shipped file's name leaves the task folder: {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (task_dir / "train.py").write_bytes(source_bytes(source))  # its bytes, as committed
        task = Task(task_dir, ".", "prepare.py", "train.py")
        environment = dict(os.environ, **env)
        if "CUDA_VISIBLE_DEVICES" in os.environ:  # Ray's choice of this task's GPUs, whatever the head's was
            environment["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        threads = str(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        for variable in THREAD_VARIABLES:
            environment[variable] = threads
        log, heldout = work / "run.log", work / "heldout.json"
        command = [*trust.harness_python(private_pycache()), str(task.prepare)]
        run = run_harness_command(
            command, task, work, timeout, extra_args=args, log_path=log, private_out=heldout, env=environment
        )
        yield {**Outcome(run, read_json(heldout), worker).to_json(), "log": log.read_bytes()}
    finally:
        clear_scratch(where)


@ray.remote(max_retries=0, retry_exceptions=False)
def clear_scratch_on_node(scratch: str) -> None:
    clear_scratch(Path(tempfile.gettempdir()) / SCRATCH_ROOT / scratch)


def clear_scratch(where: Path) -> None:
    """Kill what a scoring in `where` left running (its recorded process groups), then remove the folder."""
    for name in (HARNESS_PGID_FILE, CHILD_PGID_FILE):
        try:
            proc.kill_stale_group(int((where / "work" / name).read_text()))
        except (OSError, ValueError):
            pass
    shutil.rmtree(where, ignore_errors=True)
    shutil.rmtree(private_pycache() / where.relative_to(where.anchor), ignore_errors=True)


def library_mismatch(expected: dict[str, str]) -> str:
    """Why the harness on this node would not run the head's library ('' when it would, byte for byte)."""
    try:
        installed = installed_library()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"this node's Python environment has no autoresearch library the harness can import ({exc})"
    for name, digest in sorted(expected.items()):
        try:
            same = sha256_of(installed / name) == digest
        except OSError:
            same = False
        if not same:
            return (
                f"this node's autoresearch library ({installed}) is not the run's: {name} differs from the head's; "
                "install the run's version of the project on every node"
            )
    return ""


@functools.cache
def installed_library() -> Path:
    """The autoresearch package the harness's isolated interpreter (-I: no PYTHONPATH) imports on this node."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", LIBRARY_PROBE],
        capture_output=True,
        text=True,
        timeout=LIBRARY_PROBE_TIMEOUT_SECONDS,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise ValueError(proc.last_line(out.stderr.encode()) or f"exit code {out.returncode}")
    return Path(out.stdout.strip())


def private_pycache() -> Path:
    """The bytecode cache of the harness on this node, as the head's run folder holds one: shared by the node's
    workers and kept between their jobs (compiling pandas and scikit-learn costs seconds per job); Python
    replaces a .pyc by rename, so workers writing at once are safe."""
    return Path(tempfile.gettempdir()) / SCRATCH_ROOT / PYCACHE_DIR
