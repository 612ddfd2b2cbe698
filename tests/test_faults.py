"""Faults made to happen for real: hangs, floods, garbage output, a killed ratchet, two ratchets at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import RATCHET, Project, copy_run, started_project

pytestmark = pytest.mark.slow
# The test run's frozen budget (wall seconds), short so that a hang is caught quickly: the fixture's honest
# baseline scores in 1-3 s, beside two CPU-bound processes too, a tenth of it or less.
BUDGET = 20


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


def test_hang_past_budget_kills_the_whole_group(short):
    marker = f"autoresearch-test-{uuid.uuid4()}"
    short.edit(*sleeper_edit(marker, 3600))
    started = time.monotonic()
    out = short.ratchet("try", "sleep forever")
    assert "CRASH" in out.stdout and "budget" in out.stdout, out.stdout
    assert time.monotonic() - started < BUDGET + 30
    assert processes_with(marker) == []  # the grandchild went with its group
    row = short.rows()[-1]
    assert row["status"] == "crash" and "budget" in row["reason"]
    assert short.status() == "" and "time.sleep" not in short.read()


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
