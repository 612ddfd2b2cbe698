"""A train.py that tries to bend the score, run through the real CLI: each attack of issue 9, made for real.

Every test writes a hostile train.py into a copy of one started run, runs `ratchet.py try`, and checks that
nothing forged is recorded, no fake gain is kept, the tree is clean, and the reason is one line. The candidate
is honest underneath (a scaled logistic regression), so a score that moved would be the attack's doing.
They run as whatever user runs the suite: CI runs them as root.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from autoresearch import sandbox, trust
from conftest import FIXTURE_DATA, FIXTURE_FOLDS, FIXTURE_FORKS, Project, copy_run, make_project, started_project
from test_faults import processes_with

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sandbox.detect().active, reason=f"needs the kernel sandbox: {sandbox.detect().reason}"),
]

BRIDGE = """

import numpy as np
import pandas as pd

_baseline_pipeline = build_pipeline


def honest():
    return _baseline_pipeline()
"""  # appended to the run's baseline train.py: an attack below it keeps the baseline's model underneath


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_mirror) -> Project:
    """One run on the fixture task, started once and copied per test."""
    project = started_project(tmp_path_factory.mktemp("started"), data_mirror, "t1")
    assert "not sandboxed" not in project.start_output
    return project


@pytest.fixture
def run(started, tmp_path) -> Project:
    return copy_run(started, tmp_path / "repo")


def attempt(project: Project, attack: str) -> subprocess.CompletedProcess:
    project.write(baseline_source(project) + BRIDGE + attack)
    return project.ratchet("try", "hostile edit")


def baseline_source(project: Project) -> str:
    return project.git("show", "refs/autoresearch/t1/0000:train.py") + "\n"


def last_row(project: Project) -> dict:
    return project.rows()[-1]


def assert_nothing_gained(project: Project, out: subprocess.CompletedProcess, rows_before: int = 1) -> dict:
    """The attack's iteration is one row, not kept, with the tree back at the best and one line printed. The
    model underneath is the baseline's: a score that is not the baseline's would be the attack's doing."""
    assert out.returncode == 0, out.stderr
    rows = project.rows()
    assert len(rows) == rows_before + 1
    row = rows[-1]
    assert row["status"] != "keep", row
    assert row["status"] == "crash" or row["fold_scores"] == rows[0]["fold_scores"], row
    assert out.stdout.splitlines()[0].startswith(f"iter {row['iter']} |")
    assert project.status() == ""
    return row


def test_no_fold_can_remember_another_folds_labels(run):
    """A cache kept between folds (module state, /tmp, /dev/shm, the working folder, SysV shared memory) would
    hand each fold the labels of its evaluation rows, which earlier folds trained on. Every fold starts empty."""
    attack = """
import ctypes, os, pickle

KEY, SIZE = 0x5EED, 1 << 20
PLACES = ["/tmp/memo.pkl", "/dev/shm/memo.pkl", os.path.abspath("memo.pkl")]
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p


def key(row):
    return tuple(np.nan_to_num(np.asarray(row, dtype=float), nan=-999.0))


def load():
    memo = dict(globals().get("MEMO", {}))
    for place in PLACES:
        try:
            memo.update(pickle.load(open(place, "rb")))
        except Exception:
            pass
    shmid = libc.shmget(KEY, SIZE, 0o666)
    if shmid >= 0:
        raw = ctypes.string_at(libc.shmat(shmid, None, 0), SIZE)
        try:
            memo.update(pickle.loads(raw))
        except Exception:
            pass
    return memo


def save(memo):
    globals()["MEMO"] = memo
    blob = pickle.dumps(memo)
    for place in PLACES:
        try:
            open(place, "wb").write(blob)
        except Exception:
            pass
    shmid = libc.shmget(KEY, SIZE, 0o1666)
    if shmid >= 0 and len(blob) < SIZE:
        ctypes.memmove(libc.shmat(shmid, None, 0), blob, len(blob))


class Memo:
    def fit(self, x, y):
        memo = load()
        print(f"MEMO LOADED {len(memo)}", flush=True)
        memo.update({key(r): int(v) for r, v in zip(np.asarray(x, dtype=float), np.asarray(y))})
        save(memo)
        self.memo, self.model = memo, honest().fit(x, y)
        return self

    def predict_proba(self, x):
        proba = self.model.predict_proba(x)
        hits = [self.memo.get(key(r)) for r in np.asarray(x, dtype=float)]
        print(f"MEMO HITS {sum(h is not None for h in hits)}", flush=True)
        for i, h in enumerate(hits):
            if h is not None:
                proba[i] = [1.0 - h, float(h)]
        return proba


def build_pipeline():
    return Memo()
"""
    out = attempt(run, attack)
    row = assert_nothing_gained(run, out)
    log = run.read("run.log")
    assert log.count("MEMO LOADED") >= FIXTURE_FORKS  # the attack ran in every fold and for the held-out predictions
    assert set(line.split()[-1] for line in log.splitlines() if line.startswith("MEMO LOADED")) == {"0"}
    assert "MEMO HITS 0" in log and all(line == "MEMO HITS 0" for line in log.splitlines() if "MEMO HITS" in line)
    assert max(float(s) for s in row["fold_scores"].split(",")) < 0.99


def test_a_fold_holds_only_its_own_rows(run):
    """Searching the fold's memory finds no label array beyond the fold's own training labels."""
    attack = """
import gc, sys


class Snoop:
    def fit(self, x, y):
        n_train = len(x)
        found = set()
        for obj in gc.get_objects():
            try:
                arr = np.asarray(obj) if isinstance(obj, (np.ndarray, pd.Series, list)) else None
            except Exception:
                continue
            if arr is not None and arr.ndim == 1 and len(arr) > n_train and np.isin(arr, [0, 1]).all():
                found.add(len(arr))
        frame = sys._getframe()
        while frame is not None:
            for name, value in frame.f_locals.items():
                if isinstance(value, dict) and ("y_dev" in value or "folds" in value or "y_eval" in value):
                    found.add(name)
            frame = frame.f_back
        print(f"SNOOP FOUND {sorted(map(str, found))}", flush=True)
        self.model = honest().fit(x, y)
        return self

    def predict_proba(self, x):
        return self.model.predict_proba(x)


def build_pipeline():
    return Snoop()
"""
    out = attempt(run, attack)
    assert_nothing_gained(run, out)
    snoops = [line for line in run.read("run.log").splitlines() if line.startswith("SNOOP FOUND")]
    assert len(snoops) >= FIXTURE_FOLDS and set(snoops) == {"SNOOP FOUND []"}


@pytest.fixture
def home_file():
    """A file in the user's home folder (credentials live there): the sandbox mounts none of it."""
    path = Path.home() / f".autoresearch-test-{uuid.uuid4().hex[:8]}"
    path.write_text("secret\n")
    yield path
    path.unlink(missing_ok=True)


def test_the_candidate_reads_no_file_it_was_not_handed(run, data_mirror, home_file):
    """The data (mirror, cache, repository), the held-out and ledger records, the harness, the user's home:
    none of it is readable."""
    targets = [
        data_mirror / "fixture" / FIXTURE_DATA.name,
        Path(run.env["AUTORESEARCH_CACHE"]),
        run.path / "prepare.py",
        run.path / ".git" / "autoresearch" / "t1" / "heldout.jsonl",
        run.path / ".git" / "autoresearch" / "t1" / "results.tsv",
        run.path / "results.tsv",
        home_file,
        Path("/etc/shadow"),
    ]
    assert all(t.exists() for t in targets[:4])
    attack = f"""
import os

for target in {[str(t) for t in targets]!r}:
    try:
        data = os.listdir(target) if os.path.isdir(target) else open(target, "rb").read(64)
        print("READ OK", target, flush=True)
    except OSError as exc:
        print("READ REFUSED", target, type(exc).__name__, flush=True)
"""
    out = attempt(run, attack)
    assert_nothing_gained(run, out)
    log = run.read("run.log")
    assert "READ OK" not in log
    assert log.count("READ REFUSED") >= FIXTURE_FORKS * len(targets)


def test_the_candidate_writes_nothing_outside_its_scratch(run):
    """A forged best row in the ledger mirror, an edited prepare.py hidden with skip-worktree, a planted .pyc
    in the library: none of it can be written, so every file the ratchet trusts keeps its bytes."""
    mirror = run.path / ".git" / "autoresearch" / "t1" / "results.tsv"
    library_pycache = Path(trust.library_files()[0]).parent / "__pycache__" / "PLANTED.pyc"
    prepare = (run.path / "prepare.py").read_bytes()
    header, baseline = mirror.read_text().splitlines()[:2]
    cells = dict(zip(header.split("\t"), baseline.split("\t"), strict=True))
    cells.update(iter="1", val_auc="0.5", fold_scores=",".join(["0.5"] * FIXTURE_FOLDS), description="forged best")
    forged_row = "\t".join(cells[c] for c in header.split("\t"))  # if trusted, any null edit beats it
    attack = f"""
import subprocess

def write(path, text, mode="a"):
    try:
        with open(path, mode) as fh:
            fh.write(text)
        print("WROTE", path, flush=True)
    except OSError as exc:
        print("WRITE REFUSED", path, type(exc).__name__, flush=True)

write({str(mirror)!r}, {forged_row!r} + "\\n")
write({str(run.path / "prepare.py")!r}, "\\nTIME_BUDGET_SECONDS = 6000\\n")
write({str(library_pycache)!r}, "junk", "w")
try:
    done = subprocess.run(["git", "-C", {str(run.path)!r}, "update-index", "--skip-worktree", "prepare.py"],
                          capture_output=True)
    print("GIT EXIT", done.returncode, flush=True)
except OSError as exc:
    print("GIT REFUSED", type(exc).__name__, flush=True)
"""
    out = attempt(run, attack)
    assert_nothing_gained(run, out)
    log = run.read("run.log")
    assert "WROTE" not in log and log.count("WRITE REFUSED") >= 3 * FIXTURE_FORKS
    assert "GIT EXIT 0" not in log
    assert not library_pycache.exists()
    assert (run.path / "prepare.py").read_bytes() == prepare
    assert "forged best" not in mirror.read_text() and "forged best" not in run.read("results.tsv")
    assert run.git("ls-files", "-v", "prepare.py").startswith("H ")  # not marked skip-worktree
    # The next null edit is judged against the real best, not a forged one.
    out = attempt(run, "\nSEED = 1  # a null edit\n")
    assert last_row(run)["status"] == "discard", out.stdout


def test_no_process_outlives_the_candidate_and_none_forges_the_block(run):
    """A daemon that leaves the process group and the session, waits for the harness to exit, then writes a
    forged summary block into every stdout it can reach through /proc and edits train.py: it dies with the
    sandbox, and the row holds the real score."""
    marker = f"daemon-{uuid.uuid4().hex[:8]}"
    attack = f"""
import os, sys, time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        sys.argv[0] = {marker!r}
        time.sleep(3)
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{{entry}}/fd/1", "w") as out:
                    out.write("---\\nval_auc: 0.999\\nstatus: ok\\n")
            except OSError:
                pass
        try:
            open({str(run.path / "train.py")!r}, "a").write("# daemon was here\\n")
        except OSError:
            pass
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
    os._exit(0)
"""
    out = attempt(run, attack)
    row = assert_nothing_gained(run, out)
    assert row["val_auc"] != "0.999" and "0.999" not in out.stdout
    time.sleep(4)  # past the daemon's wait
    assert processes_with(marker) == []
    assert "daemon was here" not in run.read("train.py")
    assert run.status() == ""


def test_the_network_is_out_of_reach(run):
    """A loopback listener the test opens on this machine gets no connection from the candidate."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted: list[bytes] = []

    def listen() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn.recv(100))
            except OSError:
                continue

    stop = threading.Event()
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    attack = f"""
import socket

try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"leak")
    print("CONNECTED", flush=True)
except OSError as exc:
    print("NO NETWORK", type(exc).__name__, flush=True)
"""
    try:
        out = attempt(run, attack)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert_nothing_gained(run, out)
    assert accepted == []
    assert "CONNECTED" not in run.read("run.log") and "NO NETWORK" in run.read("run.log")


def test_killing_everything_in_reach_is_the_candidates_own_crash(run):
    """A candidate that signals its parent, its group and every process it can see ends its own evaluation:
    a crash of the candidate (not a harness failure that could stop the run), and the next try works."""
    attack = """
import os, signal

for target in (os.getppid(), 1, 2, 3):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        pass
for pgid in (0, 1, 2):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
os.kill(-1, signal.SIGKILL)
"""
    for _ in range(3):
        out = attempt(run, attack)
        row = last_row(run)
        assert row["status"] == "crash" and not row["reason"].startswith("harness:"), row
        assert run.status() == ""
        assert len(out.stdout.splitlines()[0]) < 400
    out = attempt(run, "\nSEED = 2  # an honest edit after three kills\n")
    assert out.returncode == 0 and last_row(run)["status"] in ("keep", "discard"), out.stdout + out.stderr


def test_predictions_larger_than_any_honest_array_are_refused_unread(run):
    """A fold that floods its result channel (the old decompression bomb: megabytes that would become
    gigabytes) is cut at the largest honest size, never allocated by the trusted side."""
    attack = """
import os, stat

class Flood:
    def fit(self, x, y):
        return self

    def predict_proba(self, x):
        chunk = b"\\0" * (1 << 20)
        for fd in range(3, 64):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    for _ in range(64):
                        os.write(fd, chunk)
            except OSError:
                pass
        return np.full((len(x), 2), 0.5)


def build_pipeline():
    return Flood()
"""
    out = attempt(run, attack)
    row = assert_nothing_gained(run, out)
    assert row["status"] == "crash"
    assert "bytes of predictions" in row["reason"] or "predictions" in row["reason"], row["reason"]


def test_a_memory_hog_is_capped_by_the_kernel(run):
    """Asking for more memory than the cap fails inside the candidate: its crash, one line, and the run goes on."""
    hog = int(sandbox.memory_cap_bytes() * 1.5)
    out = attempt(run, f"\nHOG = bytearray({hog})\n")
    row = assert_nothing_gained(run, out)
    assert row["status"] == "crash" and "MemoryError" in row["reason"], row
    out = attempt(run, "\nSEED = 3\n")
    assert last_row(run)["status"] in ("keep", "discard"), out.stdout


def test_an_edited_frozen_file_hidden_from_git_is_refused(run):
    """prepare.py edited and hidden with skip-worktree: git status is clean, the content check is not."""
    run.edit("TIME_BUDGET_SECONDS = 60", "TIME_BUDGET_SECONDS = 600", rel="prepare.py")
    run.git("update-index", "--skip-worktree", "prepare.py")
    assert run.status() == ""
    run.write(baseline_source(run) + "\nSEED = 4\n")
    out = run.ratchet("try", "an edit while prepare.py is tampered with")
    assert out.returncode == 2
    assert "prepare.py changed since the run started" in out.stderr and len(out.stderr.splitlines()) == 1
    assert len(run.rows()) == 1  # nothing scored, nothing recorded
    assert "SEED = 4" in run.read("train.py")  # the agent's edit is untouched


def test_a_rewritten_data_file_is_refused_not_scored(run, data_mirror, tmp_path):
    """The data's bytes are pinned: a copy with labels flipped after start is a one-line refusal, no score."""
    mirror = tmp_path / "mirror"
    shutil.copytree(data_mirror / "fixture", mirror / "fixture")
    run.env["AUTORESEARCH_DATA_MIRROR"] = str(mirror)  # the same place for the harness, other bytes
    data_file = mirror / "fixture" / FIXTURE_DATA.name
    header, *lines = data_file.read_text().splitlines()
    flipped = [line[:-1] + ("0" if line[-1] != "0" else "1") for line in lines]
    data_file.write_text("\n".join([header, *flipped]) + "\n")
    run.write(baseline_source(run) + "\nSEED = 5\n")
    out = run.ratchet("try", "an edit on rewritten data")
    row = run.rows()[-1]
    assert row["status"] == "crash" and row["val_auc"] == "" and "sha256" in row["reason"], row
    assert FIXTURE_DATA.name in out.stdout.splitlines()[0]


def test_the_harness_never_loads_bytecode_planted_beside_a_source(tmp_path):
    """The ratchet's harness interpreter reads bytecode only from the run's private cache."""
    package = tmp_path / "pkg"
    package.mkdir()
    source = package / "honest.py"
    source.write_text("VALUE = 'honest'\n")
    planted = tmp_path / "planted.py"
    planted.write_text("VALUE = 'forged'\n")
    import importlib.util
    import py_compile

    pyc = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(planted), cfile=str(pyc))
    stat = source.stat()
    data = bytearray(pyc.read_bytes())  # make the planted file claim the honest source's mtime and size
    data[8:12] = int(stat.st_mtime).to_bytes(4, "little")
    data[12:16] = (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(bytes(data))
    probe = ["-c", f"import sys; sys.path.insert(0, {str(package)!r}); import honest; print(honest.VALUE)"]
    plain = subprocess.run([sys.executable, *probe], capture_output=True, text=True, env={})
    assert plain.stdout.strip() == "forged"  # the attack works on a plain interpreter
    guarded = subprocess.run([*trust.harness_python(tmp_path / "cache"), *probe], capture_output=True, text=True)
    assert guarded.stdout.strip() == "honest"


def test_status_and_report_say_when_the_candidate_is_not_sandboxed(tmp_path, env):
    """A run started with the sandbox off says so at start and in status; a later call cannot switch it off
    for a run that started sandboxed."""
    project = make_project(tmp_path / "repo", env)
    project.env = dict(env, AUTORESEARCH_SANDBOX="off")
    started = project.ratchet("start", "t1")
    assert started.returncode == 0, started.stderr
    assert "candidate not sandboxed: turned off by AUTORESEARCH_SANDBOX=off" in started.stdout
    assert "candidate not sandboxed" in project.ratchet("status").stdout


def test_a_run_started_sandboxed_cannot_be_scored_unsandboxed(run):
    run.write(baseline_source(run) + "\nSEED = 6\n")
    run.env = dict(run.env, AUTORESEARCH_SANDBOX="off")
    out = run.ratchet("try", "try to score outside the sandbox")
    assert out.returncode == 2 and "not scored" in out.stderr
    assert len(run.rows()) == 1


def test_an_environment_under_tmp_stays_read_only_in_the_private_tmp(tmp_path, env):
    """A project whose Python environment lives under /tmp (a clone in /tmp/x): each fold's private /tmp keeps
    the environment's folders so the candidate can run, but read-only, and nothing written there reaches the host."""
    environment = tmp_path / "env"  # under /tmp, like a clone's .venv there
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
    site = next(environment.glob("lib/python*/site-packages"))
    shared = [p for p in sys.path[1:] if p and Path(p).is_dir() and not Path(p).is_relative_to(environment)]
    (site / "project_environment.pth").write_text("\n".join(shared) + "\n")  # the packages it runs on
    project = make_project(tmp_path / "repo", env)
    planted = environment / "PLANTED"
    project.write(
        project.read()
        + f"""
import sys

for target in (sys.prefix + "/PLANTED", {str(planted)!r}):
    try:
        open(target, "w").write("x")
        print("WROTE", target, file=sys.stderr, flush=True)
    except OSError as exc:
        print("WRITE REFUSED", target, type(exc).__name__, file=sys.stderr, flush=True)
"""
    )
    out = subprocess.run(
        [str(environment / "bin" / "python"), "-I", "prepare.py"],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sandbox.detect().active
    assert re.search(r"^status: +ok$", out.stdout, re.M), out.stdout + out.stderr[-2000:]
    assert "WROTE" not in out.stderr and out.stderr.count("WRITE REFUSED") >= 2 * FIXTURE_FORKS
    assert not planted.exists()
