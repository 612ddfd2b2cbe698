"""Waves under attack and under faults (issue 10's review): what a killed `submit` leaves behind, and a candidate
whose bytes are not UTF-8. The real CLI, the real scorer and harness on the fixture task (test_waves' run)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import test_waves
from autoresearch import scorer
from autoresearch.runs import read_json, write_json
from conftest import RATCHET
from test_faults import processes_with, sleeper_edit
from test_ratchet import BETTER_EDIT, SEED_EDIT
from test_waves import run_folder, scorer_gone, submit

started_wave, wave_run = test_waves.started_wave, test_waves.wave_run  # its run (started once), copied per test


def in_run(project, code: str) -> subprocess.CompletedProcess:
    """`code` in the project's environment, at its root (the library imported as the CLI imports it)."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=project.path, env=project.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_a_job_left_by_a_submit_killed_before_its_queue_record_never_scores_the_next_candidate(wave_run):
    """A submit killed after queueing its scoring and before writing its queue record (or its ref) leaves a job
    for iteration N that nobody will judge; the scorer scores it anyway. The next submit takes the same N: its
    candidate must be scored itself, never inherit the dead one's result (here a real gain, so a no-op would be
    kept on another edit's scores)."""
    project = wave_run
    folder = run_folder(project)
    better = project.read().replace(*BETTER_EDIT)
    in_run(  # the state such a kill leaves: the job of iter 1 queued (and then scored), no queue record, no ref
        project,
        "from autoresearch import scorer; from autoresearch.executors import Job; "
        "from autoresearch.gitops import Repo; from autoresearch.runs import run_dir; "
        f"repo = Repo('.'); scorer.enqueue(run_dir(repo, 't1'), Job('0001', {better!r})); "
        "scorer.ensure_running(repo, 't1')",
    )
    deadline = time.monotonic() + 300
    while not (folder / "jobs" / "0001.result.json").exists():
        assert time.monotonic() < deadline, "the orphan job was not scored"
        time.sleep(0.1)
    assert submit(project, SEED_EDIT, "a no-op").startswith("queued iter 1 (wave 1;")
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "wave 1 | 1 candidate" in out.stdout and "nothing kept" in out.stdout, out.stdout
    rows = project.rows()
    assert rows[1]["status"] == "discard" and rows[1]["val_auc"] == rows[0]["val_auc"], rows
    scorer_gone(project)


LATIN_CHECK = (
    "def build_pipeline():",
    # Under the latin-1 declaration the byte \xe9 is one character; scored from another encoding of the file it
    # is not: then the candidate crashes, and what was scored is not what the branch would keep.
    'if len("\xe9") != 1:\n    raise RuntimeError("the scored bytes are not the committed bytes")\n\n\n'
    "def build_pipeline():",
)


@pytest.mark.slow
def test_a_latin1_candidate_is_scored_as_committed_and_can_be_kept(wave_run):
    """A train.py in latin-1 (a coding declaration, a byte that is not UTF-8) is a valid Python file, and `try`
    scores its bytes. A wave must score the same bytes its commit holds (screen and confirm), or it keeps a commit
    whose code was never scored."""
    project = wave_run
    source = project.read().replace(*BETTER_EDIT).replace(*LATIN_CHECK)
    (project.path / "train.py").write_bytes(b"# -*- coding: latin-1 -*-\n" + source.encode("latin-1"))
    out = project.ratchet("submit", "all features, in latin-1")
    assert out.returncode == 0, out.stderr
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("iter 1 |") and "KEPT" in first, out.stdout
    assert (project.path / "train.py").read_bytes().startswith(b"# -*- coding: latin-1 -*-\n")
    assert b'len("\xe9")' in (project.path / "train.py").read_bytes()
    scorer_gone(project)


@pytest.mark.slow
def test_a_candidate_submitted_while_wait_judges_its_wave_is_numbered_in_the_next(wave_run):
    """A `submit` while a `wait` is blocked (a second shell, or the agent's parallel tool calls) queues a candidate
    that wait did not take: it is judged by the next wait, so it belongs to the next wave, and each wave has one
    line in waves.jsonl whose iterations are exactly its rows."""
    project = wave_run
    folder = run_folder(project)
    marker = f"wave-late-{os.getpid()}"
    submit(project, sleeper_edit(marker, 8), "sleeps while a second candidate arrives")
    waiting = subprocess.Popen(
        [sys.executable, str(RATCHET), "wait"], cwd=project.path, env=project.env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not processes_with(marker):  # the first candidate is being scored, and wait has long started
        assert time.monotonic() < deadline and waiting.poll() is None, "the first candidate did not start"
        time.sleep(0.1)
    time.sleep(3)
    late = submit(project, SEED_EDIT, "submitted while wait judges")
    out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, out
    if "iter 2 |" not in out:  # wait had taken its candidates before the late one: the next wait judges it
        assert late.startswith("queued iter 2 (wave 1;")
        again = project.ratchet("wait", timeout=600)
        assert again.returncode == 0, again.stderr
        assert "wave 2 | 1 candidate" in again.stdout, again.stdout
    rows = project.rows()[1:]
    waves_seen = [json.loads(x) for x in (folder / "waves.jsonl").read_text().splitlines()]
    assert sorted(w["wave"] for w in waves_seen) == sorted({int(r["wave"]) for r in rows}), (waves_seen, rows)
    for w in waves_seen:
        assert w["iters"] == [int(r["iter"]) for r in rows if r["wave"] == str(w["wave"])], (waves_seen, rows)
    assert not list((folder / "queue").glob("*"))
    scorer_gone(project)


def test_a_scorer_starting_while_orphans_are_interrupted_keeps_its_job(tmp_path, monkeypatch):
    """Two calls make sure a scorer lives (a submit and a wait, or parallel submits): one finds none alive and
    interrupts the dead one's orphans, while the scorer the other started takes the lock and starts a job. That
    job must not be recorded as interrupted (nor its processes killed): the scorer alive is not an orphan's."""
    folder = tmp_path
    (folder / "slots" / "0").mkdir(parents=True)
    (folder / "jobs").mkdir()
    held = []

    def a_scorer_starts_meanwhile(path):  # between interrupt_orphans' check and its work, as serve() starts
        lock = open(folder / scorer.SCORER_LOCK, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return  # serve() exits: another process holds the lock
        held.append(lock)  # alive, it holds the lock for good, and starts a job
        write_json(folder / "jobs" / "0001.json", {"key": "0001", "args": []})
        write_json(folder / "jobs" / "0001.running", {"started": 0.0, "pid": os.getpid()})

    monkeypatch.setattr(scorer, "kill_recorded_group", a_scorer_starts_meanwhile)
    try:
        assert scorer.interrupt_orphans(folder) == []
        assert read_json(folder / "jobs" / "0001.result.json") is None, "a live scorer's job recorded interrupted"
    finally:
        for lock in held:
            lock.close()


@pytest.mark.slow
def test_a_scorer_killed_while_it_confirms_the_winner_confirms_it_again(wave_run):
    """The confirm step's scorings are the harness's work, not the candidate's: a scorer killed while it runs them
    leaves nothing the candidate did wrong, so they are scored again and a real gain is still kept (it was
    discarded as 'not scored on fresh folds')."""
    project = wave_run
    folder = run_folder(project)
    submit(project, BETTER_EDIT, "all features")
    waiting = subprocess.Popen(
        [sys.executable, str(RATCHET), "wait"], cwd=project.path, env=project.env, stdout=subprocess.PIPE, text=True
    )
    running = folder / "jobs" / "0001-confirm-candidate.running"
    deadline = time.monotonic() + 300
    while not running.exists():
        assert time.monotonic() < deadline and waiting.poll() is None, "the confirm step did not start"
        time.sleep(0.02)
    for pid in test_waves.scorer_pids(project):
        os.kill(pid, signal.SIGKILL)
    out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, out
    assert out.startswith("iter 1 |") and "KEPT" in out.splitlines()[0], out
    assert "kept iter 1" in out
    scorer_gone(project)


@pytest.mark.slow
def test_a_wait_cannot_score_a_sandboxed_run_unsandboxed(wave_run, tmp_path):
    """A run that started sandboxed is scored sandboxed to its end (`try` and `submit` refuse otherwise): a `wait`
    from a shell with the sandbox switched off must not start a scorer that runs the wave's candidates outside it,
    where they can write anywhere the user can (the run's records, another slot's files)."""
    project = wave_run
    folder = run_folder(project)
    escaped = tmp_path / "escaped"
    probe = (
        "def build_pipeline():",
        f"try:\n    open({str(escaped)!r}, 'w').write('out of the sandbox')\nexcept OSError:\n    pass\n\n\n"
        "def build_pipeline():",
    )
    with open(folder / "scorer.lock", "a") as lock:  # no scorer starts at submit: the wait below starts one
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        submit(project, probe, "writes outside its sandbox if it can")
    project.env["AUTORESEARCH_SANDBOX"] = "off"
    out = project.ratchet("wait", timeout=600)
    assert not escaped.exists(), "the candidate ran unsandboxed"
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "sandbox" in out.stderr, out
    started = subprocess.run(  # a scorer started unsandboxed by any other way scores nothing either
        [
            sys.executable,
            "-c",
            "import sys; from autoresearch import scorer; scorer.IDLE_EXIT_SECONDS = 0; "
            "sys.exit(scorer.serve(scorer.Path('.'), 't1'))",
        ],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    result = read_json(folder / "jobs" / "0001.result.json")
    assert not escaped.exists(), "the candidate ran unsandboxed"
    assert "sandboxed" in result["harness_error"], result
    del project.env["AUTORESEARCH_SANDBOX"]
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0 and out.stdout.startswith("iter 1 |"), out
    assert not escaped.exists()
    scorer_gone(project)


@pytest.mark.slow
def test_an_edit_saved_while_submit_snapshots_is_left_in_place(wave_run):
    """train.py saved again (an editor, the agent's next edit) after submit read it and before it puts the best
    back: that newer edit is not the candidate, and must not be overwritten."""
    project = wave_run
    project.edit(*SEED_EDIT)
    newer = project.read().replace("C = 0.9999", "C = 0.5")
    done = in_run(
        project,
        "from autoresearch import waves; from autoresearch.gitops import Repo\n"
        "snapshot = Repo.snapshot_commit\n"
        "def saved_meanwhile(self, *args):\n"
        "    sha = snapshot(self, *args)\n"
        f"    open('train.py', 'w').write({newer!r})\n"
        "    return sha\n"
        "Repo.snapshot_commit = saved_meanwhile\n"
        "print(waves.submit(Repo('.'), 'a no-op'))",
    )
    assert done.stdout.startswith("queued iter 1 (wave 1;"), done.stdout
    assert project.read() == newer, "the newer edit was overwritten"
    assert "C = 0.9999" in project.git("show", "refs/autoresearch/t1/0001:train.py")
    assert project.ratchet("wait", timeout=600).returncode == 0
    scorer_gone(project)


@pytest.mark.slow
def test_two_waits_at_once_record_the_wave_once(wave_run):
    """Two `wait`s on one wave (a person's terminal and the agent's, or parallel tool calls), the second slower
    to see the scores (a busy machine): the first records the wave; the second must not judge it again over its
    recorded rows (its jobs are gone by then and the best has moved, so it rewrote the kept row as a discard)."""
    project = wave_run
    folder = run_folder(project)
    submit(project, BETTER_EDIT, "all features")
    first = subprocess.Popen(
        [sys.executable, str(RATCHET), "wait"], cwd=project.path, env=project.env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (folder / "jobs" / "0001.running").exists():  # the first wait took the wave, and waits
        assert time.monotonic() < deadline and first.poll() is None, "the candidate was not scored"
        time.sleep(0.05)
    second = in_run(
        project,
        "import time; from autoresearch import waves; from autoresearch.gitops import Repo\n"
        "real = waves._wait_for\n"
        "def slow_to_see(repo, tag, folder, keys, give_up):\n"
        "    done = real(repo, tag, folder, keys, give_up)\n"
        "    while list(waves.queue_dir(folder).glob('*.json')):  # the first wait records the wave meanwhile\n"
        "        time.sleep(0.1)\n"
        "    return done\n"
        "waves._wait_for = slow_to_see\n"
        "print(waves.wait(Repo('.')))",
    )
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0 and out.startswith("iter 1 |") and "KEPT" in out, out
    assert "iter 1 |" not in second.stdout and "another" in second.stdout, second.stdout
    rows = project.rows()
    assert [r["status"] for r in rows] == ["keep", "keep"], rows
    assert project.git("rev-parse", "HEAD") == project.git("rev-parse", "refs/autoresearch/t1/0001^{commit}")
    scorer_gone(project)


@pytest.mark.slow
def test_a_wave_judged_after_a_person_checked_out_another_branch_leaves_that_branch_alone(wave_run):
    """`wait` holds no lock while it waits (minutes), and a person's `git checkout main` needs none: the kept
    candidate must not be put on main (the branch move went to whatever HEAD was). The wave waits for the run's
    branch, and is judged there."""
    project = wave_run
    main = project.git("rev-parse", "main")
    submit(project, BETTER_EDIT, "all features")
    done = in_run(
        project,
        "import subprocess; from autoresearch import waves; from autoresearch.gitops import Repo\n"
        "from autoresearch.runs import RunError\n"
        "real = waves._wait_for\n"
        "def person_switches(*args):\n"
        "    done = real(*args)\n"
        "    subprocess.run(['git', 'checkout', '-q', 'main'], check=True)  # while wait waited\n"
        "    return done\n"
        "waves._wait_for = person_switches\n"
        "try:\n"
        "    print(waves.wait(Repo('.')))\n"
        "except RunError as exc:\n"
        "    print(f'error: {exc}')",
    )
    assert project.git("rev-parse", "main") == main, "the kept candidate was put on main"
    assert done.stdout.startswith("error: not on an autoresearch run branch"), done.stdout
    project.git("checkout", "-q", "autoresearch/t1")
    out = project.ratchet("wait", timeout=600)
    assert out.returncode == 0 and "KEPT" in out.stdout.splitlines()[0], out
    assert project.git("rev-parse", "HEAD") == project.git("rev-parse", "refs/autoresearch/t1/0001^{commit}")
    scorer_gone(project)
