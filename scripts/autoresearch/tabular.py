"""The frozen tabular harness: split, repeated cross-validation, the candidate in a child process, scoring.

A task's `prepare.py` describes its data in a `TabularTask` and calls `main(task)`. The parent process here
never imports the candidate's train.py: it starts the candidate's zygote in the kernel sandbox
(tabular_child.py, sandbox.py) under a supervisor that counts its CPU time (supervise.py), and hands it one fold
at a time (that fold's training rows with labels and evaluation rows without); kills it at the budget (CPU time
of everything it runs) or at a wall-clock cap several times larger; checks the predictions it returns, and
computes every figure itself.
The held-out rows' labels never leave this process; their score and predictions go only to `--private-out`,
and only the morning report asks for the labels (`--heldout-truth`), which no file keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from autoresearch import contract, keeprules, proc, sandbox, supervise
from autoresearch.data import DataError

# Every metric a problem type may be ratcheted on; all of them are reported in the block, the first is the default.
METRIC_CHOICES = {
    "binary": ("val_auc", "val_logloss", "val_balanced_accuracy"),
    "multiclass": ("val_logloss", "val_balanced_accuracy"),
    "regression": ("val_rmse", "val_r2"),
}
COMPANIONS = {"binary": (), "multiclass": ("val_balanced_accuracy",), "regression": ("val_r2",)}  # shown beside
LOWER_IS_BETTER = ("val_logloss", "val_rmse")  # every other metric: higher is better (`higher_is_better`)
PROBA_CLIP = 1e-15  # log loss of a probability of exactly 0 is infinite; sklearn clips the same way


# The split and fold settings every tabular task starts from (the heart task's; new-task writes these into the
# prepare.py it makes). Defined here only: the task's own prepare.py may override them.
TIME_BUDGET_SECONDS = 60.0  # CPU-s for the whole evaluation of a candidate (26 fits); LogReg needs 1 s, RF(300) 6 s
HOLDOUT_FRACTION = 0.2  # a fixed, seeded fifth held out for the morning audit
SPLIT_SEED = 42  # fixes the held-out rows for every run of a task
N_FOLDS = 5
N_REPEATS = 5  # a single 5-fold CV moves 0.007-0.010 AUC between shuffles; 5x5 gives 25 paired fold scores
CV_SEED = 0  # the ratchet's folds; the report re-measures on fresh seeds (audit.FRESH_CV_SEEDS)
# The budget counts the CPU time of the candidate's whole sandbox (zygote, folds and anything they start), which a
# busy machine does not eat; the wall clock only catches a candidate that sleeps or hangs, at this many times the
# budget. Measured here on 2 cores beside two busy processes (and other agents' work), the sandbox's wall time was
# 1.9x its CPU time (the heart baseline 10.7 s for 5.6 CPU-s, a 600-tree LightGBM 43 s for 23 CPU-s); the language
# model measured 0.3 of a core with four agents' tests on 2 cores (3.3x).
WALL_CAP_FACTOR = contract.WALL_CAP_FACTOR  # 4x
HARNESS_GRACE_SECONDS = 60  # what the ratchet allows on top of the wall cap: start-up, data, scoring
# Threads that wait sleep rather than spin (OpenMP in LightGBM, XGBoost, BLAS), so that CPU time measures work.
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# The keep rule a tabular task's runs use unless its TabularTask or `start --keep-rule` says otherwise. The
# corrected repeated-CV t: on the calibration task (benchmarks/keep_rules.py; README "The keep rule") it was
# the one rule with no run below its start in truth from either start, and 85% of its seen gain was real.
KEEP_RULE = keeprules.CorrectedFolds.name
# What this harness supports (`prepare.py --capabilities`; contract.Capabilities): recorded by `start`.
CAPABILITIES = contract.Capabilities(
    family="tabular",
    keep_rule=KEEP_RULE,
    fresh_folds=True,
    audit_records=True,
    budget_arg=False,
    seed_arg=False,
    budget_clocks={"cpu": "cpu"},
    devices=("cpu",),
)


def wall_cap_seconds(budget: float) -> float:
    """The wall-clock cap on a candidate's sandbox: its CPU budget times WALL_CAP_FACTOR."""
    return budget * WALL_CAP_FACTOR


def harness_timeout(budget: float) -> int:
    """How long the ratchet should let one harness call run (the block's `timeout_seconds`, recorded at start)."""
    return math.ceil(wall_cap_seconds(budget) + HARNESS_GRACE_SECONDS)


@dataclass
class TabularTask:
    name: str
    load: object  # callable(data_path: str | None) -> (X: DataFrame, y: Series); raises DataError
    problem: str = "binary"
    time_budget_seconds: float = TIME_BUDGET_SECONDS  # CPU-s of the candidate's whole sandbox, all folds
    holdout_fraction: float = HOLDOUT_FRACTION
    split_seed: int = SPLIT_SEED
    n_folds: int = N_FOLDS
    n_repeats: int = N_REPEATS
    cv_seed: int = CV_SEED
    metric: str | None = None  # overrides the problem type's default (e.g. "val_balanced_accuracy")
    memory_bytes: int | None = None  # cap on the candidate's address space (default: sandbox.MEMORY_FRACTION of RAM)
    # A task with known truth (tasks/calibration): callable() -> (X, y), fresh rows from the data's generator.
    # `--truth-out` then fits the candidate on the development rows and scores it on them: its true score.
    truth: object = None
    keep_rule: str = KEEP_RULE  # the rule `start` records for this task's runs (keeprules.RULES)


def higher_is_better(metric: str) -> bool:
    """The one place a tabular metric's direction is worked out (the block's `direction:` says it to the rest)."""
    return metric not in LOWER_IS_BETTER


# Problem types and their ratchet metric: (block key, higher is better).
METRICS = {problem: (choices[0], higher_is_better(choices[0])) for problem, choices in METRIC_CHOICES.items()}


def metric_of(task: TabularTask) -> tuple[str, bool]:
    if task.metric:
        if task.metric not in METRIC_CHOICES[task.problem]:
            raise DataError(f"metric {task.metric} does not apply to a {task.problem} task")
        return task.metric, higher_is_better(task.metric)
    return METRICS[task.problem]


def encode_target(task: TabularTask, y: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """Class labels as codes 0..K-1 in sorted order (strings too), so every model and metric sees the same classes."""
    if task.problem == "regression":
        return y.astype(float), None
    classes, codes = np.unique(y.to_numpy(), return_inverse=True)
    return pd.Series(codes, index=y.index, name=y.name), classes


def score(metric: str, y_true: np.ndarray, pred: np.ndarray, classes: np.ndarray | None = None) -> float:
    from sklearn import metrics

    if metric == "val_auc":
        return float(metrics.roc_auc_score(y_true, pred))
    if metric == "val_logloss":
        return float(metrics.log_loss(y_true, np.clip(pred, PROBA_CLIP, 1), labels=classes))
    if metric == "val_balanced_accuracy":
        labels = (pred >= 0.5).astype(int) if pred.ndim == 1 else classes[np.argmax(pred, axis=1)]
        return float(metrics.balanced_accuracy_score(y_true, labels))
    if metric == "val_rmse":
        return float(np.sqrt(metrics.mean_squared_error(y_true, pred)))
    if metric == "val_r2":
        return float(metrics.r2_score(y_true, pred))
    raise ValueError(f"unknown metric {metric}")


def split(task: TabularTask, x: pd.DataFrame, y: pd.Series):
    """The fixed development / held-out split; stratified for classification."""
    from sklearn.model_selection import train_test_split

    stratify = y if task.problem != "regression" else None
    return train_test_split(x, y, test_size=task.holdout_fraction, random_state=task.split_seed, stratify=stratify)


def heldout_truth(task: TabularTask, data: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The encoded labels of the fixed held-out rows and the class names behind the codes (None for regression).

    No file keeps these labels: the morning report asks for them here, from the data, when it audits the
    stored held-out predictions. Same load, encoding and split as `evaluate`, so the rows line up.
    """
    x, labels = task.load(data)
    y, names = encode_target(task, labels)
    _, _, _, y_hold = split(task, x, y)
    return y_hold.to_numpy(), names


def folds(task: TabularTask, y_dev: pd.Series, cv_seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    cls = RepeatedKFold if task.problem == "regression" else RepeatedStratifiedKFold
    cv = cls(n_splits=task.n_folds, n_repeats=task.n_repeats, random_state=cv_seed)
    return list(cv.split(np.zeros(len(y_dev)), y_dev))


class CandidateError(Exception):
    """The candidate failed: it crashed, ran out of time or returned unusable predictions."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _check_predictions(pred: np.ndarray, n_rows: int, problem: str, n_classes: int) -> None:
    shape = (n_rows,) if problem != "multiclass" else (n_rows, n_classes)
    if pred.shape != shape:
        raise CandidateError("crash", f"predictions have shape {pred.shape}, expected {shape}")
    if not np.all(np.isfinite(pred)):
        raise CandidateError("crash", "predictions contain NaN or infinity")


@dataclass
class Job:
    """What one fold process is shown (`payload`) and the shape of the predictions it must return."""

    name: str  # "fold_K" or "holdout": the key of its predictions
    payload: dict
    shape: tuple[int, ...]


def _decode(job: Job, data: bytes) -> np.ndarray:
    """The fold's raw float64 bytes as an array of the job's shape; any other size is the candidate's crash."""
    expected = math.prod(job.shape)
    if not data:
        raise CandidateError("crash", f"{job.name}: no readable predictions from train.py (it ended before giving any)")
    if len(data) != expected * 8:
        raise CandidateError("crash", f"{job.name}: train.py gave {len(data) // 8} predictions, expected {expected}")
    return np.frombuffer(data, dtype="<f8").reshape(job.shape)


@dataclass
class Measured:
    """What the candidate's sandbox used: wall seconds, and CPU seconds as the supervisor counted them (nan when
    it could not report: killed at the wall cap)."""

    wall_seconds: float = math.nan
    cpu_seconds: float = math.nan


def run_candidate(
    task: TabularTask, train_path: Path, make_jobs, max_bytes: int, log, pgid_file: str | None, measured: Measured
) -> dict[str, np.ndarray]:
    """Run the candidate's zygote in the sandbox and feed it `make_jobs()` one at a time: the next job is written
    only once the previous fold and all it started are gone. Returns the predictions by job name; fills `measured`
    (also when the candidate fails).

    The zygote runs under the supervisor (supervise.py), which counts the CPU time of everything below it while it
    runs and kills it all past the budget; the wall clock kills it at `wall_cap_seconds`. The jobs are made in the
    feeding thread while the zygote imports its dependencies: the two overlap.
    Raises CandidateError for anything the candidate did wrong.
    """
    from autoresearch.tabular_child import FRAME, RESULT, TOO_LARGE, read_exactly

    box = sandbox.detect()
    sandbox.ensure_bytecode()
    control_read, control_write = os.pipe()
    report_read, report_write = os.pipe()
    train_inside, _ = sandbox.inside(box, train_path)
    budget, wall_cap = task.time_budget_seconds, wall_cap_seconds(task.time_budget_seconds)
    config = {
        "train": train_inside,
        "control_fd": control_write,
        "max_bytes": max_bytes,
        "isolate": box.active,
        "memory_bytes": task.memory_bytes or sandbox.memory_cap_bytes(),
    }
    child = sandbox.python_argv("autoresearch.tabular_child", json.dumps(config))
    argv = sandbox.python_argv("autoresearch.supervise", str(report_write), "--cpu-budget", repr(budget), "--", *child)
    cmd, env = sandbox.command(box, argv, candidate=train_path, env=THREAD_ENV)
    predictions: dict[str, np.ndarray] = {}
    failed: list[tuple[str, int]] = []

    def pickled(job: Job | None) -> bytes:
        return pickle.dumps(job.payload, protocol=pickle.HIGHEST_PROTOCOL) if job else b""

    def feed(stdin) -> None:
        with os.fdopen(control_read, "rb", buffering=0) as control:
            jobs = make_jobs()
            job = next(jobs, None)
            payload = pickled(job)
            while job is not None:
                stdin.write(FRAME.pack(len(payload)) + payload)
                stdin.flush()
                # The next job is made while this fold runs (one ahead: memory holds two jobs, not all of them).
                upcoming = next(jobs, None)
                upcoming_payload = pickled(upcoming)
                header = read_exactly(control.fileno(), RESULT.size)
                if len(header) < RESULT.size:
                    return  # the sandbox is gone (the budget, or the zygote died): the exit code says why
                status, size = RESULT.unpack(header)
                data = read_exactly(control.fileno(), min(size, max_bytes))
                if status != 0:
                    failed.append((job.name, status))
                    return
                predictions[job.name] = _decode(job, data)
                job, payload = upcoming, upcoming_payload

    def record_pgid(pid: int) -> None:
        if pgid_file:
            Path(pgid_file).write_text(str(pid))

    with os.fdopen(report_read, "rb") as reports, tempfile.TemporaryDirectory(prefix="autoresearch-") as scratch:
        try:
            result = proc.run_in_group(
                cmd,
                timeout=wall_cap,
                stdout=log,
                cwd=scratch,
                env=env,
                on_start=record_pgid,
                feed=feed,
                pass_fds=(control_write, report_write),
            )
        finally:
            if pgid_file:
                Path(pgid_file).unlink(missing_ok=True)  # the group is gone: nothing left to kill by that id
        report = supervise.parse_report(reports.read(supervise.REPORT_BYTES))  # no writer is left: the group is gone
    measured.wall_seconds = result.seconds
    measured.cpu_seconds = float(report.get("cpu_seconds", math.nan))
    counted = f"{measured.cpu_seconds:.1f} CPU-s counted over {result.seconds:.1f} s"
    if result.timed_out:
        raise CandidateError(
            "timeout",
            f"train.py ran past the {wall_cap:g} s wall cap ({WALL_CAP_FACTOR:g}x its {budget:g} CPU-s budget: "
            "it sleeps or waits) and was killed",
        )
    if report.get("cpu_budget_exceeded") or measured.cpu_seconds > budget:
        raise CandidateError("timeout", f"train.py ran past the {budget:g} CPU-s budget ({counted}), all folds")
    why = proc.last_line(result.tail) or "no output"
    if failed:
        name, status = failed[0]
        if status == TOO_LARGE:
            raise CandidateError("crash", f"{name}: train.py wrote more than {max_bytes} bytes of predictions")
        raise CandidateError("crash", f"train.py exited with code {status}: {why}")
    returncode = report.get("returncode", result.returncode) if result.returncode == 0 else result.returncode
    if returncode != 0:
        raise CandidateError("crash", f"train.py's process ended with code {returncode}: {why}")
    return predictions


def evaluate(
    task: TabularTask,
    train_path: Path,
    *,
    data: str | None = None,
    cv_seed: int | None = None,
    private_out: str | None = None,
    truth_out: str | None = None,
    pgid_file: str | None = None,
    log=None,
) -> dict:
    """Score `train_path` on the task; return the summary block as a dict (never raises for candidate faults)."""
    if truth_out and task.truth is None:  # before the data is looked for: nothing to find, nothing to run
        raise DataError(f"the {task.name} task has no generator to draw fresh rows from: no true score")
    started = time.monotonic()
    metric, higher = metric_of(task)
    cv_seed = task.cv_seed if cv_seed is None else cv_seed
    block: dict = {metric: math.nan, f"{metric}_se": math.nan}
    x, labels = task.load(data)  # before the child starts: a data problem is the harness's, not the candidate's
    y, names = encode_target(task, labels)
    classes = np.arange(len(names)) if names is not None else None
    n_classes = len(names) if names is not None else 0
    companions = [m for m in (*COMPANIONS[task.problem], *METRIC_CHOICES[task.problem][:1]) if m != metric]
    companion_scores: dict[str, list[float]] = {m: [] for m in dict.fromkeys(companions)}
    parts: dict = {}

    def make_jobs():
        x_dev, x_hold, y_dev, y_hold = split(task, x, y)
        cv = folds(task, y_dev, cv_seed)
        parts.update(cv=cv, y_dev=y_dev.to_numpy(), y_hold=y_hold.to_numpy())
        x_dev = x_dev.reset_index(drop=True)
        for k, (tr, ev) in enumerate(cv):  # one fold's rows: its training labels, never its evaluation labels
            yield _job(f"fold_{k}", x_dev.iloc[tr], parts["y_dev"][tr], x_dev.iloc[ev])
        yield _job("holdout", x_dev, parts["y_dev"], x_hold)  # features only: held-out labels stay here
        if truth_out:  # the same fit on fresh rows from the generator: the true score, for the report only
            x_truth, y_truth = task.truth()
            y_truth = encode_target(task, y_truth)[0]
            parts["y_truth"] = y_truth.to_numpy()
            yield _job("truth", x_dev, parts["y_dev"], x_truth)

    def _job(name: str, x_train, y_train, x_eval) -> Job:
        payload = {
            "problem": task.problem,
            "n_classes": n_classes,
            "x_train": x_train.reset_index(drop=True),
            "y_train": y_train,
            "x_eval": x_eval.reset_index(drop=True),
        }
        return Job(name, payload, (len(x_eval), n_classes) if task.problem == "multiclass" else (len(x_eval),))

    status, error, measured, fold_scores = "ok", "", Measured(), []
    truth_rows = len(task.truth()[1]) if truth_out else 0
    # no honest prediction array is larger than all rows' worth
    max_bytes = 8 * max(len(x), truth_rows) * max(n_classes, 1)
    try:
        predictions = run_candidate(
            task, train_path, make_jobs, max_bytes, log or sys.stderr.buffer, pgid_file, measured
        )
        for k, (_, ev) in enumerate(parts["cv"]):
            pred = predictions.get(f"fold_{k}")
            if pred is None:
                raise CandidateError("crash", f"no predictions for fold {k}")
            _check_predictions(pred, len(ev), task.problem, n_classes)
            fold_scores.append(score(metric, parts["y_dev"][ev], pred, classes))
            for other, values in companion_scores.items():
                values.append(score(other, parts["y_dev"][ev], pred, classes))
        if not all(math.isfinite(s) for s in fold_scores):
            raise CandidateError("crash", f"{metric} is NaN on some fold")
        holdout = predictions.get("holdout")
        _check_predictions(
            holdout if holdout is not None else np.empty(0), len(parts["y_hold"]), task.problem, n_classes
        )
        if private_out:
            write_private(private_out, metric, parts["y_hold"], holdout, classes, names)
        if truth_out:
            truth = predictions.get("truth")
            _check_predictions(
                truth if truth is not None else np.empty(0), len(parts["y_truth"]), task.problem, n_classes
            )
            true_score = score(metric, parts["y_truth"], truth, classes)
            _write_json(truth_out, {f"true_{metric.removeprefix('val_')}": true_score, "truth_rows": truth_rows})
    except CandidateError as exc:
        status, error, fold_scores = exc.status, str(exc), []
    except ValueError as exc:  # sklearn refuses the predictions (e.g. probabilities of the wrong kind)
        status, error, fold_scores = "crash", f"scoring failed: {exc}", []
    if fold_scores:
        scores = np.asarray(fold_scores)
        block[metric] = float(scores.mean())
        block[f"{metric}_se"] = float(scores.std(ddof=1) / math.sqrt(len(scores)))
        block.update({other: float(np.mean(values)) for other, values in companion_scores.items()})
    block.update(
        status=status,
        train_seconds=f"{measured.wall_seconds:.1f}",
        train_cpu_seconds=f"{measured.cpu_seconds:.1f}",
        total_seconds=f"{time.monotonic() - started:.1f}",
        peak_memory_mb=f"{proc.peak_child_memory_mb():.1f}",
        budget_seconds=task.time_budget_seconds,
        timeout_seconds=harness_timeout(task.time_budget_seconds),
        n_folds=task.n_folds * task.n_repeats,
        cv_folds=task.n_folds,
        n_dev_rows=len(parts.get("y_dev", ())),
        cv_seed=cv_seed,
        task=task.name,
        metric=metric,
        direction="higher" if higher else "lower",
        fold_scores=[round(s, 6) for s in fold_scores] or "none",
    )
    if error:
        block["error"] = error
    return block


def write_private(path: str, metric: str, y_true: np.ndarray, pred: np.ndarray, classes, names=None) -> None:
    """Held-out figures for the morning review; written atomically, never printed.

    The labels are used for the score and then dropped: a file of them would be within reach of a candidate
    or an agent. The report recomputes them from the data (`--heldout-truth`) to bootstrap the predictions.
    """
    record = {
        f"heldout_{metric.removeprefix('val_')}": score(metric, y_true, pred, classes),
        "heldout_pred": pred.tolist(),
    }
    if names is not None and names.tolist() != list(range(len(names))):  # codes stand for other labels: say which
        record["heldout_classes"] = _plain(names)
    _write_json(path, record)


def write_truth(path: str, labels: np.ndarray, names: np.ndarray | None) -> None:
    """The held-out labels for the report, which reads and deletes the file at once; never printed."""
    _write_json(path, {"heldout_true": labels.tolist(), "heldout_classes": None if names is None else _plain(names)})


def _plain(names: np.ndarray) -> list:
    return [n.item() if hasattr(n, "item") else n for n in names]


def _write_json(path: str, record: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def main(task: TabularTask, default_train: Path, argv: list[str] | None = None) -> int:
    """The harness CLI every tabular prepare.py exposes; prints the summary block on stdout."""
    parser = argparse.ArgumentParser(description=f"Frozen harness of the {task.name} task.")
    parser.add_argument("--train", default=None, help="the candidate file (default: the task's train.py)")
    parser.add_argument("--data", default=None, help="a local copy of the data file")
    parser.add_argument("--cv-seed", type=int, default=None, help="fresh folds for a re-measure")
    parser.add_argument("--private-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pgid-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--heldout-truth", default=None, metavar="OUT", help=argparse.SUPPRESS)  # for the report
    parser.add_argument("--truth-out", default=None, metavar="OUT", help=argparse.SUPPRESS)  # calibration only
    parser.add_argument("--check-data", action="store_true", help="fetch and check the data, then exit")
    parser.add_argument(contract.CAPABILITIES_FLAG, action="store_true", help="print what this harness supports")
    args = parser.parse_args(argv)
    proc.hide_from_peers()
    try:
        if args.capabilities:
            print(replace(CAPABILITIES, truth=task.truth is not None, keep_rule=task.keep_rule).dumps())
            return 0
        if args.check_data:
            x, y = task.load(args.data)
            print(f"data: {task.name} ok, {len(x)} rows, {x.shape[1]} features")
            return 0
        if args.heldout_truth:  # no candidate runs: the labels of the fixed split, for the report's audit
            write_truth(args.heldout_truth, *heldout_truth(task, args.data))
            return 0
        train = Path(args.train) if args.train else default_train
        if not train.is_file():
            raise DataError(f"{train}: no such file")
        block = evaluate(
            task,
            train,
            data=args.data,
            cv_seed=args.cv_seed,
            private_out=args.private_out,
            truth_out=args.truth_out,
            pgid_file=args.pgid_file,
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stderr.flush()
    sys.stdout.write(contract.render(block, CAPABILITIES.family))
    sys.stdout.flush()
    return 0
