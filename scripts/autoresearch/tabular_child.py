"""The candidate's side of the tabular trust boundary: a zygote that forks one process per fold.

Run by the frozen harness (inside the sandbox, see sandbox.py) as
`python -I -B -u -m autoresearch.tabular_child CONFIG_JSON`. The zygote imports the dependencies train.py names
(never train.py itself: no candidate code runs in it, so nothing it holds can be read by a later fold) and then,
for each job the harness sends, forks a fold process that
- gets namespaces of its own (user, mount, IPC: `sandbox.isolate_fold`), a fresh empty /tmp and /dev/shm,
- reads its one job from stdin: that fold's training rows with labels and evaluation rows without (the harness
  writes the next job only after this fold and everything it started are gone), then closes stdin,
- imports train.py, fits `build_pipeline()` on `feature_fn(...)`, and writes its predictions as raw float64
  bytes on a pipe of its own, then exits: its namespaces and files go with it, and the zygote kills every
  process it left (`end_fold`) before the next job is read.
The zygote reads at most `max_bytes` of those predictions and hands them to the harness on a descriptor no fold
holds, with the fold's exit status. Nothing a fold writes is trusted: the harness checks size and values.

Wire format: harness -> stdin: per job an 8-byte little-endian length, then a pickle of the job (the zygote
reads only the length; the fold reads the pickle); a length of 0 or end of input ends the run.
zygote -> control fd: per job, RESULT (exit status, byte count), then the bytes.
"""

from __future__ import annotations

import ast
import functools
import gc
import importlib
import importlib.util
import json
import os
import pickle
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from autoresearch import proc, sandbox

FRAME = struct.Struct("<q")  # a job's length on stdin
RESULT = struct.Struct("<qq")  # a fold's exit status and the byte count of its predictions, on the control fd
TOO_LARGE = 251  # the status of a fold that wrote more bytes than any honest prediction array has
END_FOLD_PASSES = 100  # kill(-1) passes until no process is left; one is enough unless the fold forks in a loop
ALWAYS_PRELOADED = ("numpy", "pandas", "sklearn.base")  # what predict() needs whatever train.py imports


# -- the fold: the only code that imports train.py -------------------------------------------------------------
def load_candidate(path: Path):
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    for name in ("feature_fn", "build_pipeline"):
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"{path.name} must define {name}()")
    return module


def predict(module, problem: str, x_train, y_train, x_eval, n_classes: int = 0) -> np.ndarray:
    # A fresh copy per fit: a build_pipeline() that returns a shared, warm-started object would start from
    # what it learned before. (Each fold is a new process now, so this only matters within one job.)
    from sklearn.base import clone

    model = module.build_pipeline()
    try:
        model = clone(model, safe=False)
    except Exception:  # noqa: BLE001 - an object clone cannot copy is used as built
        pass
    model.fit(module.feature_fn(x_train.copy()), y_train)
    features = module.feature_fn(x_eval.copy())
    if problem == "regression":
        return np.asarray(model.predict(features), dtype=float)
    proba = np.asarray(model.predict_proba(features), dtype=float)
    if problem == "multiclass":
        return all_classes(proba, getattr(model, "classes_", None), n_classes)
    return proba[:, 1]


def all_classes(proba: np.ndarray, seen, n_classes: int) -> np.ndarray:
    """One column per class of the task (codes 0..K-1): a class absent from a fit's rows gets probability 0."""
    if seen is None or proba.ndim != 2 or proba.shape[1] != len(seen) or len(seen) == n_classes:
        return proba  # the harness checks the shape; nothing to realign
    full = np.zeros((proba.shape[0], n_classes))
    full[:, np.asarray(seen, dtype=int)] = proba
    return full


def read_exactly(fd: int, n: int) -> bytes:
    """`n` bytes from `fd` (fewer only at end of input). os.read, not a buffered file: nothing past them is read."""
    parts, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fold_main(train_path: str, length: int, out_fd: int, isolate: bool, scratch: str | None) -> None:
    """The fold: the one process that runs candidate code, forked by the zygote. Never returns.

    It leaves the zygote's session (kill(0) and killpg reach the fold alone) and, in the sandbox, enters user,
    mount and IPC namespaces of its own with an empty /tmp and /dev/shm: nothing it writes there or in shared
    memory outlives it. What it starts is killed by the zygote when it ends (`end_fold`)."""
    code = 1
    try:
        os.setsid()
        if isolate:
            uid, gid = os.geteuid(), os.getegid()  # before the new namespace, where they are not mapped yet
            if not sandbox.isolate_fold(pid=False):
                raise OSError("could not make the fold's namespaces")
            sandbox.map_own_ids(uid, gid)
            sandbox.private_scratch()
            os.chdir("/tmp")
        else:
            os.chdir(tempfile.mkdtemp(prefix="fold-", dir=scratch))
        job = pickle.loads(read_exactly(0, length))  # the harness's own pickle, never the candidate's
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # no later job can be read from here
        module = load_candidate(Path(train_path))
        pred = predict(module, job["problem"], job["x_train"], job["y_train"], job["x_eval"], job["n_classes"])
        write_all(out_fd, np.ascontiguousarray(pred, dtype="<f8").tobytes())
        code = 0
    except Exception as exc:  # SystemExit and KeyboardInterrupt keep their own meaning
        report(exc)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def end_fold(pid: int, isolate: bool) -> None:
    """Kill everything the fold left running. In the candidate's PID namespace that is every process but this
    one and the namespace's init (kill(-1) is exactly that; repeated, so a process forked during a pass goes
    too); unsandboxed, where kill(-1) would reach all of the user's processes, the fold's session only."""
    if not isolate:
        proc.kill_group(pid)
        return
    for _ in range(END_FOLD_PASSES):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return  # nothing left to signal
        if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in zygote_and_ancestors()]:
            return
        time.sleep(0.001)


@functools.cache
def zygote_and_ancestors() -> frozenset[int]:
    """This process and those above it (the supervisor's namespace init, the supervisor, bwrap's init), by the
    numbers /proc shows: /proc belongs to the sandbox's PID namespace, not to the candidate's nested one, so
    os.getpid() is not among them. None of them is a fold's leftover."""
    found, pid = set(), int(os.readlink("/proc/self"))
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            break
        pid = int(stat[stat.rfind(b")") + 2 :].split()[1])
    return frozenset(found)


def run_job(
    train_path: str, length: int, control: int, max_bytes: int, isolate: bool, scratch: str | None
) -> tuple[int, bytes]:
    """One fold, start to end; returns (exit status, predictions' bytes). The fold's exit is what ends it,
    not the end of its output: a process it left behind may hold the pipe open until `end_fold`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.close(control)
            fold_main(train_path, length, write_end, isolate, scratch)
        finally:
            os._exit(1)
    os.close(write_end)
    data, total, status = bytearray(), 0, None
    if hasattr(os, "pidfd_open"):  # Linux: wake on the fold's exit as well as on its output
        exited, open_ = os.pidfd_open(pid), True
        while status is None:
            ready, _, _ = select.select([read_end, exited] if open_ else [exited], [], [])
            if read_end in ready:
                chunk = os.read(read_end, 1 << 20)
                open_ = bool(chunk)
                total += len(chunk)
                if total <= max_bytes:
                    data += chunk
            if exited in ready:
                _, status = os.waitpid(pid, 0)
        os.close(exited)
    else:  # elsewhere (unsandboxed): the end of its output, then its exit
        while chunk := os.read(read_end, 1 << 20):
            total += len(chunk)
            if total <= max_bytes:
                data += chunk
        _, status = os.waitpid(pid, 0)
    end_fold(pid, isolate)
    while chunk := os.read(read_end, 1 << 20):  # what the fold wrote before it ended; no writer is left
        total += len(chunk)
        if total <= max_bytes:
            data += chunk
    os.close(read_end)
    code = os.waitstatus_to_exitcode(status)
    if total > max_bytes:
        return TOO_LARGE, b""
    return code if code >= 0 else 128 - code, bytes(data)


# -- the zygote --------------------------------------------------------------------------------------------
def imported_modules(source: str) -> list[str]:
    """The absolute module names train.py imports anywhere, read from its syntax tree without running it."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return list(dict.fromkeys(names))


def preload(train_path: str) -> None:
    """Import the installed modules train.py uses, so that each fold's fork starts with them loaded. Only
    modules found in the environment's read-only packages are imported: this is trusted code, not train.py."""
    try:
        source = Path(train_path).read_text(errors="replace")
    except OSError:
        source = ""
    for name in (*ALWAYS_PRELOADED, *imported_modules(source)):
        try:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the fold will raise the same error where the candidate sees it
            continue


def warm_up() -> None:
    """Fit a scaled logistic regression on four made-up rows of a DataFrame, here in the zygote: scikit-learn
    imports its DataFrame support (narwhals) and solvers lazily, at the first fit, which cost each fold 0.3 s
    when every fold paid it. Trusted code on made-up data, so the forks inherit nothing of the task."""
    import warnings

    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, [0, 1, 0, 1]).predict_proba(frame)


def main(config: dict) -> int:
    proc.hide_from_peers()  # no fold can read this process's memory or descriptors through /proc
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the harness gone: end quietly
    sandbox.cap_memory(int(config.get("memory_bytes", 0)))
    preload(config["train"])
    try:
        warm_up()
    except Exception:  # noqa: BLE001 - only a cost: each fold then imports what it needs itself
        pass
    gc.freeze()  # what is loaded now is never collected in a fold: no page of it is copied for the collector
    # Without the sandbox no namespace takes a fold's files away with it: each fold gets a folder in this one.
    scratch = None if config["isolate"] else tempfile.mkdtemp(prefix="autoresearch-folds-")
    try:
        serve(config, scratch)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def serve(config: dict, scratch: str | None) -> None:
    """Fork one fold per job the harness sends, until it sends no more."""
    control, max_bytes = int(config["control_fd"]), int(config["max_bytes"])
    while True:
        header = read_exactly(0, FRAME.size)
        if len(header) < FRAME.size:
            return
        (length,) = FRAME.unpack(header)
        if length <= 0:
            return
        status, data = run_job(config["train"], length, control, max_bytes, config["isolate"], scratch)
        write_all(control, RESULT.pack(status, len(data)) + data)
        if scratch:
            for leftover in Path(scratch).iterdir():
                shutil.rmtree(leftover, ignore_errors=True)


def report(exc: BaseException) -> None:
    """Print the traceback from train.py's frames on: the harness's own frames only hide the cause."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = [f for f in tb.stack if not f.filename.startswith("<frozen") and f.filename != __file__]
    tb.stack = traceback.StackSummary.from_list(frames)
    sys.stderr.write("".join(tb.format()))


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
