"""Calling a task's frozen harness: one scoring (`run_harness`), a rerun folded into the scorings before it
(`run_again`, with the held-out records averaged), and the harness's declared capabilities (`ask_capabilities`).

The harness's stdout is the summary block (read through contract.Block); everything else goes to run.log.
"""

from __future__ import annotations

import io
import math
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from autoresearch import contract, proc, trust
from autoresearch.contract import Block, Capabilities
from autoresearch.gitops import Repo
from autoresearch.runs import RunConfig, RunError, read_json, write_json
from autoresearch.taskdir import Task

HARNESS_GRACE_SECONDS = 60  # interpreter start-up, data and scoring on top of the candidate's budget
BASELINE_TIMEOUT_SECONDS = 3600  # the budget is not known before the baseline reports it
CAPABILITIES_TIMEOUT_SECONDS = 120  # an interpreter and the library's imports; seconds, even on a busy machine
HARNESS_PGID_FILE = "harness.pgid"  # the harness's process group, apart from state.json: junk there cannot hide it
CHILD_PGID_FILE = "child.pgid"  # the candidate's group, written by the harness: killed even if the harness died
PENDING_HELDOUT = "heldout.next.json"  # the harness's held-out figures for the iteration in flight


@dataclass
class HarnessRun:
    block: Block
    seconds: float
    harness_error: str  # non-empty when the harness itself failed (no block): a cause outside train.py

    @property
    def scored(self) -> bool:
        """The harness finished and the candidate scored."""
        return not self.harness_error and self.block.ok


def harness_command(repo: Repo, task: Task) -> list[str]:
    return [*trust.harness_python(repo.common_dir / "autoresearch" / trust.PYCACHE_DIR), str(task.prepare)]


def run_harness(
    repo: Repo,
    task: Task,
    folder: Path,
    timeout: float,
    on_start=None,
    extra_args: list[str] = (),
    *,
    train: Path | None = None,
    log_path: Path | None = None,
    private_out: Path | None = None,
    env: dict[str, str] | None = None,
) -> HarnessRun:
    """Score the task's train.py (or `train`, a copy elsewhere): the harness's stdout is the block, everything
    else goes to run.log (or `log_path`); its held-out figures to PENDING_HELDOUT (or `private_out`). `env`: the
    harness's whole environment (default: this process's)."""
    return run_harness_command(
        harness_command(repo, task),
        task,
        folder,
        timeout,
        on_start,
        extra_args,
        train=train,
        log_path=log_path,
        private_out=private_out,
        env=env,
    )


def run_harness_command(
    command: list[str],
    task: Task,
    folder: Path,
    timeout: float,
    on_start=None,
    extra_args: list[str] = (),
    *,
    train: Path | None = None,
    log_path: Path | None = None,
    private_out: Path | None = None,
    env: dict[str, str] | None = None,
) -> HarnessRun:
    """`run_harness` with the harness's command (interpreter and prepare.py) given: a task outside any
    repository, e.g. the copy a Ray worker scores (executors_ray)."""
    private, pgid_file = private_out or folder / PENDING_HELDOUT, folder / CHILD_PGID_FILE
    private.unlink(missing_ok=True)
    cmd = [
        *command,
        "--train",
        str(train or task.train),
        "--private-out",
        str(private),
        "--pgid-file",
        str(pgid_file),
        *extra_args,
    ]
    out = io.BytesIO()

    def started(pid: int) -> None:
        (folder / HARNESS_PGID_FILE).write_text(str(pid))  # recovery kills it even if state.json is junk
        if on_start is not None:
            on_start(pid)

    with open(log_path or task.log, "wb") as log:
        result = proc.run_in_group(
            cmd, timeout=timeout, stdout=out, stderr=log, cwd=task.dir, env=env, on_start=started
        )
        log.write(out.getvalue())
    kill_recorded_group(pgid_file)
    (folder / HARNESS_PGID_FILE).unlink(missing_ok=True)  # run_in_group killed its group on the way out
    block = Block.parse(out.getvalue().decode("utf-8", errors="replace"))
    error = ""
    if result.timed_out:
        error = f"the harness ran past {timeout:g} s and was killed"
    elif result.returncode is not None and result.returncode < 0:
        # Killed by a signal: by the candidate (it runs as the same user) or by the OOM killer for the
        # candidate's memory. The candidate's crash, not the environment's: it does not stop the run.
        # A block it printed first is not trusted (a forger writes one into the harness's stdout, then kills it).
        block = Block.crash(
            f"the harness was killed by {_signal_name(-result.returncode)} "
            "while it scored this train.py (the candidate, or the kernel for its memory)"
        )
    elif result.returncode != 0 and block:  # a block from a harness that did not finish is not the harness's
        error = f"the harness exited with code {result.returncode} after printing a block; not trusted"
        block = Block()
    elif not block:
        why = proc.last_line(result.tail)
        error = f"the harness exited with code {result.returncode} and printed no summary block" + (
            f": {why}" if why else ""
        )
    return HarnessRun(block, result.seconds, error)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def kill_recorded_group(pgid_file: Path) -> None:
    try:
        pgid = int(pgid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    proc.kill_stale_group(pgid)
    pgid_file.unlink(missing_ok=True)


def timeout_for(config: RunConfig) -> float:
    """How long `try` lets the harness run: what it declared at start, else the budget's wall cap and a grace."""
    budget = config.budget_seconds
    timeout = (
        budget * contract.WALL_CAP_FACTOR + HARNESS_GRACE_SECONDS if math.isfinite(budget) else BASELINE_TIMEOUT_SECONDS
    )
    return float(config.extra.get("timeout_seconds", timeout))


def ask_capabilities(repo: Repo, task: Task) -> Capabilities:
    """What the task's harness declares it supports (`prepare.py --capabilities`); RunError when it declares
    nothing readable (a harness that does not go through the library's `main`)."""
    cmd = [*harness_command(repo, task), contract.CAPABILITIES_FLAG]
    try:
        out = subprocess.run(cmd, cwd=task.dir, capture_output=True, text=True, timeout=CAPABILITIES_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RunError(
            f"{task.prepare_rel} {contract.CAPABILITIES_FLAG} ran past {CAPABILITIES_TIMEOUT_SECONDS} s"
        ) from None
    try:
        if out.returncode != 0:
            raise ValueError(proc.last_line(out.stderr.encode()) or f"exit code {out.returncode}")
        return contract.parse_capabilities(out.stdout)
    except ValueError as exc:
        raise RunError(
            f"{task.prepare_rel} does not declare what it supports ({contract.CAPABILITIES_FLAG}: {exc}); "
            "a harness calls autoresearch.tabular.main or autoresearch.lm.main"
        ) from None


# -- scoring the same code again (a between-run keep rule) -------------------------------------------------
def run_again(
    repo: Repo, task: Task, folder: Path, timeout: float, first: HarnessRun, args: list[str], on_start=None
) -> HarnessRun:
    """Score the same code once more (another seed) and fold it into `first`, its held-out record too."""
    pending = folder / PENDING_HELDOUT
    earlier = read_json(pending)
    again = run_harness(repo, task, folder, timeout, on_start=on_start, extra_args=args)
    later = read_json(pending)
    if earlier and later:
        write_json(pending, mean_record(earlier, later, len(first.block.fold_scores)))
    return fold_rerun(first, again)


def mean_record(earlier: dict, later: dict, runs_before: int) -> dict:
    """A held-out record averaged over runs: `earlier` is already the mean of `runs_before` runs."""
    w = max(runs_before, 1)

    def mean(a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return (w * a + b) / (w + 1)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return [mean(x, y) for x, y in zip(a, b, strict=True)]
        return b

    return {k: mean(earlier[k], v) if k in earlier else v for k, v in later.items()}


def fold_rerun(first: HarnessRun, again: HarnessRun) -> HarnessRun:
    """Fold a rerun into the first run: its score joins fold_scores, the metric is their mean."""
    if not first.scored:
        return first
    if not again.scored:
        return HarnessRun(again.block, first.seconds + again.seconds, again.harness_error)
    scores = first.block.fold_scores + again.block.fold_scores
    return HarnessRun(again.block.with_runs(scores), first.seconds + again.seconds, "")


# -- the confirm step: the candidate and the best scored again on fresh folds ---------------------------------
CONFIRM_DIR = "confirm"  # in the run's folder: the two train.py copies, their logs, the discarded held-out output
# The confirm step's CV seed is CONFIRM_SEED_BASE + the iteration: a seed no other scoring of the run uses (the
# ratchet's folds are the task's cv_seed, 0; the report's re-measure takes audit.FRESH_CV_SEEDS, 1-3, or
# `--fresh-seeds N`, 1..N), and never the same twice in a run.
CONFIRM_SEED_BASE = 1000


def confirm_seed(n: int) -> int:
    return CONFIRM_SEED_BASE + n


def run_confirm(
    repo: Repo,
    task: Task,
    folder: Path,
    timeout: float,
    name: str,
    source: str,
    seed: int,
    extra_args: list[str] = (),
    on_start=None,
) -> HarnessRun:
    """Score `source` (a train.py's text; `name`: "candidate" or "best") on the folds of CV seed `seed`, from a
    copy in the run's folder. Its held-out output is dropped (the candidate's record is the screen's) and it
    logs to confirm/<name>.log, leaving run.log to the screen's scoring."""
    where = folder / CONFIRM_DIR / name
    where.mkdir(parents=True, exist_ok=True)
    train = where / "train.py"
    train.write_text(source)
    return run_harness(
        repo,
        task,
        folder,
        timeout,
        on_start,
        [*extra_args, "--cv-seed", str(seed)],
        train=train,
        log_path=where.parent / f"{name}.log",
        private_out=where.parent / "discarded-heldout.json",
    )
