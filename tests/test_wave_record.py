"""The wave record (issue 10): results.tsv's `wave` and `worker` columns, a run from before them upgraded losing
nothing, and how `status`, the report and `watch` show a run's waves. On real git repositories whose refs hold
the rows, as a run's do: rows written through ledger.cells and refs.record_row, waves.jsonl and the queue folder
written by hand as the spec lays them out (the wave engine itself is tested with it)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from autoresearch import digest, ledger, refs, report, watch
from autoresearch.gitops import Repo
from autoresearch.runs import RunConfig, run_dir, save_config
from autoresearch.taskdir import find_task
from conftest import RATCHET

TAG = "wv"
METRIC = "val_auc"
OLD_HEADER = "\t".join(ledger.previous_columns(METRIC))


def git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def new_repo(path: Path) -> Repo:
    """A repository with a task at its root (prepare.py, train.py committed) on the run's branch."""
    git(path.parent, "init", "-q", "-b", "main", str(path))
    git(path, "config", "user.name", "t")
    git(path, "config", "user.email", "t@t")
    (path / "prepare.py").write_text("# the frozen harness\n")
    (path / "train.py").write_text("HYPOTHESIS = 'baseline'\n")
    (path / ".gitignore").write_text("results.tsv\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "task files")
    git(path, "checkout", "-qb", f"autoresearch/{TAG}")
    return Repo(path)


def config_of(repo: Repo, **extra) -> RunConfig:
    return RunConfig(TAG, ".", repo.head(), METRIC, True, 60.0, "2026-01-01T00:00:00", extra=extra)


def commit(repo: Repo, i: int) -> str:
    (repo.root / "train.py").write_text(f"HYPOTHESIS = 'edit {i}'\n")
    git(repo.root, "commit", "-qam", f"iter {i}")
    return repo.head()


def a_row(i: int, sha: str, status: str, *, wave: int | None = None, worker: str = "", reason: str = "") -> dict:
    """Iteration i's row as messages.make_row gives it (a wave's with its wave and worker)."""
    row = {
        "commit": sha[:7],
        METRIC: "" if status == "crash" else 0.80 + 0.01 * i,
        "memory_gb": 0.1,
        "status": status,
        "description": "baseline" if i == 0 else f"edit {i} | with a pipe",
        "iter": i,
        "tag": TAG,
        "delta": float("nan") if i == 0 or status == "crash" else 0.002 * i - 0.006,
        "delta_se": float("nan") if i == 0 or status == "crash" else 0.004,
        "p_value": float("nan") if i == 0 or status == "crash" else 0.3,
        "seconds": 10.0 + i,
        "lines": 3,
        "timestamp": f"2026-01-01T00:{i:02d}:00",
        "reason": reason or ("baseline" if i == 0 else ""),
        "fold_scores": "0.8,0.81",
    }
    if wave is not None:
        row |= {"wave": wave, "worker": worker}
    return row


# -- a run from before waves, upgraded ---------------------------------------------------------------------
@pytest.fixture
def old_run(tmp_path):
    """A run written before waves: refs whose rows have no wave/worker keys, results.tsv (with a row of another
    run and a CRLF line a person's editor left) and the mirror under the old header."""
    repo = new_repo(tmp_path / "repo")
    config = config_of(repo)
    save_config(repo, config)
    old_rows = []
    for i, status in enumerate(["keep", "discard", "keep"]):
        cells = ledger.cells(a_row(i, commit(repo, i), status), METRIC)
        old = {k: v for k, v in cells.items() if k not in ledger.WAVE_COLUMNS}
        message = ledger.row_message(TAG, old, asdict(config) if i == 0 else None)
        repo.set_tag_ref(refs.iter_ref(TAG, i), repo.head(), message)
        old_rows.append(old)
    lines = ["\t".join(r.values()) for r in old_rows]
    other = "abcdef0\t0.7\t\tkeep\tanother run's baseline\t0\tother\t\t\t\t5\t3\t2025-12-01T00:00:00\tbaseline\t0.7"
    tsv = f"{OLD_HEADER}\n{other}\r\n" + "".join(f"{line}\n" for line in lines)
    (repo.root / "results.tsv").write_bytes(tsv.encode())
    mirror = run_dir(repo, TAG) / "results.tsv"
    mirror.write_bytes((OLD_HEADER + "\n" + "".join(line + "\n" for line in lines)).encode())
    return repo, config, tsv


def ref_messages(repo: Repo) -> dict[str, str]:
    return {r.name: r.message for r in repo.ref_records(f"refs/autoresearch/{TAG}/")}


def test_an_old_run_is_upgraded_in_place_losing_nothing(old_run):
    repo, config, tsv = old_run
    task = find_task(repo, ".")
    messages = ref_messages(repo)
    mirror = run_dir(repo, TAG) / "results.tsv"
    mirror_before = mirror.read_bytes()

    ledger.Ledger(task.results, mirror, METRIC).check()  # `start` reads it: the old header is not refused
    assert (repo.root / "results.tsv").read_bytes().decode() == tsv  # and not written

    rows, notes = refs.verified_rows(repo, config, task)
    assert [r["iter"] for r in rows] == ["0", "1", "2"]
    assert all(r["wave"] == "" and r["worker"] == "" for r in rows)  # old refs read "" for the new keys
    assert notes == [
        "the run's copy of its rows had no wave and worker columns (written before waves);"
        " added them, empty, to its 3 row(s)",
        "results.tsv had no wave and worker columns (written before waves); added them, empty, to its 4 row(s)",
    ]
    # every byte as it was: the header two names longer, every row two empty cells longer (before its CR)
    upgraded = tsv.replace(OLD_HEADER + "\n", OLD_HEADER + "\twave\tworker\n").replace("\n", "\t\t\n")
    upgraded = upgraded.replace("\twave\tworker\t\t\n", "\twave\tworker\n").replace("\r\t\t\n", "\t\t\r\n")
    assert (repo.root / "results.tsv").read_bytes().decode() == upgraded
    assert mirror.read_bytes() == mirror_before.replace(b"fold_scores\n", b"fold_scores\twave\tworker\n").replace(
        b"0.8,0.81\n", b"0.8,0.81\t\t\n"
    )
    other = [r for r in ledger.read_rows(repo.root / "results.tsv") if r["tag"] == "other"]
    assert other[0]["description"] == "another run's baseline" and other[0]["worker"] == ""
    assert ref_messages(repo) == messages  # old refs are never rewritten

    assert refs.verified_rows(repo, config, task) == (rows, [])  # the second time: nothing to say, nothing done

    # a wave's row after them: recorded and synced, with its wave and worker
    row = ledger.cells(a_row(3, commit(repo, 3), "discard", wave=1, worker="local:1"), METRIC)
    refs.record_row(repo, config, 3, repo.head(), row)
    rows, notes = refs.verified_rows(repo, config, task, new=3)
    assert notes == [] and rows[-1]["wave"] == "1" and rows[-1]["worker"] == "local:1"
    assert ledger.read_rows(repo.root / "results.tsv")[-1] == row


def test_the_ratchets_status_reads_an_old_run_and_says_what_it_upgraded(old_run):
    repo, _, _ = old_run
    out = subprocess.run(
        [sys.executable, str(RATCHET), "status"], cwd=repo.root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "results.tsv had no wave and worker columns (written before waves); added them, empty, to its 4 row(s)" in (
        out.stdout
    )
    assert "iterations: 2 | kept 1 | discarded 1" in out.stdout and "waves:" not in out.stdout
    assert len(ledger.read_rows(repo.root / "results.tsv")) == 4


def test_other_layouts_are_still_refused_and_half_upgraded_refs_are_set_aside(old_run, tmp_path):
    repo, config, _ = old_run
    book = ledger.Ledger(tmp_path / "r.tsv", tmp_path / "m.tsv", METRIC)
    (tmp_path / "r.tsv").write_text("\t".join(ledger.previous_columns(METRIC)[:-1]) + "\n")
    with pytest.raises(ledger.LedgerError):
        book.check()
    cells = ledger.cells(a_row(3, commit(repo, 3), "discard"), METRIC)
    del cells["worker"]  # a row with one of the two: no ratchet wrote that
    repo.set_tag_ref(refs.iter_ref(TAG, 3), repo.head(), ledger.row_message(TAG, cells))
    found = refs.read_refs(repo, TAG, METRIC)
    assert [r["iter"] for r in found.rows] == ["0", "1", "2"]
    assert found.notes == [f"{refs.iter_ref(TAG, 3)} holds no row the ratchet wrote; ignored"]


# -- a run with two waves ----------------------------------------------------------------------------------
WAVES = [  # what `wait` appends; a junk line and a record without a wave number among them
    {
        "wave": 1,
        "workers": 2,
        "executor": "local",
        "iters": [2, 3, 4],
        "submitted": 1000.0,
        "judged": 1100.0,
        "busy_seconds": {"local:0": 80.0, "local:1": 70.0},
        "kept": 3,
        "confirm_seed": 1003,
    },
    "not json {",
    {"workers": 2},
    {
        "wave": 2,
        "workers": 2,
        "executor": "local",
        "iters": [5, 6],
        "submitted": 2000.0,
        "judged": 2050.0,
        "busy_seconds": {"local:0": 45.0, "local:1": 40.0},
        "kept": None,
        "confirm_seed": None,
    },
]
NEAR = "near miss: Δ within 1 se of the best"


@pytest.fixture
def waved(tmp_path):
    """Baseline, a `try`, wave 1 (2, 3, 4: 3 kept), wave 2 (5, 6: nothing kept, 6 a near miss), wave 3 in flight."""
    repo = new_repo(tmp_path / "repo")
    config = config_of(repo, workers=2, executor="local")
    save_config(repo, config)
    plan = [
        (0, "keep", None, "", ""),
        (1, "discard", None, "", ""),
        (2, "discard", 1, "local:0", ""),
        (3, "keep", 1, "local:1", ""),
        (4, "crash", 1, "local:0", "timeout"),
        (5, "discard", 2, "local:1", ""),
        (6, "discard", 2, "local:0", NEAR),
    ]
    book = refs.ledger_for(repo, config, find_task(repo, "."))
    for i, status, wave, worker, reason in plan:
        row = ledger.cells(a_row(i, commit(repo, i), status, wave=wave, worker=worker, reason=reason), METRIC)
        refs.record_row(repo, config, i, repo.head(), row, with_config=i == 0)
        with book.lock():
            book.sync(TAG, refs.read_refs(repo, TAG, METRIC).rows, str(i))
    folder = run_dir(repo, TAG)
    (folder / digest.WAVES_FILE).write_text(
        "".join((json.dumps(w) if isinstance(w, dict) else w) + "\n" for w in WAVES)
    )
    queue = folder / digest.QUEUE_DIR
    queue.mkdir()
    for i in (7, 8, 9, 10):
        entry = {
            "iter": i,
            "wave": 3,
            "commit": "a" * 40,
            "best": "b" * 40,
            "hypothesis": f"idea {i}",
            "submitted": 3000,
        }
        (queue / f"{i:04d}.json").write_text(json.dumps(entry))
    jobs = folder / digest.JOBS_DIR  # as the scorer leaves them: 7 scored, 8 and 9 running, 10 waiting
    jobs.mkdir()
    (jobs / "0007.result.json").write_text("{}")
    (jobs / "0008.running").write_text("{}")
    (jobs / "0009.running").write_text("{}")
    return repo, config


def test_status_shows_the_last_wave_side_by_side_and_the_wave_in_flight(waved):
    repo, config = waved
    rows, notes = refs.verified_rows(repo, config, find_task(repo, "."))
    assert notes == []
    d = digest.digest(config, rows, repo, cost=False)
    waves = d["waves"]
    assert [w["wave"] for w in waves["waves"]] == [1, 2] and waves["candidates"] == 5
    assert waves["per_hour"] == 120.0  # 5 candidates in 150 s of waves
    assert waves["utilisation_percent"] == 78.3  # (150 + 85) busy s / (2 workers x (100 + 50) s)
    assert waves["waves"][0]["utilisation_percent"] == 75.0 and waves["waves"][0]["confirm_seed"] == 1003
    assert waves["last"]["near_misses"] == [6] and waves["last"]["kept"] is None
    assert waves["in_flight"] == {"wave": 3, "queued": 1, "running": 2, "done": 1}
    json.dumps(d)  # --json: every figure is JSON

    text = digest.render(d)
    section = text.split("waves:", 1)[1].splitlines()
    assert section[0] == " 2 judged, 5 candidates | 120.0 candidates per hour of waves | workers busy 78.3%"
    assert section[1] == "  wave 2: 2 candidates on 2 local workers in 50 s, nothing kept:"
    assert section[2] == "    iter 5    discard     Δ +0.0040 ± 0.0040   local:1   — edit 5 | with a pipe"
    assert section[3] == "    iter 6    discard     Δ +0.0060 ± 0.0040   local:0    near miss — edit 6 | with a pipe"
    assert section[4] == f"  near misses: iter 6 ({NEAR})"
    assert section[5] == "  wave 3 in flight: 2 running, 1 waiting, 1 done"

    out = subprocess.run(
        [sys.executable, str(RATCHET), "status", "--json"], cwd=repo.root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["waves"]["in_flight"]["running"] == 2


def test_waves_read_tolerates_missing_and_junk_files(tmp_path):
    assert digest.read_waves(tmp_path) == {} and digest.read_waves(None) == {}
    assert digest.queue_state(tmp_path, 2) is None
    (tmp_path / digest.QUEUE_DIR).mkdir()
    (tmp_path / digest.QUEUE_DIR / "0004.json").write_text("half a fi")  # mid-write: still a candidate
    (tmp_path / digest.QUEUE_DIR / "notes.txt").write_text("x")
    assert digest.queue_state(tmp_path, 4) == {"wave": None, "queued": 1, "running": 0, "done": 0}
    assert digest.in_flight_text(digest.queue_state(tmp_path, 4)) == "a wave in flight: 0 running, 1 waiting, 0 done"
    config = RunConfig("t", ".", "c0", METRIC, True, 60.0, "2026-01-01T00:00:00")
    assert digest.wave_digest(config, [{"iter": "0", "status": "keep", "wave": ""}], None) is None
    first = digest.wave_digest(config, [{"iter": "0", "status": "keep", "wave": ""}], tmp_path)  # the first wave
    assert digest.wave_lines(first) == ["waves: none judged yet", "  a wave in flight: 0 running, 1 waiting, 0 done"]


def test_watch_marks_each_rows_wave_and_says_the_waves_counts(waved):
    repo, _ = waved
    view = watch.read_view(repo, TAG)
    text = watch.frame(view, now=0)
    lines = text.splitlines()
    assert "  w2 iter 6 | val_auc=0.8600 (Δ +0.0060 ± 0.0040) | DISCARDED | 16.0 s — edit 6 | with a pipe" in lines
    assert any(x.startswith("     iter 1 | val_auc=") for x in lines)  # a `try` row: no mark, aligned
    assert "now: wave 3 in flight: 2 running, 1 waiting, 1 done" in lines
    assert not view.over
    assert "now: wave 3 in flight: 2 running, 1 waiting, 1 done" in watch.render_page(view, now=0)
    view.in_flight = {"phase": "running", "iter": 11, "hypothesis": "a try meanwhile", "started": 0.0}
    both = watch.frame(view, now=5).splitlines()
    assert (
        "now: iter 11 running for 5 s — a try meanwhile" in both
        and "now: wave 3 in flight: 2 running, 1 waiting, 1 done" in both
    )


def waved_report(repo: Repo, config: RunConfig) -> report.Report:
    task = find_task(repo, ".")
    rows = refs.ledger_for(repo, config, task).rows(TAG)
    d = digest.digest(config, rows, repo, cost=False)
    chain = [report.Step(e, e["commit"], "", float("nan"), float("nan")) for e in d["kept_chain"]]
    return report.Report(config, task, rows, d, chain)


def test_the_report_has_a_waves_section_and_the_chart_marks_each_wave(waved, tmp_path):
    repo, config = waved
    r = waved_report(repo, config)
    md = report.markdown(r)
    waves = md.split("**Waves**: ", 1)[1]
    assert waves.startswith(
        "2 waves, 5 candidates; 120.0 candidates scored per hour of waves (0.04 h from first submit to judged);"
        " workers busy 78.3% of the time they were there for"
    )
    assert (
        "Wave 1: 3 candidates on 2 local workers in 100 s, kept iter 3; workers busy 75%; confirmed on cv seed 1003"
        in waves
    )
    assert (
        "Wave 2: 2 candidates on 2 local workers in 50 s, nothing kept; near misses: iter 6; workers busy 85%" in waves
    )
    assert "| 3 | keep | Δ +0.0000 ± 0.0040 | local:1 | 13.0 | edit 3 \\| with a pipe |" in waves
    assert "| 6 | discard (near miss) | Δ +0.0060 ± 0.0040 | local:0 | 16.0 |" in waves
    assert "| 4 | crash | n/a | local:0 | 14.0 |" in waves

    page = report.render_html(r, report.progress_chart(r, tmp_path / "p.png"))
    assert "<h2>Waves</h2>" in page and page.count("<th>worker</th>") == 2

    fig = report.draw_chart(r)
    [ax] = fig.axes
    bands = {p.get_gid(): p for p in ax.patches if (p.get_gid() or "").startswith("wave ")}
    assert sorted(bands) == ["wave 1", "wave 2"]
    spans = {gid: (p.get_x(), p.get_x() + p.get_width()) for gid, p in bands.items()}  # a Rectangle
    assert spans == {"wave 1": (1.5, 4.5), "wave 2": (4.5, 6.5)}  # over the iterations each wave judged
    assert bands["wave 1"].get_facecolor()[:3] != bands["wave 2"].get_facecolor()[:3]  # alternate shades
    assert all(p.get_zorder() < 2 for p in bands.values())  # behind the points
    assert "waves (2, shaded alternately)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert {t.get_text() for t in ax.texts} >= {"w1", "w2"}


def test_a_run_without_waves_has_no_waves_anywhere(old_run):
    repo, config, _ = old_run
    r = waved_report(repo, config)
    assert r.digest["waves"] is None
    assert "Waves" not in report.markdown(r) and "waves:" not in digest.render(r.digest)
    fig = report.draw_chart(r)
    assert not [p for p in fig.axes[0].patches if (p.get_gid() or "").startswith("wave ")]
    assert not [t for t in fig.axes[0].get_legend().get_texts() if "wave" in t.get_text()]
    view = watch.read_view(repo, TAG)
    assert not [x for x in watch.frame(view, now=0).splitlines() if x.startswith("  w") or "in flight" in x]
