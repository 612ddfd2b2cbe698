"""Waves on the local executor, end to end: the real CLI, the real scorer, the real harness on the fixture task.

A run with 2 workers and a short budget (so that a hang is caught in seconds) is started once for the module and
copied for each test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RATCHET, Project, copy_run, started_project
from test_faults import BUDGET, processes_with, sleeper_edit
from test_ratchet import BETTER_EDIT, ONE_FEATURE, SEED_EDIT

pytestmark = pytest.mark.slow
CRASH_EDIT = ("def build_pipeline():", "raise RuntimeError('boom')\n\n\ndef build_pipeline():")
GPU_PROBE = (
    "def build_pipeline():",
    "import os as _os\nimport sys as _sys\n\n"
    "print('CUDA_VISIBLE_DEVICES=' + _os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), file=_sys.stderr)\n\n\n"
    "def build_pipeline():",
)


def weak_short(project: Project) -> None:
    """A weak baseline (age alone), so a real gain exists; a short budget, so a hang ends in seconds."""
    project.edit(*ONE_FEATURE)
    project.edit("TIME_BUDGET_SECONDS = 60", f"TIME_BUDGET_SECONDS = {BUDGET}", rel="prepare.py")
    project.git("commit", "-qam", "weak baseline, short budget")


@pytest.fixture(scope="module")
def started_wave(tmp_path_factory, data_mirror) -> Project:
    return started_project(tmp_path_factory.mktemp("wave"), data_mirror, "t1", "--workers", "2", setup=weak_short)


@pytest.fixture
def wave_run(started_wave, tmp_path) -> Project:
    return copy_run(started_wave, tmp_path / "repo")


def submit(project: Project, edit: tuple[str, str], hypothesis: str) -> str:
    project.edit(*edit)
    out = project.ratchet("submit", hypothesis)
    assert out.returncode == 0, out.stderr
    assert project.status() == "", "submit puts train.py back to the best"
    return out.stdout


def run_folder(project: Project) -> Path:
    return project.path / ".git" / "autoresearch" / "t1"


def scorer_pids(project: Project) -> list[int]:
    """The run's scorer processes (`python -m autoresearch.scorer ROOT TAG`)."""
    wanted = ["autoresearch.scorer", str(project.path)]
    found = []
    for pid in processes_with("autoresearch.scorer"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if argv[2:4] == wanted:
            found.append(pid)
    return found


def scorer_gone(project: Project) -> None:
    """The scorer exits on its own once idle; the tests stop it at once (it holds no state a test needs)."""
    for pid in scorer_pids(project):
        os.kill(pid, signal.SIGKILL)


def test_a_wave_of_four_on_two_workers_keeps_only_the_confirmed_gain(wave_run):
    project = wave_run
    assert json.loads((run_folder(project) / "run.json").read_text())["extra"]["workers"] == 2
    marker = f"wave-hang-{os.getpid()}"
    lines = [
        submit(project, BETTER_EDIT, "all features"),
        submit(project, SEED_EDIT, "a no-op"),
        submit(project, CRASH_EDIT, "raises"),
        submit(project, sleeper_edit(marker, 3600), "hangs"),
    ]
    assert lines[0].startswith("queued iter 1 (wave 1;") and lines[3].startswith("queued iter 4 (wave 1;")
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0, out.stderr
    shown = out.stdout.strip().splitlines()
    assert [s.split(" | ")[0] for s in shown[:4]] == ["iter 1", "iter 2", "iter 3", "iter 4"], out.stdout
    assert "KEPT" in shown[0] and "confirmed on fresh folds (seed 1001" in project.git("log", "-1", "--format=%B")
    assert "CRASH" in shown[2] and "boom" in shown[2]
    assert "CRASH" in shown[3]
    assert shown[4].startswith("wave 1 | 4 candidates on 2 workers in ") and shown[4].endswith("kept iter 1")
    rows = project.rows()
    assert [r["iter"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["status"] for r in rows[1:]] == ["keep", "discard", "crash", "crash"]
    assert [r["wave"] for r in rows] == ["", "1", "1", "1", "1"]
    assert {r["worker"] for r in rows[1:]} == {"local:0", "local:1"} and rows[0]["worker"] == ""
    refs = project.git("for-each-ref", "--format=%(refname) %(objecttype)", "refs/autoresearch/t1/").splitlines()
    assert refs == [f"refs/autoresearch/t1/{n:04d} tag" for n in range(5)]
    assert project.git("rev-parse", "HEAD") == project.git("rev-parse", "refs/autoresearch/t1/0001^{commit}")
    assert project.status() == "" and "return df\n" in project.read()
    assert not processes_with(marker), "the hang's grandchild is killed with its group"
    folder = run_folder(project)
    assert not list((folder / "queue").glob("*")) and not list((folder / "jobs").glob("*"))
    wave = [json.loads(x) for x in (folder / "waves.jsonl").read_text().splitlines()]
    assert wave[0]["iters"] == [1, 2, 3, 4] and wave[0]["kept"] == 1 and wave[0]["confirm_seed"] == 1001
    assert set(wave[0]["busy_seconds"]) == {"local:0", "local:1"}
    heldout = [json.loads(x)["iter"] for x in (folder / "heldout.jsonl").read_text().splitlines()]
    assert {1, 2} <= set(heldout)
    # The next wave is judged against the new best.
    submit(project, SEED_EDIT, "a no-op on the new best")
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("iter 5 |") and "DISCARDED" in out.stdout
    assert "wave 2 | 1 candidate on 2 workers" in out.stdout and "nothing kept" in out.stdout
    scorer_gone(project)


def test_submit_refuses_a_dirty_tree_no_edit_and_outside_a_run(started_wave, wave_run, tmp_path):
    project = wave_run
    assert "workers: 2 (local): waves with submit and wait" in started_wave.start_output
    assert "workers: 2 (local): write waves with submit and wait" in project.ratchet("status").stdout
    out = project.ratchet("submit", "nothing changed")
    assert out.returncode == 2 and "the same as the best commit" in out.stderr
    (project.path / "notes.txt").write_text("a person's notes\n")
    project.edit(*SEED_EDIT)
    out = project.ratchet("submit", "with a stray file")
    assert out.returncode == 2 and out.stderr.startswith("error: only train.py may change")
    assert (project.path / "notes.txt").read_text() == "a person's notes\n" and SEED_EDIT[1] in project.read()
    (project.path / "notes.txt").unlink()
    project.git("checkout", "-q", "main")
    out = project.ratchet("submit", "outside a run")
    assert out.returncode == 2 and "not on an autoresearch run branch" in out.stderr
    assert SEED_EDIT[1] in project.read(), "the person's edit is untouched"
    out = project.ratchet("wait")
    assert out.returncode == 2 and "not on an autoresearch run branch" in out.stderr
    project.git("checkout", "-q", "-f", "autoresearch/t1")
    out = project.ratchet("wait")
    assert out.returncode == 2 and "nothing is queued" in out.stderr


def test_try_waits_for_a_queued_wave(wave_run):
    project = wave_run
    submit(project, SEED_EDIT, "a no-op")
    project.edit("C = 1.0", "C = 0.5")
    out = project.ratchet("try", "sequential meanwhile")
    assert out.returncode == 2 and "`wait` for it before `try`" in out.stderr
    project.git("checkout", "-q", "train.py")
    assert project.ratchet("wait", timeout=600).returncode == 0
    scorer_gone(project)


def test_a_scorer_killed_mid_wave_is_recovered(wave_run):
    """SIGKILL the scorer while it scores: the finished candidate gets its row, the two running ones are recorded
    as interrupted and their processes killed, the one waiting for a slot is scored by a new scorer."""
    project = wave_run
    folder = run_folder(project)
    markers = [f"wave-kill-{os.getpid()}-{k}" for k in (2, 3)]
    submit(project, SEED_EDIT, "a no-op")
    wait_until(lambda: (folder / "jobs" / "0001.result.json").exists(), "the first candidate was not scored")
    submit(project, sleeper_edit(markers[0], 3600), "hangs, and its scorer dies")
    submit(project, sleeper_edit(markers[1], 3600), "hangs too")
    submit(project, ("C = 1.0", "C = 0.5"), "waits for a slot")
    wait_until(lambda: all(processes_with(m) for m in markers), "the two sleepers did not start")
    scorers = scorer_pids(project)
    assert len(scorers) == 1 and (folder / "jobs" / "0004.json").exists()
    assert not (folder / "jobs" / "0004.running").exists(), "no slot was free for the fourth"
    capped = subprocess.run(  # a wait that would outlast the agent's shell returns with a line instead
        [
            sys.executable,
            "-c",
            "import sys; from autoresearch import waves; from autoresearch.gitops import Repo; "
            "print(waves.wait(Repo('.'), max_seconds=1))",
        ],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert capped.stdout.startswith("wave 1 | still scoring: 1 of 4 done, 2 running; run wait again"), capped
    os.kill(scorers[0], signal.SIGKILL)
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "died while it scored 0002, 0003" in out.stdout
    statuses = {r["iter"]: r["status"] for r in project.rows()}
    assert statuses["2"] == statuses["3"] == "interrupted", out.stdout
    assert statuses["1"] in ("discard", "keep") and statuses["4"] in ("discard", "keep"), out.stdout
    assert not any(processes_with(m) for m in markers), "the dead scorer's candidates and grandchildren are gone"
    assert project.status() == "" and not list((folder / "queue").glob("*"))
    refs = project.git("for-each-ref", "--format=%(objecttype)", "refs/autoresearch/t1/").split()
    assert refs == ["tag"] * 5, "every candidate's ref holds its row"
    scorer_gone(project)


def wait_until(condition, failure: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(failure)
        time.sleep(0.1)


def test_a_wait_killed_after_judging_is_finished_by_the_next_call(wave_run):
    project = wave_run
    submit(project, SEED_EDIT, "a no-op")
    folder = run_folder(project)
    proc = subprocess.Popen(
        [sys.executable, str(RATCHET), "wait"], cwd=project.path, env=project.env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (folder / "wave.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    out = project.ratchet("status")
    assert out.returncode == 0, out.stderr
    rows = project.rows()
    assert [r["iter"] for r in rows] == ["0", "1"] and rows[1]["status"] in ("discard", "keep")
    assert not (folder / "wave.json").exists() and project.status() == ""
    scorer_gone(project)


def test_each_slot_sees_its_own_gpu(tmp_path, data_mirror):
    """With 2 declared GPUs, slot K's candidate sees CUDA_VISIBLE_DEVICES=K, and no other."""
    env_gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}
    project = started_project(tmp_path, data_mirror, "t1", "--workers", "2", setup=weak_short, extra_env=env_gpus)
    config = json.loads((run_folder(project) / "run.json").read_text())
    assert config["extra"]["gpus"] == ["0", "1"] and config["extra"]["workers"] == 2
    submit(project, GPU_PROBE, "print the GPU")
    submit(project, (GPU_PROBE[0], GPU_PROBE[1].replace("print('CUDA", "print('again CUDA")), "print it again")
    assert project.ratchet("wait", timeout=600).returncode == 0
    rows = project.rows()
    seen = {}
    for row in rows[1:]:
        log = (run_folder(project) / "logs" / f"{int(row['iter']):04d}.log").read_text()
        seen[row["iter"]] = next(x.split("=", 1)[1] for x in log.splitlines() if "CUDA_VISIBLE_DEVICES=" in x)
    assert sorted(seen.values()) == ["0", "1"] or len(set(seen.values())) == 1  # one slot may have taken both
    workers = {r["iter"]: r.get("worker") for r in rows[1:]}
    for n, gpu in seen.items():
        assert workers[n] == f"local:{gpu}"
    scorer_gone(project)
