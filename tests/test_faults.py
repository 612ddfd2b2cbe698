"""Faults made to happen for real: hangs, floods, garbage output, a killed ratchet, two ratchets at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from autoresearch import summary, tabular
from conftest import RATCHET, Project, copy_run, started_project

pytestmark = pytest.mark.slow
# The test run's frozen budget (CPU seconds of the candidate's sandbox), short so that a runaway is caught quickly:
# the fixture's honest baseline uses 3-4 CPU-s (imports included), beside busy processes too.
BUDGET = 10
WALL_CAP = BUDGET * tabular.WALL_CAP_FACTOR  # where a candidate that sleeps or hangs is killed


def short_budget(project) -> None:
    """Set before the first commit, as a task author would."""
    project.edit("TIME_BUDGET_SECONDS = 60", f"TIME_BUDGET_SECONDS = {BUDGET}", rel="prepare.py")
    project.git("commit", "-qam", "short budget for tests")


@pytest.fixture(scope="module")
def started_short(tmp_path_factory, data_mirror) -> Project:
    """A run on the fixture task with the short budget, started once for the module."""
    return started_project(tmp_path_factory.mktemp("short"), data_mirror, "t1", setup=short_budget)


@pytest.fixture
def short(started_short, tmp_path) -> Project:
    return copy_run(started_short, tmp_path / "repo")


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def sleeper_edit(marker: str, seconds: int) -> tuple[str, str]:
    """An edit whose model starts a long-lived grandchild and then sleeps: the worst kind of hang."""
    return (
        "def build_pipeline():",
        f"""import subprocess as _sp
import sys as _sys
import time as _time

_sp.Popen([_sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
_time.sleep({seconds})


def build_pipeline():""",
    )


def try_in_background(project, hypothesis: str) -> subprocess.Popen:
    """A `ratchet.py try` that runs while the test goes on (to kill it, race it, or edit under it)."""
    return subprocess.Popen(
        [sys.executable, str(RATCHET), "try", hypothesis],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def state_file(project) -> Path:
    return project.path / ".git" / "autoresearch" / "t1" / "state.json"


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def test_hang_past_the_wall_cap_kills_the_whole_group(short):
    """A candidate that sleeps uses no CPU: the wall-clock cap (a multiple of the budget) is what ends it."""
    marker = f"autoresearch-test-{uuid.uuid4()}"
    short.edit(*sleeper_edit(marker, 3600))
    started = time.monotonic()
    out = short.ratchet("try", "sleep forever")
    assert "CRASH" in out.stdout and f"ran past the {WALL_CAP:g} s wall cap" in out.stdout, out.stdout
    assert WALL_CAP <= time.monotonic() - started < WALL_CAP + 30
    assert processes_with(marker) == []  # the grandchild went with its group
    row = short.rows()[-1]
    assert row["status"] == "crash" and "wall cap" in row["reason"] and "CPU-s budget" in row["reason"]
    assert short.status() == "" and "time.sleep" not in short.read()


@contextlib.contextmanager
def two_busy_processes_beside_the_test():
    """Two CPU-bound processes on one core, and the test (so the ratchet, its harness and the candidate) pinned
    to the same core: the candidate gets about a third of it, whatever else the machine runs."""
    mask, core = os.sched_getaffinity(0), min(os.sched_getaffinity(0))
    busy = [subprocess.Popen(["python3", "-c", "while True: pass"]) for _ in range(2)]
    try:
        for process in busy:
            os.sched_setaffinity(process.pid, {core})
        os.sched_setaffinity(0, {core})
        yield
    finally:
        os.sched_setaffinity(0, mask)
        for process in busy:
            process.kill()
            process.wait()


def cpu_work_edit(seconds_per_fold: float) -> tuple[str, str]:
    """An honest model that computes for `seconds_per_fold` of CPU in each fold process (at import)."""
    return (
        "def build_pipeline():",
        f"""import time as _time

_started = _time.process_time()
while _time.process_time() - _started < {seconds_per_fold}:
    pass


def build_pipeline():""",
    )


def last_block(project) -> dict[str, str]:
    """The summary block the harness printed last (run.log ends with it)."""
    return summary.parse_block((project.path / "run.log").read_text(errors="replace"))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins processes to a core (Linux)")
def test_an_honest_candidate_under_cpu_load_is_not_a_timeout(short):
    """~7 CPU-s of a 10 CPU-s budget, on a third of a core: its wall time passes the budget, it still scores."""
    short.edit(*cpu_work_edit(0.6))  # 5 fold processes: 3 CPU-s, and the zygote's imports
    with two_busy_processes_beside_the_test():
        out = short.ratchet("try", "honest work on a busy machine")
    block = last_block(short)
    assert block["status"] == "ok", out.stdout
    assert float(block["train_seconds"]) > BUDGET > float(block["train_cpu_seconds"]) > 4, block
    assert short.rows()[-1]["status"] in ("keep", "discard"), out.stdout


def test_a_candidate_past_its_cpu_budget_is_a_timeout_that_says_cpu(short):
    short.edit(*cpu_work_edit(3600))
    started = time.monotonic()
    out = short.ratchet("try", "compute forever")
    assert "CRASH" in out.stdout and f"ran past the {BUDGET:g} CPU-s budget" in out.stdout, out.stdout
    assert time.monotonic() - started < WALL_CAP  # killed by the CPU count, not by the wall cap
    block = last_block(short)
    assert block["status"] == "timeout" and BUDGET <= float(block["train_cpu_seconds"]) < BUDGET + 3, block


def test_cpu_burners_a_fold_leaves_behind_are_counted(short):
    """A fold starts CPU burners in sessions of their own, detached from it (their parent exits at once), then
    sleeps: the fold itself uses no CPU, the burners do, and the count still reaches the budget."""
    marker = f"autoresearch-test-{uuid.uuid4()}"
    short.edit(
        "def build_pipeline():",
        f"""import os as _os
import time as _time

for _ in range(2):
    if _os.fork() == 0:
        _os.setsid()
        if _os.fork() == 0:
            _os.execv("/bin/sh", ["sh", "-c", "while :; do :; done", "{marker}"])
        _os._exit(0)
    _os.wait()
_time.sleep(3600)


def build_pipeline():""",
    )
    started = time.monotonic()
    out = short.ratchet("try", "hide CPU in orphans")
    assert "CRASH" in out.stdout and f"ran past the {BUDGET:g} CPU-s budget" in out.stdout, out.stdout
    assert time.monotonic() - started < WALL_CAP
    assert float(last_block(short)["train_cpu_seconds"]) >= BUDGET
    assert processes_with(marker) == []  # the burners went with the sandbox


def test_flood_of_output_is_capped(short):
    short.edit(
        "def build_pipeline():",
        """import sys as _sys

for _ in range(400):
    _sys.stdout.write("x" * 100_000 + "\\n")


def build_pipeline():""",
    )
    out = short.ratchet("try", "flood the log")
    assert out.returncode == 0 and "DISCARDED" in out.stdout or "KEPT" in out.stdout, out.stdout
    log = short.path / "run.log"
    assert log.stat().st_size < 3_000_000  # 40 MB written, a few MB kept
    assert "bytes of output cut" in log.read_text(errors="replace")
    assert len(short.rows()) == 2


def test_non_utf8_output(short):
    short.edit(
        "def build_pipeline():",
        """import sys as _sys

_sys.stdout.buffer.write(b"\\xff\\xfe\\xfa bad bytes \\x80\\n")
_sys.stdout.flush()
raise ValueError("after garbage \\udcff")


def build_pipeline():""",
    )
    out = short.ratchet("try", "garbage output")
    assert out.returncode == 0, out.stderr
    assert "CRASH" in out.stdout and "ValueError" in out.stdout
    assert short.rows()[-1]["status"] == "crash"


def test_ratchet_killed_mid_iteration_is_recovered(short):
    marker = f"autoresearch-test-{uuid.uuid4()}"
    best = short.read()
    short.edit(*sleeper_edit(marker, BUDGET - 5))
    ratchet = try_in_background(short, "killed mid-way")
    state = state_file(short)
    wait_for(lambda: state.exists() and "harness_pgid" in state.read_text())
    wait_for(lambda: processes_with(marker) != [])
    ratchet.send_signal(signal.SIGKILL)
    ratchet.wait()
    assert short.rows()[-1]["iter"] == "0"  # nothing recorded yet

    out = short.ratchet("status")
    assert out.returncode == 0, out.stderr
    assert "recovered iter 1 (interrupted)" in out.stdout
    assert processes_with(marker) == []  # the orphaned harness and candidate were killed
    rows = short.rows()
    assert [(r["iter"], r["status"]) for r in rows] == [("0", "keep"), ("1", "interrupted")]
    assert short.read() == best and short.status() == ""
    assert "killed mid-way" in short.git("log", "-1", "--format=%s", "refs/autoresearch/t1/0001")
    assert short.git("rev-parse", "HEAD") == short.git("rev-parse", "refs/autoresearch/t1/0000^{commit}")
    assert not state.exists()
    assert short.ratchet("status").stdout.count("recovered") == 0  # once only


def test_two_ratchets_at_once(short):
    short.edit(*sleeper_edit(f"autoresearch-test-{uuid.uuid4()}", 1))  # in each of the 5 fold processes
    first = try_in_background(short, "first")
    state = state_file(short)
    wait_for(state.exists)
    second = short.ratchet("try", "second")
    assert second.returncode == 2
    assert "another ratchet is running in this checkout" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    status = short.ratchet("status")  # reading never waits for the lock
    assert status.returncode == 0 and "in flight" in status.stdout
    out, _ = first.communicate(timeout=120)
    assert out.startswith("iter 1 |")
    assert [r["iter"] for r in short.rows()] == ["0", "1"]


def test_harness_failures_are_marked_and_stop_the_run(short, tmp_path):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    short.env["AUTORESEARCH_DATA_MIRROR"] = str(empty)
    for i in range(3):
        short.edit("C = 1.0", f"C = 0.{i + 5}")
        out = short.ratchet("try", f"attempt {i}")
        assert "CRASH (harness:" in out.stdout, out.stdout
        assert f"{short.rows()[-1]['iter']}" == str(i + 1)
        short.write(short.read().replace(f"C = 0.{i + 5}", "C = 1.0"))
    assert all(r["reason"].startswith("harness:") for r in short.rows()[1:])
    status = json.loads(short.ratchet("status", "--json").stdout)
    assert "harness failed 3 times" in status["stop_reason"]
    short.edit("C = 1.0", "C = 0.4")
    refused = short.ratchet("try", "a fourth")  # try checks this stop too
    assert refused.returncode == 2 and "the run is over: the harness failed 3 times" in refused.stderr
    assert len(short.rows()) == 4


def test_edit_after_a_killed_iteration_is_not_overwritten(short):
    marker = f"autoresearch-test-{uuid.uuid4()}"
    short.edit(*sleeper_edit(marker, BUDGET - 5))
    ratchet = try_in_background(short, "killed mid-way")
    wait_for(lambda: processes_with(marker) != [])
    ratchet.send_signal(signal.SIGKILL)
    ratchet.wait()
    short.write(short.read().replace("C = 1.0", "C = 0.25"))  # the agent's next idea, before anyone recovers
    next_idea = short.read()
    out = short.ratchet("status")
    assert "recovered iter 1 (interrupted)" in out.stdout and "left in place" in out.stdout, out.stdout
    assert short.read() == next_idea  # not reset to the best
    assert short.git("rev-parse", "HEAD") == short.git("rev-parse", "refs/autoresearch/t1/0000^{commit}")
    assert short.status() == "M train.py"
    assert processes_with(marker) == []


def test_edit_while_scoring_is_not_recorded_as_scored(short):
    short.edit(*sleeper_edit(f"autoresearch-test-{uuid.uuid4()}", 1))  # in each of the 5 fold processes
    running = try_in_background(short, "slow one")
    state = state_file(short)
    wait_for(lambda: state.exists() and "harness_pgid" in state.read_text())
    short.write(short.read().replace("C = 1.0", "C = 0.25"))
    edited = short.read()
    out, _ = running.communicate(timeout=180)
    assert "CRASH (train.py was edited while it was being scored" in out, out
    assert "your edit is left in place" in out
    assert short.read() == edited
    assert short.rows()[-1]["status"] == "crash"


def test_a_forged_block_from_a_killed_harness_is_not_trusted(short):
    short.edit(
        "def build_pipeline():",
        """import os as _os

_fd = _os.open(f"/proc/{_os.getppid()}/fd/1", _os.O_WRONLY)
_os.write(_fd, b"---\\nval_auc: 0.999\\nstatus: ok\\nmetric: val_auc\\nfold_scores: ")
_os.write(_fd, b",".join([b"0.999"] * 25) + b"\\n")
_os.kill(_os.getppid(), 9)


def build_pipeline():""",
    )
    out = short.ratchet("try", "forge the block")
    assert "CRASH" in out.stdout and "0.999" not in out.stdout.split("|")[1], out.stdout
    row = short.rows()[-1]
    assert row["status"] == "crash" and row["val_auc"] == ""


BURNERS_THEN_SLEEP = """import os as _os
import time as _time

for _ in range(2):
    if _os.fork() == 0:
        _os.setsid()
        if _os.fork() == 0:
            _os.execv("/bin/sh", ["sh", "-c", "while :; do :; done", "{marker}"])
        _os._exit(0)
    _os.wait()
_time.sleep(3600)
"""


def test_unsandboxed_the_cpu_budget_still_holds(project):
    """AUTORESEARCH_SANDBOX=off: no bubblewrap, and the fold's burners leave its session; the supervisor still
    counts them and kills them at the budget."""
    marker = f"autoresearch-test-{uuid.uuid4()}"
    project.edit("TIME_BUDGET_SECONDS = 60", f"TIME_BUDGET_SECONDS = {BUDGET}", rel="prepare.py")
    project.edit("def build_pipeline():", BURNERS_THEN_SLEEP.format(marker=marker) + "\n\ndef build_pipeline():")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "prepare.py"],
        cwd=project.path,
        env={**project.env, "AUTORESEARCH_SANDBOX": "off"},
        capture_output=True,
        text=True,
        timeout=WALL_CAP + 60,
    )
    block = summary.parse_block(done.stdout)
    assert block.get("status") == "timeout", done.stdout + done.stderr[-2000:]
    assert f"ran past the {BUDGET:g} CPU-s budget" in block["error"] and float(block["train_cpu_seconds"]) >= BUDGET
    assert time.monotonic() - started < WALL_CAP
    assert processes_with(marker) == []


SUPERVISE_WITHOUT_NAMESPACES = """import sys
from autoresearch import sandbox, supervise
sandbox.isolate_fold = lambda pid=True: False  # as on a kernel that refuses user namespaces
sys.exit(supervise.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("budget, counted_at_least", [(3.0, 3.0), (30.0, 0.5)])
def test_without_namespaces_the_supervisor_holds_the_orphans(tmp_path, budget, counted_at_least):
    """Where no PID namespace can hold what the candidate starts, the supervisor is its subreaper: the burners a
    candidate detaches (their parent exits) are counted, killed past the budget, and killed when it ends."""
    marker = f"autoresearch-test-{uuid.uuid4()}"
    candidate = tmp_path / "candidate.py"
    seconds = 3600 if budget < 10 else 1.5  # past the budget; or within it, ending with its burners alive
    candidate.write_text(BURNERS_THEN_SLEEP.format(marker=marker).replace("3600", str(seconds)))
    wrapper = tmp_path / "supervise_without_namespaces.py"
    wrapper.write_text(SUPERVISE_WITHOUT_NAMESPACES)
    report_read, report_write = os.pipe()
    command = [sys.executable, str(wrapper), str(report_write), "--cpu-budget", str(budget), "--"]
    started = time.monotonic()
    subprocess.run([*command, sys.executable, str(candidate)], pass_fds=(report_write,), timeout=120, check=True)
    os.close(report_write)
    with os.fdopen(report_read, "rb") as channel:
        report = json.loads(channel.read())
    assert report["cpu_budget_exceeded"] == (budget < 10), report
    assert report["cpu_seconds"] >= counted_at_least and time.monotonic() - started < 30, report
    assert processes_with(marker) == []
