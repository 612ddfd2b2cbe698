"""Unit tests of the pieces the ratchet is built from: block parser, keep rule, capped output, data fetching."""

from __future__ import annotations

import http.server
import io
import math
import sys
import threading
from pathlib import Path

import pytest
from autoresearch import data, proc, summary
from autoresearch.decide import code_lines, decide, paired_test
from autoresearch.ledger import Ledger, LedgerError, read_rows
from conftest import synthetic_heart


# -- summary block ------------------------------------------------------------------------------------
def test_block_round_trip_and_last_block_wins():
    block = summary.format_block({"val_auc": 0.8912345, "status": "ok", "fold_scores": [0.9, 0.8]})
    assert block.splitlines()[0] == "---"
    assert "val_auc:     0.891235" in block
    text = "noise\n---\nval_auc: 0.99\n" + "more noise\n" + block
    parsed = summary.parse_block(text)
    assert parsed["val_auc"] == "0.891235" and parsed["status"] == "ok"
    assert summary.parse_floats(parsed["fold_scores"]) == [0.9, 0.8]


def test_block_values_are_one_line_and_bad_numbers_are_nan():
    block = summary.format_block({"error": "line one\nline two\tend"})
    assert summary.parse_block(block)["error"] == "line one line two end"
    assert math.isnan(summary.parse_float("n/a")) and math.isnan(summary.parse_float(None))
    assert summary.parse_block("no block here") == {}


# -- keep rule ------------------------------------------------------------------------------------------
BEST = [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.80]


def test_consistent_gain_is_kept_and_noise_is_not():
    better = [b + 0.01 + 0.002 * (i % 2) for i, b in enumerate(BEST)]
    assert decide(better, BEST, True, 30, 30).keep
    noisy = [b + (0.01 if i % 2 else -0.01) for i, b in enumerate(BEST)]
    verdict = decide(noisy, BEST, True, 30, 30)
    assert not verdict.keep and verdict.p_value > 0.3


def test_lower_is_better_metrics_flip_the_test():
    lower = [b - 0.01 - 0.001 * i for i, b in enumerate(BEST)]
    assert decide(lower, BEST, False, 30, 30).keep
    assert not decide(lower, BEST, True, 30, 30).keep


def test_equal_and_simpler_keeps_equal_and_longer_does_not():
    assert decide(BEST, BEST, True, 29, 30).keep
    assert not decide(BEST, BEST, True, 30, 30).keep
    worse = [b - 0.02 for b in BEST]
    assert not decide(worse, BEST, True, 10, 30).keep  # shorter but clearly worse


def test_paired_test_uses_pairs_not_means():
    shifted = [b + 0.001 for b in BEST]  # tiny but perfectly consistent gain
    delta, se, p = paired_test(shifted, BEST, True)
    assert math.isclose(delta, 0.001) and se < 1e-9 and p == 0.0


def test_mismatched_scores_are_an_error():
    with pytest.raises(ValueError):
        decide([0.8], [0.8, 0.9], True, 1, 1)


def test_code_lines_ignore_blanks_and_comments():
    assert code_lines("import x\n\n# why\nx = 1  # what\n") == 2


# -- ledger ---------------------------------------------------------------------------------------------
def test_ledger_mirror_rebuilds_lost_rows_and_refuses_other_layouts(tmp_path):
    book = Ledger(tmp_path / "results.tsv", tmp_path / "mirror" / "results.tsv", "val_auc")
    book.append({"commit": "abc1234", "val_auc": 0.9, "status": "keep", "description": "a\tb", "iter": 0, "tag": "t"})
    book.append(
        {"commit": "def5678", "val_auc": math.nan, "status": "crash", "description": "c", "iter": 1, "tag": "t"}
    )
    (tmp_path / "results.tsv").write_text((tmp_path / "results.tsv").read_text().splitlines()[0] + "\n")
    assert book.repair()
    rows = read_rows(tmp_path / "results.tsv")
    assert [r["iter"] for r in rows] == ["0", "1"] and rows[0]["description"] == "a b" and rows[1]["val_auc"] == ""
    (tmp_path / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    with pytest.raises(LedgerError):
        book.check()


def test_ledger_survives_a_row_cut_short(tmp_path):
    book = Ledger(tmp_path / "results.tsv", tmp_path / "m.tsv", "val_auc")
    book.append({"commit": "a", "iter": 0, "tag": "t", "status": "keep"})
    with open(tmp_path / "results.tsv", "a") as fh:
        fh.write("half a row without newline")
    book.append({"commit": "b", "iter": 1, "tag": "t", "status": "discard"})
    assert read_rows(tmp_path / "results.tsv")[-1]["commit"] == "b"


# -- processes ------------------------------------------------------------------------------------------
def test_run_in_group_caps_output_and_keeps_its_tail():
    sink = io.BytesIO()
    code = "import sys\nfor i in range(2000): sys.stdout.write('x' * 999 + '\\n')\nprint('THE END')"
    result = proc.run_in_group([sys.executable, "-c", code], timeout=30, stdout=sink, max_output_bytes=100_000)
    out = sink.getvalue()
    assert result.returncode == 0 and result.output_bytes > 1_900_000
    assert (
        len(out) < 100_000 + proc.TAIL_BYTES + 2 * proc.CHUNK_BYTES
        and b"bytes of output cut" in out
        and out.rstrip().endswith(b"THE END")
    )
    assert proc.last_line(result.tail) == "THE END"


def test_run_in_group_timeout_kills_the_group():
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)"
    )
    result = proc.run_in_group([sys.executable, "-c", code], timeout=2, stdout=io.BytesIO())
    assert result.timed_out and result.returncode is None and result.seconds < 10


# -- data -----------------------------------------------------------------------------------------------
class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Files(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def heart_reader(pinned: Path | None = None):
    """The heart task's reader; `pinned` stands in for the real file (whose sha256 the task pins)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("heart_prepare", Path(__file__).parents[1] / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if pinned is not None:
        module.DATA_SHA256 = data.sha256_of(pinned)
    return module.read


def test_download_is_checked_then_cached(server, tmp_path, monkeypatch):
    root, url = server
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    synthetic_heart(root / "heart.data")
    read = heart_reader(pinned=root / "heart.data")
    path = data.resolve("heart", "processed.cleveland.data", f"{url}/heart.data", read)
    assert path == tmp_path / "cache" / "heart" / "processed.cleveland.data" and len(read(path)) == 240
    (root / "heart.data").unlink()  # the cache answers now; the server is not asked again
    assert data.resolve("heart", "processed.cleveland.data", f"{url}/heart.data", read) == path


def test_bad_download_leaves_nothing_behind(server, tmp_path, monkeypatch):
    root, url = server
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    (root / "bad.data").write_text("<html>not the data</html>\n")
    with pytest.raises(data.DataError, match="sha256"):  # not the pinned file: refused before it is parsed
        data.resolve("heart", "processed.cleveland.data", f"{url}/bad.data", heart_reader())
    with pytest.raises(data.DataError, match="could not download"):
        data.resolve("heart", "processed.cleveland.data", f"{url}/missing.data", heart_reader())
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no file, no partial download


def test_mirror_and_explicit_paths(tmp_path, monkeypatch):
    synthetic_heart(tmp_path / "mirror" / "heart" / "processed.cleveland.data")
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "mirror"))
    read = heart_reader(pinned=tmp_path / "mirror" / "heart" / "processed.cleveland.data")
    assert data.resolve("heart", "processed.cleveland.data", "http://unused.invalid/", read).parent.name == "heart"
    with pytest.raises(data.DataError, match="no such file"):
        data.resolve("heart", "processed.cleveland.data", "http://unused.invalid/", read, explicit=tmp_path / "nope")
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "empty"))
    with pytest.raises(data.DataError, match="is not there"):
        data.resolve("heart", "processed.cleveland.data", "http://unused.invalid/", read)


def test_sha256_mismatch_is_an_error(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("hello")
    with pytest.raises(data.DataError, match="sha256"):
        data.check_sha256(path, "0" * 64)


# -- stop conditions ------------------------------------------------------------------------------------
def test_leakage_ceiling_stops_a_climb_but_not_an_easy_task(tmp_path):
    from autoresearch.runs import RunConfig
    from autoresearch.stopping import stop_reason

    config = RunConfig("t", ".", "abc", "val_auc", True, 60.0, "2026-11-22T00:00:00+00:00")
    climb = [{"iter": "0", "status": "keep", "val_auc": "0.88"}, {"iter": "1", "status": "keep", "val_auc": "0.995"}]
    assert "leakage" in stop_reason(config, climb, tmp_path)
    easy = [{"iter": "0", "status": "keep", "val_auc": "0.994"}, {"iter": "1", "status": "keep", "val_auc": "0.996"}]
    assert stop_reason(config, easy, tmp_path) is None
    discarded = [
        {"iter": "0", "status": "keep", "val_auc": "0.88"},
        {"iter": "1", "status": "discard", "val_auc": "1.0"},
    ]
    assert stop_reason(config, discarded, tmp_path) is None


def test_three_harness_failures_in_a_row_stop_the_run_but_candidate_crashes_do_not(tmp_path):
    from autoresearch.runs import RunConfig
    from autoresearch.stopping import HARNESS_FAILURE_PREFIX, stop_reason

    config = RunConfig("t", ".", "abc", "val_auc", True, 60.0, "2026-11-22T00:00:00+00:00")
    base = [{"iter": "0", "status": "keep", "val_auc": "0.88", "reason": "baseline"}]
    harness = {"status": "crash", "val_auc": "", "reason": f"{HARNESS_FAILURE_PREFIX} the data file is gone"}
    candidate = {"status": "crash", "val_auc": "", "reason": "train.py exited with code 1: KeyError"}
    rows = lambda *kinds: base + [{**k, "iter": str(i + 1)} for i, k in enumerate(kinds)]  # noqa: E731
    assert "3 times in a row" in stop_reason(config, rows(harness, harness, harness), tmp_path)
    assert stop_reason(config, rows(harness, harness), tmp_path) is None
    assert stop_reason(config, rows(harness, candidate, harness, harness), tmp_path) is None
    assert stop_reason(config, rows(candidate, candidate, candidate), tmp_path) is None


def test_each_fit_gets_a_fresh_copy_of_a_shared_model():
    import types

    import pandas as pd
    from autoresearch import tabular_child
    from sklearn.linear_model import LogisticRegression

    shared = LogisticRegression()
    module = types.SimpleNamespace(feature_fn=lambda df: df, build_pipeline=lambda: shared)
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    pred = tabular_child.predict(module, "binary", x, [0, 0, 1, 1], x)
    assert pred.shape == (4,) and not hasattr(shared, "coef_")  # the shared object was never fitted


def test_rerun_held_out_records_are_averaged():
    from autoresearch.harness import mean_record as _mean_record

    merged = _mean_record(
        {"heldout_bpb": 2.0, "heldout_bpb_values": [2.0, 4.0], "n": "x"},
        {"heldout_bpb": 3.0, "heldout_bpb_values": [5.0, 1.0], "n": "y"},
        runs_before=2,
    )
    assert merged == {"heldout_bpb": 7 / 3, "heldout_bpb_values": [3.0, 3.0], "n": "y"}
