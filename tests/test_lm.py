"""The tinyshakespeare task: the real training code on a tiny budget, the download path against a loopback
server, the trust boundary (a printed score, a model that peeks ahead, a run past its budget), and one
start + try through the real CLI."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from autoresearch import sandbox, summary
from autoresearch.data import DataError
from autoresearch.lm import (
    CPU_OVERRUN_SECONDS,
    MIN_BUDGET_CPU_SECONDS,
    cpu_threads,
    harness_timeout,
    min_budget_seconds,
)
from autoresearch.lm_child import SUGGESTED_BUDGET_MARGIN

torch = pytest.importorskip("torch")

from conftest import LM_TRAIN, ROOT, SHARED_DATA, make_project  # noqa: E402

TASK_DIR = "tasks/shakespeare"
REAL_TEXT = SHARED_DATA / "tinyshakespeare" / "input.txt"
THREADS = cpu_threads()
# The smallest budget the harness accepts (`start --budget` refuses less): the baseline must score at it, or be
# refused naming a budget at which it scores. The loop test runs at it, so it is as short as it can be.
TINY_BUDGET = min_budget_seconds("cpu", THREADS)
# The runs that are not about the floor: as far above it as the minimum a refusal names is above what was
# measured, so a machine busier than usual does not refuse them (start-up costs more CPU time under load).
TEST_BUDGET = math.ceil(SUGGESTED_BUDGET_MARGIN * TINY_BUDGET)
REFUSED = re.compile(r"too small here: .* use --budget (\d+) or more")  # the child's refusal, naming what fits
WORDS = "the king lord my thou art and to of what good sir love night speak death sweet come hath".split()

CHEAT = """
import socket

import torch

TEXT, PREPARE = {text!r}, {prepare!r}


def train(data, device, clock, seed):
    print("---\\nval_bpb: 0.1\\nstatus: ok", flush=True)  # a fake block on the candidate's own output
    for path in (TEXT, PREPARE):  # the text it is scored on (validation and held-out slices), the harness
        try:
            open(path, "rb").read(16)
            print("READ OK", path, flush=True)
        except OSError as exc:
            print("READ REFUSED", path, type(exc).__name__, flush=True)
    try:
        socket.create_connection(("127.0.0.1", 22), timeout=2)
        print("CONNECTED", flush=True)
    except OSError:
        print("NO NETWORK", flush=True)

    class PeekAhead(torch.nn.Module):  # "predicts" each byte by reading the next one
        def forward(self, idx):
            nxt = torch.cat([idx[:, 1:], idx[:, :1]], dim=1)
            return 20.0 * torch.nn.functional.one_hot(nxt, 256).float()

    return {{"model": PeekAhead(), "context_length": 32, "num_steps": 0, "tokens": 0}}
"""

GREEDY = """
import torch

def train(data, device, clock, seed):
    while True:  # ignores clock.left(): the kernel stops it at the budget
        pass
"""

# The baseline's code with a model four times as deep (its export costs ~3x the baseline's) that trains until
# clock.left() is 0, keeping no reserve of its own: the harness's reserve alone must cover the export.
TO_THE_LAST_SECOND = {"N_LAYER = 3": "N_LAYER = 12", "STEP_MARGIN = 2.0": "STEP_MARGIN = 0.0"}


def synthetic_text(n_bytes: int = 60_000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    out, size = [], 0
    while size < n_bytes:
        line = " ".join(rng.choice(WORDS, size=rng.integers(3, 9))).capitalize() + rng.choice([",", ".", "!", "?"])
        out.append(line)
        size += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:n_bytes]


def harness(tmp_path: Path, train_source: str | None = None, budget: float = TEST_BUDGET) -> tuple[dict, dict, str]:
    """The real LM harness (lm.main) on a tiny text through a small prepare.py: (block, private, stderr)."""
    prepare, train, text = write_tiny_task(tmp_path, train_source)
    private = tmp_path / "private.json"
    out = run_harness(prepare, train, text, budget, private)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(private.read_text()) if private.exists() else {}
    return summary.parse_block(out.stdout), record, out.stderr


def write_tiny_task(tmp_path: Path, train_source: str | None) -> tuple[Path, Path, Path]:
    """A small prepare.py on the real LM harness, a tiny text, and train.py (the task's baseline by default)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = tmp_path / "tiny.txt"
    text.write_bytes(synthetic_text())
    prepare = tmp_path / "prepare.py"
    prepare.write_text(
        "import sys\nfrom pathlib import Path\nfrom autoresearch.lm import LMTask, main\n"
        "TASK = LMTask(name='tiny', load=lambda p: Path(p).read_bytes(), budget_seconds={'cpu': 60})\n"
        "sys.exit(main(TASK, default_train=Path(__file__).parent / 'train.py'))\n"
    )
    train = tmp_path / "train.py"
    if train_source is None:
        train.write_text(LM_TRAIN.read_text())
    else:
        train.write_text(train_source)
    return prepare, train, text


def run_harness(prepare: Path, train: Path, text: Path, budget: float, private: Path) -> subprocess.CompletedProcess:
    allowed = budget if budget >= TINY_BUDGET else TINY_BUDGET  # a refused budget (NaN, -5) still gets a timeout
    return subprocess.run(
        [
            sys.executable,
            str(prepare),
            "--train",
            str(train),
            "--data",
            str(text),
            "--budget",
            str(budget),
            "--private-out",
            str(private),
        ],
        capture_output=True,
        text=True,
        timeout=harness_timeout(allowed, "cpu"),  # what the ratchet allows
    )


def refused_minimum(error: str) -> float:
    """The budget a refusal names; fails the test when `error` is anything but that refusal."""
    found = REFUSED.search(error)
    assert found, error[-2000:]
    minimum = float(found.group(1))
    assert minimum > TINY_BUDGET
    return minimum


def test_every_validation_byte_is_scored_once():
    from autoresearch.lm import windows

    for n_bytes, context in [(100, 7), (100, 9), (65, 64), (1000, 128)]:
        starts, first = windows(n_bytes, context)
        scored = [s + t + 1 for s, f in zip(starts, first, strict=True) for t in range(f, context)]
        assert sorted(scored) == list(range(1, n_bytes))


@pytest.mark.slow
def test_the_baseline_trains_and_scores_at_the_smallest_budget_the_harness_accepts(tmp_path):
    """At the floor `start --budget` accepts, start-up and the export reserve leave train() its share and the
    export fits in what is left: the baseline scores. On a machine too busy for that, the child refuses before
    train.py is loaded, naming a budget that fits, and at that budget the baseline scores. So no budget that
    `start` accepts leaves the baseline unable to score."""
    budget = TINY_BUDGET
    block, private, stderr = harness(tmp_path / "floor", budget=budget)
    if block["status"] != "ok":  # only a refusal naming the minimum is allowed here, never a kill at the budget
        budget = refused_minimum(block.get("error", ""))
        block, private, stderr = harness(tmp_path / "minimum", budget=budget)
    assert block["status"] == "ok", block.get("error")
    assert "kept for the export" in stderr  # the child said what it measured, in the log
    bpb = float(block["val_bpb"])
    assert 0 < bpb < 7.0  # a uniform guess is 8 bits per byte
    assert block["metric"] == "val_bpb" and block["direction"] == "lower" and block["keep_rule"] == "rerun"
    assert summary.parse_floats(block["fold_scores"]) == [pytest.approx(bpb, abs=1e-5)]
    assert int(block["num_steps"]) > 0 and int(block["num_params"]) > 100_000
    assert float(block["cpu_seconds"]) <= THREADS * budget + 3  # the kernel's cap: threads x budget
    assert block["device"] == "cpu" and float(block["budget_seconds"]) == budget
    assert 0 < private["heldout_bpb"] < 8 and len(private["heldout_bpb_values"]) == 20
    assert "heldout" not in "".join(block)  # the held-out figure never reaches the block


@pytest.mark.slow
def test_a_printed_score_a_peek_ahead_and_reads_outside_the_sandbox_change_nothing(tmp_path):
    """One candidate, three cheats: a fake block on its output, a model that reads the next byte, and (in the
    kernel sandbox) reading the text it is scored on or the network; the child is handed the training bytes
    only, so the text file, the harness's folder and the network are out of its reach."""
    cheat = CHEAT.format(text=str(tmp_path / "tiny.txt"), prepare=str(tmp_path / "prepare.py"))
    block, private, stderr = harness(tmp_path, cheat)
    assert "val_bpb: 0.1" in stderr  # the candidate's print went to the log, not to the block
    assert block["status"] == "crash"
    assert "not causal" in block["error"]
    assert block["val_bpb"] == "nan" and block["fold_scores"] == "none"
    assert private == {}
    assert (tmp_path / "tiny.txt").exists() and stderr.count("READ ") == 2 and "NETWORK" in stderr  # it probed
    if sandbox.detect().active:
        assert "READ OK" not in stderr and stderr.count("READ REFUSED") == 2
        assert "CONNECTED" not in stderr and "NO NETWORK" in stderr


@pytest.mark.slow
def test_a_candidate_that_ignores_the_clock_is_stopped_at_the_budget(tmp_path):
    block, _, _ = harness(tmp_path, GREEDY)
    assert block["status"] == "timeout"
    assert "budget" in block["error"] and "CPU-s" in block["error"]
    assert float(block["cpu_seconds"]) < THREADS * TEST_BUDGET + 4  # SIGXCPU at the budget, SIGKILL 2 s later


@pytest.mark.slow
def test_a_model_trained_to_the_last_second_of_its_clock_still_exports_inside_the_budget(tmp_path):
    source = LM_TRAIN.read_text()
    for old, new in TO_THE_LAST_SECOND.items():
        assert old in source, old
        source = source.replace(old, new)
    block, _, stderr = harness(tmp_path, source)
    assert block["status"] == "ok", block.get("error")
    assert int(block["num_steps"]) > 0 and int(block["num_params"]) > 500_000  # the deep model trained
    # Under the kernel's cap, export included; counted as the harness counts (short-lived helper processes
    # torch starts are not under the child's RLIMIT, and the harness allows them CPU_OVERRUN_SECONDS)
    assert float(block["cpu_seconds"]) <= THREADS * TEST_BUDGET + CPU_OVERRUN_SECONDS
    assert "kept for the export" in stderr  # the child said what it measured, in the log


@pytest.mark.parametrize("budget", ["3", "0", "-5", "nan"])
def test_a_budget_too_small_to_start_torch_is_refused_in_one_line_naming_the_minimum(tmp_path, budget):
    prepare, train, text = write_tiny_task(tmp_path, CHEAT.format(text="", prepare=""))
    out = run_harness(prepare, train, text, float(budget), tmp_path / "private.json")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f"at least {math.ceil(MIN_BUDGET_CPU_SECONDS / THREADS)} s on a CPU" in out.stderr


def test_start_refuses_a_budget_too_small_in_one_line_and_leaves_nothing(tmp_path, env):
    project = make_project(tmp_path / "repo", env, [f"{TASK_DIR}/prepare.py", f"{TASK_DIR}/train.py", ".gitignore"])
    out = project.ratchet("start", "lm0", "--task", TASK_DIR, "--budget", "5", timeout=300)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "--budget 5: too small" in out.stderr and "at least" in out.stderr
    assert project.git("branch", "--list", "autoresearch/*") == "" and project.status() == ""


def test_the_minimum_a_refusal_names_is_accepted_on_a_busier_machine():
    from autoresearch.lm_child import SUGGESTED_BUDGET_MARGIN, budget_refusal

    for start_up, reserved in [(9.1, 2.0), (3.2, 0.5), (30.0, 6.0), (0.5, 0.5)]:
        budget = start_up + reserved  # nothing left for train()
        refusal = budget_refusal(budget, start_up, reserved, 0.25)
        assert refusal and "too small here" in refusal
        minimum = int(re.search(r"use --budget (\d+) or more", refusal).group(1))
        busier = SUGGESTED_BUDGET_MARGIN**0.5  # start-up and export both cost ~12% more than measured
        assert budget_refusal(minimum, start_up * busier, reserved * busier, 0.25) is None
        assert minimum <= math.ceil(2 * (start_up + reserved) / 0.75)  # and not far beyond what is needed


def test_the_clock_keeps_the_export_reserve_out_of_what_train_sees():
    from autoresearch.lm_child import Clock

    clock = Clock(10.0, "wall", 1, time.monotonic() - 2.0, reserved=3.0)  # 2 s of start-up already spent
    assert 4.9 < clock.left() <= 5.0  # 10 - 2 spent - 3 kept for the export
    assert clock.fraction() < 0.01  # train()'s own share: it has not started spending yet
    late = Clock(10.0, "wall", 1, time.monotonic() - 9.0, reserved=3.0)
    assert late.left() < 0 and late.fraction() == 1.0


# -- the download path -----------------------------------------------------------------------------------
def load_prepare():
    spec = importlib.util.spec_from_file_location("shakespeare_prepare", ROOT / TASK_DIR / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A loopback HTTP server for one file, and the prepare module pointed at it, expecting the real file's
    checksum (or a generated text's when the real file is absent)."""
    body = {"bytes": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body["bytes"])))
            self.end_headers()
            self.wfile.write(body["bytes"])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prepare = load_prepare()
    good = REAL_TEXT.read_bytes() if REAL_TEXT.is_file() else synthetic_text(prepare.DATA_BYTES)
    monkeypatch.setattr(prepare, "DATA_URL", f"http://127.0.0.1:{server.server_address[1]}/input.txt")
    monkeypatch.setattr(prepare, "DATA_SHA256", hashlib.sha256(good).hexdigest())
    monkeypatch.delenv("AUTORESEARCH_DATA_MIRROR", raising=False)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    yield body, prepare, good
    server.shutdown()


def test_download_is_checked_and_cached(served, tmp_path):
    body, prepare, good = served
    body["bytes"] = good
    assert prepare.load() == good
    cached = tmp_path / "cache" / "tinyshakespeare" / "input.txt"
    assert cached.read_bytes() == good
    body["bytes"] = b"the server changed"  # the cache answers now, checked again
    assert prepare.load() == good


def test_corrupted_download_is_refused_and_leaves_nothing(served, tmp_path):
    body, prepare, good = served
    body["bytes"] = good[:1000] + bytes([good[1000] ^ 1]) + good[1001:]  # same size, one bit off
    with pytest.raises(DataError, match="sha256"):
        prepare.load()
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []
    body["bytes"] = good[:-10]  # a truncated download: named by its size
    with pytest.raises(DataError, match="bytes, expected"):
        prepare.load()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# -- the loop --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_start_and_try_run_the_loop_on_the_language_model_task(tmp_path, env):
    files = [f"{TASK_DIR}/prepare.py", f"{TASK_DIR}/train.py", ".gitignore"]
    project = make_project(tmp_path / "repo", env, files)
    if not REAL_TEXT.is_file():  # no local copy of the text: a generated one, and the copy's checksum to match
        mirror = tmp_path / "mirror"
        text = synthetic_text(1_115_394)
        (mirror / "tinyshakespeare").mkdir(parents=True)
        (mirror / "tinyshakespeare" / "input.txt").write_bytes(text)
        project.env = {**env, "AUTORESEARCH_DATA_MIRROR": str(mirror)}
        prepare = project.read(f"{TASK_DIR}/prepare.py")
        project.write(
            prepare.replace(load_prepare().DATA_SHA256, hashlib.sha256(text).hexdigest()), f"{TASK_DIR}/prepare.py"
        )
        project.git("commit", "-qam", "the generated text's checksum")
    budget = TINY_BUDGET  # the smallest `start` accepts: there the baseline scores three times, or is refused
    out = project.ratchet(
        "start", "lm1", "--task", TASK_DIR, "--budget", f"{budget:g}", timeout=3 * harness_timeout(budget, "cpu")
    )
    if out.returncode != 0:  # a machine too busy for the floor: refused, naming a budget that fits, which scores
        budget = refused_minimum(out.stderr)
        assert project.git("branch", "--list", "autoresearch/*") == ""  # the refusal left no run behind
        out = project.ratchet(
            "start", "lm1", "--task", TASK_DIR, "--budget", f"{budget:g}", timeout=3 * harness_timeout(budget, "cpu")
        )
    assert out.returncode == 0, out.stderr
    runs_timeout = 3 * harness_timeout(budget, "cpu")  # a candidate runs up to three times
    assert "baseline val_bpb=" in out.stdout
    config = json.loads((tmp_path / "repo" / ".git" / "autoresearch" / "lm1" / "run.json").read_text())
    assert config["metric"] == "val_bpb" and config["higher_is_better"] is False
    assert config["budget_seconds"] == budget and config["extra"]["harness_args"] == ["--budget", f"{budget:g}"]
    assert config["extra"]["device"] == "cpu" and config["extra"]["keep_rule"] == "rerun"
    # clearly worse (it cannot learn in the budget): judged on one run, where a null edit may take three
    project.edit("LEARNING_RATE = 1e-2", "LEARNING_RATE = 1e-6", f"{TASK_DIR}/train.py")
    out = project.ratchet("try", "a learning rate too small to learn anything", timeout=runs_timeout)
    assert out.returncode == 0, out.stderr
    rows = project.rows(f"{TASK_DIR}/results.tsv")
    assert [r["status"] for r in rows][0] == "keep" and len(rows) == 2
    assert len(summary.parse_floats(rows[0]["fold_scores"])) == 3  # the baseline's calibration runs
    runs = summary.parse_floats(rows[1]["fold_scores"])
    assert len(runs) == 1 and rows[1]["status"] == "discard", rows[1]
    assert float(rows[1]["val_bpb"]) == pytest.approx(sum(runs) / len(runs), abs=1e-5)
    heldout = (tmp_path / "repo" / ".git" / "autoresearch" / "lm1" / "heldout.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in heldout] == [0, 1]
    assert "heldout_bpb" in json.loads(heldout[1])
    assert project.status() == ""  # train.py is the best again, results.tsv and run.log are ignored
    assert os.path.exists(tmp_path / "repo" / TASK_DIR / "run.log")


# -- scoring: the causality check's cost and power, models that fail in the harness ----------------------
class CountingModel(torch.nn.Module):
    """A causal bigram-like model that counts its forward passes; `mode` makes it peek ahead or read across
    the batch instead."""

    def __init__(self, mode: str = "causal"):
        super().__init__()
        self.mode, self.calls = mode, 0

    def forward(self, idx):
        self.calls += 1
        logits = 5.0 * torch.nn.functional.one_hot(idx, 256).float()
        if self.mode == "peek":
            logits = 5.0 * torch.nn.functional.one_hot(torch.roll(idx, -1, dims=1), 256).float()
        if self.mode == "batch":  # each position also sees the same position in the other rows
            logits = logits + torch.nn.functional.one_hot(idx.max(0).values, 256).float()
        return logits


@pytest.mark.parametrize("context", [16, 1024])
def test_the_causal_check_costs_one_forward_pass_per_window_at_any_context(context):
    from autoresearch.lm import CAUSAL_CHECK_WINDOWS, byte_nats, check_causal

    text = np.frombuffer(synthetic_text(8 * context + 1), dtype=np.uint8)
    model = CountingModel()
    _, inputs, reference = byte_nats(model, text, context, "cpu")
    assert reference.shape == (CAUSAL_CHECK_WINDOWS, context, 256)
    model.calls = 0
    check_causal(model, inputs, reference, "cpu")  # a causal model passes
    assert model.calls == CAUSAL_CHECK_WINDOWS  # 64 positions per window in one batch, not context^2 tokens


@pytest.mark.parametrize("mode", ["peek", "batch"])
@pytest.mark.parametrize("context", [32, 1024])
def test_a_model_that_peeks_ahead_or_across_the_batch_is_refused_at_any_context(mode, context):
    from autoresearch.lm import CandidateError, byte_nats, check_causal

    text = np.frombuffer(synthetic_text(8 * context + 1), dtype=np.uint8)
    model = CountingModel(mode)
    _, inputs, reference = byte_nats(model, text, context, "cpu")
    for seed in (0, 1):
        with pytest.raises(CandidateError, match="not causal"):
            check_causal(model, inputs, reference, "cpu", seed=seed)


def test_a_wrong_shape_or_a_slow_model_is_the_candidates_failure():
    from autoresearch.lm import CandidateError, byte_nats

    text = np.frombuffer(synthetic_text(1000), dtype=np.uint8)

    class WrongShape(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, 10)

    with pytest.raises(CandidateError, match="the model returned") as failed:
        byte_nats(WrongShape(), text, 16, "cpu")
    assert failed.value.status == "crash"
    with pytest.raises(CandidateError, match="ran past") as failed:
        byte_nats(CountingModel(), text, 16, "cpu", deadline=0.0)
    assert failed.value.status == "timeout"


def test_counts_train_py_reports_are_used_only_when_they_are_sane():
    from autoresearch.lm import reported_count

    assert reported_count({"tokens": 123}, "tokens") == 123
    for bad in (10**400, -5, 1.5, "7", True, None):  # 10**400 overflowed tokens / seconds: no block at all
        assert reported_count({"tokens": bad}, "tokens") == 0


@pytest.mark.slow
def test_a_kill_before_the_budget_is_a_crash_not_a_budget_overrun(tmp_path):
    from autoresearch.lm import CandidateError, run_candidate

    train = tmp_path / "train.py"
    train.write_text(
        "import os, signal\n\ndef train(data, device, clock, seed):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does\n"
    )
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    np.frombuffer(synthetic_text(10_000), dtype=np.uint8).tofile(io_dir / "train.bin")
    job = {
        "device": "cpu",
        "threads": 1,
        "budget_seconds": 60.0,
        "clock": "cpu",
        "seed": 0,
        "eval_batch": 64,
        "kill_slack_seconds": 2,
        "min_train_fraction": 0.25,
    }
    with open(tmp_path / "log", "wb") as log, pytest.raises(CandidateError) as failed:
        run_candidate(train, io_dir, job, log, None)
    assert failed.value.status == "crash"
    assert "killed by signal 9 (SIGKILL)" in str(failed.value) and "out of memory?" in str(failed.value)
    assert job["measured"]["cpu_seconds"] < 60


def test_an_error_in_the_exported_graph_is_named_in_one_line():
    from autoresearch.lm import first_line

    cause = "Expected input at *args[0].shape[1] to be equal to 64, but got 32"
    assert first_line(RuntimeError(f"\n{cause}\n\n" + "x\n" * 500)) == f"RuntimeError: {cause}"
    assert first_line(ValueError()) == "ValueError"


# -- loading the candidate's model: nothing in model.pt2 runs in the harness ----------------------------
class Payload:
    """Unpickled, it creates `path`: the stand-in for a train.py's code running in the harness."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def export_to(io_dir: Path, model, context: int) -> Path:
    """model.pt2 and report.json as lm_child writes them; returns the archive."""
    io_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        exported = torch.export.export(model, (torch.zeros(64, context, dtype=torch.long),))
    torch.export.save(exported, io_dir / "model.pt2")
    (io_dir / "report.json").write_text(json.dumps({"num_steps": 1, "tokens": 1, "context_length": context}))
    return io_dir / "model.pt2"


class Bigram(torch.nn.Module):
    """Small, causal, with a tied weight, a buffer and a lifted constant: the kinds of payload torch writes."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(256, 8)
        self.head = torch.nn.Linear(8, 256)
        self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.ones(8))

    def forward(self, idx):
        return self.head(self.emb(idx) * self.scale * torch.tensor(2.0))


@pytest.fixture(scope="module")
def honest_archive(tmp_path_factory) -> Path:
    return export_to(tmp_path_factory.mktemp("honest"), Bigram(), 16)


def rewrite_archive(src: Path, dst_dir: Path, edit) -> Path:
    """A copy of `src` whose members (by name under the root folder) `edit(members)` changed in place."""
    with zipfile.ZipFile(src) as archive:
        root = archive.namelist()[0].split("/")[0]
        members = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    edit(members)
    dst_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst_dir / "model.pt2", "w") as archive:
        for name, body in members.items():
            archive.writestr(f"{root}/{name}", body)
    (dst_dir / "report.json").write_text(json.dumps({"context_length": 16}))
    return dst_dir / "model.pt2"


def edit_json(members: dict, name: str, change) -> None:
    doc = json.loads(members[name])
    change(doc)
    members[name] = json.dumps(doc).encode()


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"
GRAPH = "models/model.json"


def pickled_weight(members, marker):
    def change(doc):
        entry = doc["config"]["head.bias"]
        entry["use_pickle"] = True
        members[f"data/weights/{entry['path_name']}"] = pickle.dumps(Payload(marker))

    edit_json(members, WEIGHTS, change)


def pickled_constant(members, marker):
    def change(doc):
        entry = next(iter(doc["config"].values()))
        entry["use_pickle"] = True
        members[f"data/constants/{entry['path_name']}"] = pickle.dumps(Payload(marker))

    edit_json(members, CONSTANTS, change)


def opaque_object(members, marker):
    members["data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))
    edit_json(
        members,
        CONSTANTS,
        lambda doc: doc["config"].update(
            evil={"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        ),
    )


def legacy_weights(members, marker):
    buffer = io.BytesIO()
    torch.save({"x": Payload(marker)}, buffer)
    members["data/weights/model.pt"] = buffer.getvalue()


def aoti_library(members, marker):
    members["data/aotinductor/model/model.so"] = b"\x7fELF not really"


def guards_code(members, marker):
    code = f"__import__('builtins').open({str(marker)!r}, 'w') is not None"
    edit_json(members, GRAPH, lambda doc: doc.update(guards_code=[code]))


def sympy_expression(members, marker):
    def change(doc):
        meta = next(iter(doc["graph_module"]["graph"]["tensor_values"].values()))
        expr = f"__import__('builtins').open({str(marker)!r}, 'w') and 64"
        meta["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 64}}}

    edit_json(members, GRAPH, change)


def foreign_target(members, marker):
    def change(doc):
        node = doc["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.serialization.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]

    edit_json(members, GRAPH, change)


def injected_name(members, marker):
    def change(doc):
        node = doc["graph_module"]["graph"]["nodes"][0]
        node["outputs"][0]["as_tensor"]["name"] = f"x = open({str(marker)!r}, 'w'); y"

    edit_json(members, GRAPH, change)


def carriage_return(members, marker):
    def change(doc):
        trace = f"File \"x\", line 1, in f\r__import__('builtins').open({str(marker)!r}, 'w')\n  x\n"
        doc["graph_module"]["graph"]["nodes"][0]["metadata"]["stack_trace"] = trace

    edit_json(members, GRAPH, change)


HOSTILE_ARCHIVES = {
    pickled_weight: "pickled objects (data/weights/weight_",
    pickled_constant: "pickled objects (data/constants/tensor_",
    opaque_object: "pickled objects (data/constants/opaque_obj_0)",
    legacy_weights: "pickled objects (data/weights/model.pt)",
    aoti_library: "other files (data/aotinductor/model/model.so)",
    guards_code: "code torch would run on loading (guards_code)",
    sympy_expression: "code torch would run on loading (a symbolic size",
    foreign_target: "code torch would run on loading (the operator 'torch.serialization.os.system')",
    injected_name: 'code torch would run on loading (the name "x = open(',
    carriage_return: "code torch would run on loading (a control character in stack_trace)",
}


def test_an_honest_exported_model_loads_and_is_scored(tmp_path):
    from autoresearch.lm import byte_nats, check_causal, load_model

    spec = importlib.util.spec_from_file_location("baseline_train", LM_TRAIN)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    torch.manual_seed(0)
    export_to(tmp_path, baseline.GPT(), baseline.CONTEXT_LENGTH)
    model, context, n_params, report = load_model(tmp_path, "cpu")
    assert context == baseline.CONTEXT_LENGTH and report["num_steps"] == 1
    assert n_params == sum(p.numel() for p in baseline.GPT().parameters())  # the tied weight counted once
    text = np.frombuffer(synthetic_text(2000), dtype=np.uint8)
    nats, inputs, reference = byte_nats(model, text, context, "cpu")
    check_causal(model, inputs, reference, "cpu")
    assert 7.5 < nats.mean() / np.log(2) < 8.5  # untrained: about a uniform guess over 256 bytes


@pytest.mark.parametrize("attack", list(HOSTILE_ARCHIVES), ids=lambda f: f.__name__)
def test_a_model_archive_that_would_run_code_in_the_harness_is_refused(honest_archive, tmp_path, attack):
    from autoresearch.lm import CandidateError, load_model

    marker = tmp_path / "marker"
    io_dir = tmp_path / "io"
    rewrite_archive(honest_archive, io_dir, lambda members: attack(members, marker))
    with pytest.raises(CandidateError) as refused:
        load_model(io_dir, "cpu")
    message = str(refused.value)
    assert refused.value.status == "crash" and "\n" not in message
    assert message.startswith("the exported model holds ") and message.endswith(": not loaded")
    assert HOSTILE_ARCHIVES[attack] in message
    assert not marker.exists()


@pytest.mark.parametrize("attack", [pickled_weight, guards_code, sympy_expression], ids=lambda f: f.__name__)
def test_the_hostile_archives_do_run_their_code_in_a_plain_torch_load(honest_archive, tmp_path, attack):
    """The control: without the check, each payload runs (so the refusals above are not vacuous)."""
    marker = tmp_path / "marker"
    path = rewrite_archive(honest_archive, tmp_path / "io", lambda members: attack(members, marker))
    try:
        torch.export.load(path).module()(torch.zeros(64, 16, dtype=torch.long))
    except Exception:  # the payload ran before torch noticed the rest is not a model
        pass
    assert marker.exists()


def test_pickled_sample_inputs_are_dropped_not_unpickled(honest_archive, tmp_path):
    """torch unpickles the sample inputs with the safe unpickler and falls back to the full one when that
    fails: the harness loads a copy without them."""
    from autoresearch.lm import load_model

    marker = tmp_path / "marker"
    payload = pickle.dumps(Payload(marker))
    rewrite_archive(
        honest_archive, tmp_path / "io", lambda members: members.update({"data/sample_inputs/model.pt": payload})
    )
    model, context, _, _ = load_model(tmp_path / "io", "cpu")
    assert model(torch.zeros(64, context, dtype=torch.long)).shape == (64, context, 256)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises after the payload ran
        torch.export.load(tmp_path / "io" / "model.pt2")
    assert marker.exists()  # the control: a plain load runs it


def test_torchs_unpicklers_refuse_during_the_load_even_past_the_check(honest_archive, tmp_path):
    from autoresearch import lm

    marker = tmp_path / "marker"
    path = rewrite_archive(honest_archive, tmp_path / "io", lambda members: pickled_weight(members, marker))
    original = torch.load
    with pytest.raises(lm._Refused), lm.no_unpickling():
        torch.export.load(io.BytesIO(path.read_bytes()))
    assert not marker.exists()
    from torch.export.pt2_archive import _package

    payload = pickle.dumps(Payload(marker))
    for unpickle in (lambda: torch._C._pickle_load_obj(payload), lambda: _package.pickle.loads(payload)):
        with pytest.raises(lm._Refused), lm.no_unpickling():  # custom and opaque objects' loaders
            unpickle()
    assert not marker.exists()
    assert torch.load is original  # restored after the load


def test_a_bomb_a_huge_file_or_a_fifo_is_refused_quickly(honest_archive, tmp_path):
    from autoresearch.lm import MODEL_MAX_BYTES, MODEL_MAX_MEMBERS, CandidateError, load_model

    cases = {
        "bomb": tmp_path / "bomb",
        "huge": tmp_path / "huge",
        "many": tmp_path / "many",
        "fifo": tmp_path / "fifo",
        "link": tmp_path / "link",
    }
    path = rewrite_archive(honest_archive, cases["bomb"], lambda members: None)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:  # 256 MB of zeros in 0.25 MB
        root = archive.namelist()[0].split("/")[0]
        with archive.open(f"{root}/data/weights/weight_9", "w") as member:
            for _ in range(256):
                member.write(bytes(1024**2))
    assert path.stat().st_size < 2 * 1024**2
    rewrite_archive(honest_archive, cases["huge"], lambda members: None)
    with open(cases["huge"] / "model.pt2", "r+b") as fh:
        fh.truncate(MODEL_MAX_BYTES + 1)  # sparse: no disk used
    rewrite_archive(
        honest_archive,
        cases["many"],
        lambda members: members.update({f"extra/{i}": b"" for i in range(MODEL_MAX_MEMBERS)}),
    )
    for name in ("fifo", "link"):
        cases[name].mkdir()
        (cases[name] / "report.json").write_text(json.dumps({"context_length": 16}))
    os.mkfifo(cases["fifo"] / "model.pt2")  # reading it would wait for a writer forever
    (cases["link"] / "model.pt2").symlink_to("/dev/zero")
    expected = {
        "bomb": "compressed members",
        "huge": "over 2 GiB",
        "many": "too many files",
        "fifo": "not a regular file",
        "link": "no loadable model",
    }
    for name, io_dir in cases.items():
        started = time.monotonic()
        with pytest.raises(CandidateError, match=expected[name]):
            load_model(io_dir, "cpu")
        assert time.monotonic() - started < 5, name


HOSTILE_TRAIN = """
import builtins, json, pickle, zipfile
import torch

MARKER = {marker!r}


class Payload:
    def __reduce__(self):
        return (builtins.open, (MARKER, "w"))


def poison(path):
    # after lm_child saved model.pt2: the same model, one weight now a pickle that runs code
    with zipfile.ZipFile(path) as archive:
        files = {{name: archive.read(name) for name in archive.namelist()}}
    config_name = next(name for name in files if name.endswith("model_weights_config.json"))
    config = json.loads(files[config_name])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    files[config_name] = json.dumps(config).encode()
    files[config_name.rsplit("/", 1)[0] + "/" + entry["path_name"]] = pickle.dumps(Payload())
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in files.items():
            archive.writestr(name, body)


class Bigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(256, 256)

    def forward(self, idx):
        return self.emb(idx)


def train(data, device, clock, seed):
    save = torch.export.save

    def save_then_poison(exported, path):  # lm_child saves through the patched function
        save(exported, path)
        poison(path)

    torch.export.save = save_then_poison
    return {{"model": Bigram(), "context_length": 32, "num_steps": 0, "tokens": 0}}
"""


@pytest.mark.slow
def test_a_train_py_that_rewrites_its_model_into_a_pickle_runs_nothing_in_the_harness(tmp_path):
    marker = tmp_path / "marker"
    block, private, _ = harness(tmp_path, HOSTILE_TRAIN.format(marker=str(marker)))
    assert block["status"] == "crash"
    assert block["error"].startswith("the exported model holds pickled objects (data/weights/weight_0")
    assert block["val_bpb"] == "nan" and block["fold_scores"] == "none" and private == {}
    assert not marker.exists()


def test_a_graph_that_reads_a_file_is_refused():
    """aten::from_file is the one aten operator that reads a file: in the harness it could read the held-out
    text while the model is scored. Refused in the archive's text and in the loaded graph."""
    from types import SimpleNamespace

    from autoresearch.lm import MODEL_TARGET, CandidateError, check_loaded_graph

    assert MODEL_TARGET.fullmatch("torch.ops.aten.mm.default")
    assert not MODEL_TARGET.fullmatch("torch.ops.aten.from_file.default")
    graph = torch.fx.Graph()
    graph.output(graph.call_function(torch.ops.aten.from_file.default, ("/etc/hostname",), {"size": 4}))
    program = SimpleNamespace(graph_module=torch.fx.GraphModule(torch.nn.Module(), graph))
    with pytest.raises(CandidateError, match="from_file"):
        check_loaded_graph(program)
