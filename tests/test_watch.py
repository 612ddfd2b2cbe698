"""The live view of a running loop: `ratchet.py watch` through its --once output and driven in a pseudo-terminal
on a real run, the live page a `try` rewrites (and never fails for), and the frame's parts on constructed rows."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from autoresearch import digest, watch
from autoresearch.runs import RunConfig, run_dir
from autoresearch.stopping import STOP_FILE
from conftest import RATCHET, Project, copy_run, started_project

DEADLINE_SECONDS = 180  # how long a test waits for a frame on a loaded machine: a deadline, not a timing claim
TERMINAL = (40, 200)  # rows, columns of the pseudo-terminal: wide enough that no line of a frame is cut


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_mirror) -> Project:
    return started_project(tmp_path_factory.mktemp("watched"), data_mirror, "w1")


@pytest.fixture
def run(started, tmp_path) -> Project:
    return copy_run(started, tmp_path / "repo")


def ok(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def without_delta(line: str) -> str:
    """A row's line without its Δ ± se (the ref keeps 6 significant digits; `try` printed the float)."""
    return re.sub(r" \(Δ [^)]*\)", "", line)


def live_page(project: Project) -> Path:
    return project.path / ".git" / "autoresearch" / "w1" / watch.LIVE_FILE


# -- on a real run --------------------------------------------------------------------------------------
def test_watch_once_shows_a_row_appended_after_the_first_frame_and_try_rewrites_the_page(run):
    first = ok(run.ratchet("watch", "--once"))
    assert first.startswith("run w1 | task . | val_auc (higher is better)")
    assert "last 1:\n  iter 0 | val_auc=" in first and "| BASELINE |" in first
    assert "iter 1 |" not in first and "(written after the next try)" in first

    # a page that cannot be written (a folder in its place) costs one note, never the try
    page = live_page(run)
    page.mkdir()
    run.edit("C = 1.0", "C = 0.5")
    tried = run.ratchet("try", "half the regularisation strength")
    line = ok(tried).splitlines()[0]
    assert line.startswith("iter 1 | val_auc=")
    [note] = [x for x in tried.stderr.splitlines() if "live page" in x]
    assert note.startswith("note: the live page was not rewritten (IsADirectoryError")
    page.rmdir()

    second = ok(run.ratchet("watch", "--once"))
    assert "last 2:" in second and "iterations: 1 |" in second
    [shown] = [x.strip() for x in second.splitlines() if x.strip().startswith("iter 1 |")]
    assert without_delta(shown) == without_delta(line)  # the ratchet's own line, read back from the run's ref

    run.edit("def build_pipeline():\n", "def build_pipeline():\n    raise RuntimeError('boom')\n")
    assert "CRASH" in ok(run.ratchet("try", "a pipeline that raises"))
    html = page.read_text()
    assert '<meta http-equiv="refresh"' in html  # the run goes on: the tab reloads itself
    assert "a pipeline that raises" in html and "half the regularisation strength" in html
    assert html.index("a pipeline that raises") < html.index("half the regularisation strength")  # latest first
    assert 'class="crash"' in html and 'class="noise-band"' in html and "heldout" not in html.lower()
    third = ok(run.ratchet("watch", "--once"))
    assert f"page: {page}\n" in third + "\n" and "K·x" in third
    assert run.status() == ""  # nothing in the work tree, nothing committed

    ok(run.ratchet("stop", "enough"))
    assert "STOP: stop requested by the person: enough" in ok(run.ratchet("watch", "--once"))
    piped = ok(run.ratchet("watch", "--interval", "0.1"))  # not a terminal: frames until the run is over
    assert piped.count("run w1 |") == 1 and "STOP: stop requested" in piped
    assert watch.refresh(repo_of(run), "w1") == page
    assert '<meta http-equiv="refresh"' not in page.read_text()  # the run is over: no more reloading


def repo_of(project: Project):
    from autoresearch.gitops import Repo

    return Repo(str(project.path))


def test_watch_refuses_bad_input_in_one_line(run, tmp_path):
    out = run.ratchet("watch", "--once", "--tag", "nope")
    assert out.returncode == 2 and out.stderr == "error: no run 'nope'\n"
    out = run.ratchet("watch", "--interval", "0")
    assert out.returncode == 2 and out.stderr.startswith("error: --interval 0: give a positive number")
    run.git("checkout", "-q", "main")
    out = run.ratchet("watch", "--once")
    assert out.returncode == 2 and out.stderr.startswith("error: not on an autoresearch run branch")
    assert "run w1 |" in ok(run.ratchet("watch", "--once", "--tag", "w1"))  # any branch, with --tag


def test_watch_in_a_pseudo_terminal_redraws_when_a_row_arrives_and_ctrl_c_exits_cleanly(run):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *TERMINAL, 0, 0))

    def controlling_terminal() -> None:  # as a shell would: the pty is its terminal, so ^C reaches it
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    watcher = subprocess.Popen(
        [sys.executable, str(RATCHET), "watch", "--interval", "0.5"],
        cwd=run.path,
        env=run.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    screen = bytearray()

    def drain() -> None:  # keep reading, or the frames fill the pty's buffer and the watcher blocks
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while text.encode() not in screen:
            assert watcher.poll() is None, screen.decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, f"{text!r} never drawn: {screen.decode(errors='replace')[-2000:]}"
            time.sleep(0.1)

    try:
        wait_for("last 1:")
        assert not screen.startswith(b"error")
        run.edit("C = 1.0", "C = 0.5")
        ok(run.ratchet("try", "half the regularisation strength"))
        wait_for("— half the regularisation strength")
        os.write(master, b"\x03")  # Ctrl-C, through the terminal
        assert watcher.wait(timeout=DEADLINE_SECONDS) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        os.close(master)
        reader.join(timeout=10)
    text = screen.decode(errors="replace")
    frames = text.split(watch.CLEAR)
    assert len(frames) >= 3  # a first frame, then redraws: each one a cleared screen
    assert "iter 1 |" not in frames[1] and "last 1:" in frames[1]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


# -- the frame, on constructed rows ---------------------------------------------------------------------
def rows_of(metric: str, values: dict[int, float | None], status: dict[int, str]) -> list[dict]:
    return [
        {
            "iter": str(i),
            "commit": f"c{i}",
            metric: "" if v is None else str(v),
            "status": status[i],
            "description": f"edit {i}",
            "delta": "" if i == 0 or v is None else "0.01",
            "delta_se": "" if i == 0 or v is None else str(0.002 * i),
            "seconds": "10",
            "timestamp": f"2026-01-01T00:0{i}:00",
            "reason": "killed" if status[i] == "interrupted" else "",
        }
        for i, v in values.items()
    ]


def view_of(tmp_path: Path, higher_is_better: bool) -> watch.View:
    metric = "val_auc" if higher_is_better else "val_bpb"
    sign = 1 if higher_is_better else -1
    values = {0: 1.0, 1: 1.0 + 0.05 * sign, 2: 1.0 - 0.02 * sign, 3: None, 4: 1.0 + 0.12 * sign, 5: None}
    status = {0: "keep", 1: "keep", 2: "discard", 3: "crash", 4: "keep", 5: "interrupted"}
    config = RunConfig("t", ".", "c0", metric, higher_is_better, 60.0, "2026-01-01T00:00:00")
    rows = rows_of(metric, values, status)
    return watch.View(config, None, rows, digest.digest(config, rows), tmp_path, None)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_the_sparkline_puts_better_up_and_the_strip_marks_each_row(tmp_path, higher_is_better):
    view = view_of(tmp_path, higher_is_better)
    text = watch.frame(view, now=0)
    [spark, strip] = [x for x in text.splitlines() if x.startswith("best so far")] + [
        x for x in text.splitlines() if x.endswith(watch.STRIP_KEY)
    ]
    assert spark.split()[3:] == ["▁▄▄▄██", "iters", "0–5"]  # the best so far, taller when better
    assert strip.split()[0] == "KK·xK!"
    assert "iterations: 5 | kept 2 | discarded 1 | crashed 2 |" in text
    lines = text.splitlines()
    assert any(x.startswith("  iter 5 | ") and "| INTERRUPTED (killed) |" in x for x in lines)
    assert any(x.startswith("  iter 3 | ") and "| CRASH |" in x for x in lines)
    assert "iter 0 | " in text and "| BASELINE |" in text


def test_the_sparkline_scales_each_direction():
    assert watch.sparkline([0.5, 0.6, 0.7], higher_is_better=True) == "▁▅█"
    assert watch.sparkline([0.7, 0.6, 0.5], higher_is_better=False) == "▁▅█"  # a loss going down climbs
    assert watch.sparkline([float("nan"), 0.5, 0.5], higher_is_better=True) == " ▁▁"


def test_lines_cut_to_the_terminal_and_the_iteration_in_flight_is_shown(tmp_path):
    view = view_of(tmp_path, True)
    view.in_flight = {"phase": "running", "iter": 6, "hypothesis": "deeper trees", "started": 100.0}
    text = watch.frame(view, now=142.0, width=40)
    assert max(len(x) for x in text.splitlines()) == 40
    full = watch.frame(view, now=142.0)
    assert "now: iter 6 running for 42 s — deeper trees" in full
    repo = SimpleNamespace(common_dir=tmp_path)  # what run_dir reads of a repository
    run_dir(repo, "t").mkdir(parents=True)
    (run_dir(repo, "t") / STOP_FILE).write_text("done\n")
    view.digest = digest.digest(view.config, view.rows, repo)
    assert not view.over  # stopped, but an iteration is still being scored
    view.in_flight = None
    assert view.over and "STOP: stop requested by the person: done" in watch.frame(view, now=0)


def test_extra_lines_hook_adds_to_the_frame_and_a_broken_hook_costs_only_its_line(tmp_path, monkeypatch):
    def spend(view: watch.View) -> str:
        return f"cost so far: $1.25 over {view.digest['iterations']} iterations"

    def broken(view: watch.View) -> str:
        raise ValueError("no prices")

    monkeypatch.setattr(watch, "EXTRA_LINES", [spend, broken, lambda view: None])
    text = watch.frame(view_of(tmp_path, True), now=0)
    assert "cost so far: $1.25 over 5 iterations" in text
    assert "(broken failed: ValueError)" in text


def test_the_noise_band_carries_each_rows_se_forward(tmp_path):
    view = view_of(tmp_path, True)
    assert watch.noise_band(view.config, view.rows) == pytest.approx([0.002, 0.002, 0.004, 0.004, 0.008, 0.008])
    assert watch.frontier(view.config, view.rows) == pytest.approx([1.0, 1.05, 1.05, 1.05, 1.12, 1.12])
    svg = watch.svg_chart(view)
    assert svg.count('class="crash"') == 2 and svg.count('class="kept"') == 3 and 'class="noise-band"' in svg


def test_the_models_cost_so_far_is_a_line_of_the_frame(tmp_path, monkeypatch):
    from autoresearch import cost
    from test_cost import a_run, result_event, write_jsonl

    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))  # no real transcripts
    monkeypatch.delenv(cost.PRICES_ENV, raising=False)
    view = view_of(tmp_path, True)
    assert not [x for x in watch.frame(view, now=0).splitlines() if x.startswith("model:")]  # no session logged
    write_jsonl(tmp_path / cost.HEADLESS_LOG, [*a_run(), result_event(output=50)])
    view.rows = view.rows[:-1]  # a row less: the cost is read again (it is read once per row count)
    [line] = [x for x in watch.frame(view, now=0).splitlines() if x.startswith("model:")]
    assert line.startswith("model: 5 requests, 105.5 k tokens, $0.048 (")
    assert "requests" not in watch.render_page(view, now=0)  # the page each try rewrites does not read the logs
