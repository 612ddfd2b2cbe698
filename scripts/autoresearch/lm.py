"""The frozen language-model harness: a byte-level split, the candidate in a child process, bits per byte.

A task's `prepare.py` describes its text in an `LMTask` and calls `main(task)`. This process never imports
the candidate's train.py. The child (`lm_child`) gets the training bytes only, trains under a budget the
kernel enforces (RLIMIT_CPU on a CPU, a wall-clock kill elsewhere), and exports its model with torch.export.
This process loads the exported graph, checks that it is causal (the log-probabilities at position t do not
move when the bytes after t change), and computes `val_bpb` on a fixed validation slice the child never saw.
The held-out slice's figures go only to `--private-out`.

The child runs in the kernel sandbox (sandbox.py), under a supervisor that reports its exit and CPU time on a
descriptor it never holds (supervise.py): it cannot read the text from disk, reach the network or outlive
its run. The model file is checked before torch loads it (`load_model`): no pickles, no code torch would
evaluate, no operator that reads a file. Unsandboxed (see the README's Guarantees), the child runs with the
user's rights and could read the text from disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import signal
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoresearch import contract, keeprules, proc, sandbox, supervise
from autoresearch.data import DataError
from autoresearch.lm_child import BUDGET_TOO_SMALL_EXIT

# OpenMP threads that spin while they wait burn the CPU a busy machine needs: measured here under load, a
# forward pass took 0.27 CPU-s with 2 spinning threads and 0.05 with passive ones. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VOCAB = 256  # bytes
EVAL_BATCH = 64  # the exported model's batch size; every scoring call has exactly this shape
CAUSAL_TOLERANCE_NATS = {
    "cpu": 1e-4,
    "other": 2e-2,
}  # fp32 on a CPU repeats to ~1e-6; bf16 kernels drift more
CAUSAL_CHECK_WINDOWS = 2  # windows whose positions are checked against a changed future
CAUSAL_CHECK_POSITIONS = EVAL_BATCH  # positions checked per window (all when the context is shorter): one
# forward pass per window at any context; checking every position cost context^2 tokens (17 GB at 4096)
KILL_SLACK_SECONDS = 2  # SIGXCPU at the budget, SIGKILL this much later (a handler cannot buy more)
MIN_BUDGET_CPU_SECONDS = 24.0  # the smallest budget accepted, where the baseline still scores: measured here in
# the sandbox (2 threads, compiled bytecode, which the harness ensures), start-up took 7.6-7.8 CPU-s and the
# export reserve 4.8-5, leaving train() 47-49% of 24; the child refuses below MIN_TRAIN_FRACTION (without
# compiled bytecode start-up took 17-18 CPU-s: refused, naming a budget that fits)
MIN_TRAIN_FRACTION = 0.25  # the child refuses a budget whose measured start-up and export reserve leave
# train() less than this share: below it a score measures start-up more than training
CPU_KILL_MARGIN_SECONDS = 1.0  # a SIGKILL with less CPU than budget - this came from elsewhere (OOM killer)
CPU_OVERRUN_SECONDS = 3.0  # measured CPU beyond the budget that still counts as on time (child processes)
WALL_CAP_FACTOR = 10.0  # a CPU run is also killed at 10x its budget in wall time (a sleeper); measured here with
# four agents' tests on 2 cores, a child got 0.3 cores: 120 CPU-s took 7 minutes
WALL_CAP_EXTRA_SECONDS = 60.0
SCORING_SECONDS = 120.0  # harness start, data, loading and scoring the model: ~10 s here, 10x on a busy machine
SCORING_RESERVE_SECONDS = 30.0  # of SCORING_SECONDS, kept for harness start and the block: a model still
# scoring past the rest is a candidate timeout, reported, before the ratchet kills the whole harness
SUPERVISOR_REPORT_BYTES = 4096  # one short JSON line
ERROR_CHARS = 300  # an `error` is one line of results.tsv; torch's messages can run to pages
REPORT_MAX_COUNT = 10**15  # num_steps / tokens above this (or not ints) are ignored: they only feed rates
PEAK_PROBE_SECONDS = 0.5  # how long the on-the-spot matmul throughput probe runs
LM_BLOCK_KEY = "val_bpb"
KEEP_RULE = keeprules.RunToRun.name  # one training run is one draw of the noise: judged against run-to-run spread
# What this harness supports (`prepare.py --capabilities`; contract.Capabilities): recorded by `start`.
CAPABILITIES = contract.Capabilities(
    family="lm",
    keep_rule=KEEP_RULE,
    fresh_folds=False,
    audit_records=True,
    budget_arg=True,
    seed_arg=True,
    budget_clocks={"cpu": "cpu", "mps": "wall", "cuda": "wall"},
    devices=("cpu", "mps", "cuda"),
)


@dataclass
class LMTask:
    name: str
    load: Callable[[str | None], bytes]  # data path -> the whole text; raises DataError
    budget_seconds: dict[str, float]  # per device type: "cpu", "mps", "cuda"
    train_fraction: float = 0.9
    val_fraction: float = 0.05  # after the training bytes; the held-out slice is the rest of the file
    n_chunks: int = 20  # validation bytes are cut into this many contiguous chunks for a standard error
    max_context: int = 4096


def split(task: LMTask, text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed train / validation / held-out slices, in that order in the file."""
    data = np.frombuffer(text, dtype=np.uint8)
    n_train = int(len(data) * task.train_fraction)
    n_val = int(len(data) * task.val_fraction)
    return data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]


def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class CandidateError(Exception):
    """The candidate failed: crashed, over budget, or returned a model that cannot be scored."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


# -- scoring ---------------------------------------------------------------------------------------------
def windows(n_bytes: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and, per window, the first position scored: every byte after the first is predicted
    exactly once, whatever the context length (the last window overlaps the one before it)."""
    if context + 1 > n_bytes:
        raise CandidateError("crash", f"context_length {context} is longer than the validation slice")
    starts = list(range(0, n_bytes - context, context))
    first = [0] * len(starts)
    covered = starts[-1] + context  # targets 1..covered are scored
    if covered < n_bytes - 1:
        starts.append(n_bytes - context - 1)
        first.append(covered - starts[-1])
    return np.asarray(starts), np.asarray(first)


def forward_batches(model, inputs, device: str, keep: Callable, deadline: float = math.inf):
    """Run the model over int64 inputs (n, T) in fixed batches of EVAL_BATCH rows. `keep(logits, rows)`
    reduces each batch's float logits (rows, T, 256) to what the caller needs (`rows` is the batch's slice of
    `inputs`), so memory holds one batch's output, never all of them. Returns the kept parts concatenated."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(inputs), EVAL_BATCH):
            if time.monotonic() > deadline:
                raise CandidateError(
                    "timeout",
                    "scoring the model ran past the harness's time for it: a smaller model or a shorter context_length",
                )
            batch = inputs[i : i + EVAL_BATCH]
            pad = EVAL_BATCH - len(batch)
            if pad:
                batch = torch.cat([batch, batch[:1].expand(pad, -1)])
            logits = model(batch.to(device))
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (*batch.shape, VOCAB):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise CandidateError("crash", f"the model returned {shape}, expected {(*batch.shape, VOCAB)}")
            rows = slice(i, i + EVAL_BATCH - pad)
            out.append(keep(logits[: EVAL_BATCH - pad].float().cpu(), rows))
    return torch.cat(out)


def byte_nats(
    model, text: np.ndarray, context: int, device: str, deadline: float = math.inf
) -> tuple[np.ndarray, object, object]:
    """Negative log-likelihood in nats of each byte of `text` after the first; also the windows and the
    log-probabilities (k, T, 256) of the first CAUSAL_CHECK_WINDOWS of them, for the causality check."""
    import torch

    starts, first = windows(len(text), context)
    ids = torch.from_numpy(text.astype(np.int64))
    offsets = torch.arange(context + 1)
    chunks = ids[torch.from_numpy(starts)[:, None] + offsets]
    inputs, targets = chunks[:, :-1], chunks[:, 1:]
    n_reference = min(CAUSAL_CHECK_WINDOWS, len(inputs))
    reference = []

    def keep(logits, rows: slice):
        lp = torch.log_softmax(logits, dim=-1)
        if rows.start < n_reference:
            reference.append(lp[: n_reference - rows.start].clone())
        return -lp.gather(2, targets[rows, :, None]).squeeze(2)

    nll = forward_batches(model, inputs, device, keep, deadline)
    scored = torch.arange(context)[None, :] >= torch.from_numpy(first)[:, None]
    nats = nll[scored].double().numpy()
    if not np.all(np.isfinite(nats)):
        raise CandidateError("crash", "the model's log-probabilities contain NaN or infinity")
    return nats, inputs, torch.cat(reference)


def causal_positions(context: int, rng: np.random.Generator) -> np.ndarray:
    """The positions checked in one window: all of them in a short context, else a random sample that
    always holds the first and the last (sorted)."""
    if context <= CAUSAL_CHECK_POSITIONS:
        return np.arange(context)
    inner = rng.choice(np.arange(1, context - 1), size=CAUSAL_CHECK_POSITIONS - 2, replace=False)
    return np.sort(np.concatenate([[0, context - 1], inner]))


def check_causal(model, inputs, reference, device: str, seed: int = 0, deadline: float = math.inf) -> None:
    """Re-score windows with their future replaced by other text: the past's log-probabilities must not move.

    For each checked window, row j of a check batch keeps bytes 0..t_j of the window and takes the rest from
    another window, and only position t_j's log-probabilities are kept and compared with `reference` (the
    window scored among other windows). Positions t_j are all positions up to CAUSAL_CHECK_POSITIONS, else a
    sample drawn from `seed` (reruns check other positions): a fixed number of forward passes and a fixed
    memory per window, whatever the context. Each batch mixes many futures, so a model that reads across the
    batch is caught too."""
    import torch

    context = inputs.shape[1]
    tolerance = CAUSAL_TOLERANCE_NATS["cpu" if device == "cpu" else "other"]
    rng = np.random.default_rng([seed, context])
    for k in range(len(reference)):
        window, donor = inputs[k], inputs[len(inputs) - 1 - k]
        if torch.equal(window, donor):
            donor = torch.roll(window, 1)
        positions = torch.from_numpy(causal_positions(context, rng))
        keep_past = torch.arange(context)[None, :] <= positions[:, None]  # row j keeps bytes 0..t_j
        mixed = torch.where(keep_past, window[None, :], donor[None, :])

        def at_split(logits, rows: slice, positions=positions):
            picked = logits[torch.arange(len(logits)), positions[rows]]
            return torch.log_softmax(picked, dim=-1)

        checked = forward_batches(model, mixed, device, at_split, deadline)
        drift = (checked - reference[k][positions]).abs().max().item()
        if not drift <= tolerance:
            raise CandidateError(
                "crash",
                f"the model is not causal: log-probabilities at some position moved by {drift:.3g} nats when "
                "only later bytes changed (or its outputs are not deterministic)",
            )


def bits_per_byte(nats: np.ndarray) -> float:
    return float(nats.mean() / math.log(2))


def chunk_bpb(nats: np.ndarray, n_chunks: int) -> list[float]:
    return [bits_per_byte(part) for part in np.array_split(nats, min(n_chunks, len(nats)))]


def matmul_flops_per_second(device: str, threads: int) -> float:
    """Throughput of a large matmul on the spot (fp32 on a CPU, bf16 elsewhere): the MFU denominator.
    On a CPU it is timed on the budget's clock (CPU time / threads), so a busy machine skews neither side."""
    import torch

    def now() -> float:
        return time.process_time() / threads if device == "cpu" else time.perf_counter()

    n, dtype = (1024, torch.float32) if device == "cpu" else (4096, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    count, started = 0, now()
    while now() - started < PEAK_PROBE_SECONDS:
        a @ b
        count += 1
    sync()
    return 2 * n**3 * count / (now() - started)


# -- the candidate -----------------------------------------------------------------------------------------
def children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_wall_cap(budget: float, clock: str) -> float:
    return budget * WALL_CAP_FACTOR + WALL_CAP_EXTRA_SECONDS if clock == "cpu" else budget + KILL_SLACK_SECONDS


def min_budget_seconds(clock: str, threads: int) -> float:
    """The smallest budget the harness accepts: on a CPU the budget is CPU time over the threads."""
    return MIN_BUDGET_CPU_SECONDS / (threads if clock == "cpu" else 1)


def check_budget(budget: float, clock: str | None, threads: int) -> None:
    """Refuse, in one line naming the minimum, a budget too small to start torch, train and export. With
    `clock` None (the device is not known before torch is imported), refuse only what no device accepts."""
    minimum = min_budget_seconds(clock or "cpu", threads)
    if budget >= minimum:  # NaN falls through to the refusal
        return
    on_cpu = f"{math.ceil(minimum)} s on a CPU here ({MIN_BUDGET_CPU_SECONDS:g} CPU-s over {threads} threads)"
    on_gpu = f"{MIN_BUDGET_CPU_SECONDS:g} s of wall time on a GPU"
    where = on_cpu if clock == "cpu" else on_gpu if clock == "wall" else f"{on_cpu}, {on_gpu}"
    raise DataError(f"--budget {budget:g}: too small to start torch, train and export; at least {where}")


def harness_timeout(budget: float, clock: str) -> float:
    """What the ratchet should allow one harness call: the child's cap, then loading, export and scoring."""
    return child_wall_cap(budget, clock) + SCORING_SECONDS


def run_candidate(train_path: Path, io_dir: Path, job: dict, log, pgid_file: str | None) -> dict:
    """Train in the child; return the measured seconds. Raises CandidateError."""
    (io_dir / "job.json").write_text(json.dumps({k: v for k, v in job.items() if k != "measured"}))
    # Threads that wait sleep rather than spin, so CPU time measures work, not waiting on a busy machine.
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(job["threads"]))
    budget = job["budget_seconds"]
    on_cpu = job["clock"] == "cpu"
    wall_cap = child_wall_cap(budget, job["clock"])

    def record_pgid(pid: int) -> None:
        if pgid_file:
            Path(pgid_file).write_text(str(pid))

    box = sandbox.detect()
    sandbox.ensure_bytecode()
    train_inside, io_inside = sandbox.inside(box, train_path, io_dir)
    threads_env = {k: env[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    report_read, report_write = os.pipe()
    child = sandbox.python_argv("autoresearch.lm_child", train_inside, io_inside)
    supervised = sandbox.python_argv("autoresearch.supervise", str(report_write), "--", *child)
    cmd, env = sandbox.command(box, supervised, candidate=train_path, io_dir=io_dir, env=threads_env)
    cpu_before = children_cpu_seconds()
    result = proc.run_in_group(
        cmd, timeout=wall_cap, stdout=log, cwd=io_dir, env=env, on_start=record_pgid, pass_fds=(report_write,)
    )
    with os.fdopen(report_read, "rb") as channel:
        report = _supervisor_report(channel.read(SUPERVISOR_REPORT_BYTES))
    # The supervisor's count (wait4, from the kernel) when there is one: bubblewrap hides it from ours.
    cpu = report.get("cpu_seconds", children_cpu_seconds() - cpu_before)
    returncode = report.get("returncode", result.returncode) if not result.timed_out else None
    budget_cpu = budget * job["threads"]
    times = {"wall_seconds": result.seconds, "cpu_seconds": cpu}
    job["measured"] = times  # the caller reports them even when the candidate failed
    if result.timed_out:
        raise CandidateError("timeout", f"train.py ran past {wall_cap:g} s of wall time and was killed")
    # RLIMIT_CPU sends SIGXCPU at the budget and SIGKILL at the hard limit after it; a SIGKILL before the
    # budget was spent came from elsewhere (the kernel's OOM killer, most likely) and is a crash.
    killed_at_cap = returncode == -signal.SIGXCPU or (
        returncode == -signal.SIGKILL and cpu >= budget_cpu - CPU_KILL_MARGIN_SECONDS
    )
    if returncode == BUDGET_TOO_SMALL_EXIT:  # refused before train.py was loaded: says why, once
        raise CandidateError("crash", proc.last_line(result.tail) or "the budget is too small")
    if on_cpu and (killed_at_cap or cpu > budget_cpu + CPU_OVERRUN_SECONDS):
        how = "was stopped by the kernel at" if killed_at_cap else "ran past"
        raise CandidateError(
            "timeout",
            f"train.py {how} its budget of {budget_cpu:g} CPU-s ({budget:g} s x {job['threads']} "
            f"threads, export included; {cpu:.0f} counted): stop before clock.left() reaches 0",
        )
    if returncode is not None and returncode < 0:
        number = -returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else "unknown signal"
        hint = ": out of memory?" if number == signal.SIGKILL else ""
        raise CandidateError("crash", f"train.py was killed by signal {number} ({name}) after {cpu:.0f} CPU-s{hint}")
    if returncode != 0:
        why = proc.last_line(result.tail) or "no output"
        raise CandidateError("crash", f"train.py exited with code {returncode}: {why}")
    return times


def _supervisor_report(raw: bytes) -> dict:
    """The supervisor's line (autoresearch.supervise); {} when it did not write one (killed, or unsandboxed
    code paths): the caller then falls back on its own measurements."""
    return supervise.parse_report(raw)


def reported_count(report: dict, key: str) -> int:
    """A count train.py reported (num_steps, tokens): only rates use it, so a bad one is 0, not a failure."""
    value = report.get(key)
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= REPORT_MAX_COUNT
    return value if ok else 0


# -- loading the candidate's model without running its code ----------------------------------------------
# torch.export.load trusts its archive: it unpickles weights and constants marked `use_pickle`, custom and
# opaque objects, legacy weight files and, when the safe unpickler fails, the sample inputs
# (torch/export/pt2_archive/_package.py, torch/_export/serde/serialize.py); it evals symbolic size
# expressions (sympy.sympify) and execs `guards_code`; and it loads AOTInductor shared libraries. A train.py
# writes model.pt2, so any of these would run its code here, beside the validation and held-out text. The
# harness therefore reads the archive itself, keeps only what a static-shape graph of aten ops needs, checks
# each kept member, and hands torch a copy rebuilt from those members alone.
MODEL_FILE = "model.pt2"
MODEL_MAX_BYTES = 2 * 1024**3  # the baseline's archive is 0.8 MB; a 5-minute CUDA budget trains ~100M
# parameters at most (0.4 GB in fp32): 5x room, and loading holds two copies in memory
MODEL_MAX_MEMBERS = 10_000  # torch writes one member per tensor storage plus 8: the baseline has 49
MODEL_MAX_JSON_BYTES = 64 * 1024**2  # a config or graph; the baseline's graph (models/model.json) is 0.1 MB
# What torch.export.save writes for one model named "model" with static shapes (torch 2.15); anything else
# (data/aotinductor/, the legacy data/weights/model.pt, constants' custom_obj_* and opaque_obj_ pickles,
# extra/, executorch, XL weights) is refused by name.
MODEL_FIXED_MEMBERS = frozenset(
    {
        "archive_format",
        "archive_version",
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        "models/model.json",
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
        "data/sample_inputs/model.pt",
    }
)
MODEL_TENSOR_MEMBER = re.compile(r"data/weights/weight_[0-9]+|data/constants/tensor_[0-9]+")
# Node targets torch resolves by attribute lookup from the text: aten operators and higher-order operators
# (autocast, no_grad regions) only; a name like torch.serialization.os.system would be a call at run time.
# aten::from_file is the one aten operator that reads a file (found by listing every aten schema): a graph could
# read the held-out text from disk in the harness while it is scored.
MODEL_TARGET = re.compile(r"torch\.ops\.aten\.(?!__)(?!from_file\.)\w+\.(?!__)\w+|torch\.ops\.higher_order\.(?!__)\w+")
FILE_READING_OPS = ("from_file",)
MODEL_NAME = re.compile(r"(?!__)[A-Za-z_]\w*")  # node and argument names become Python identifiers in FX
MODEL_FQN = re.compile(r"(?!__)[A-Za-z_]\w*(\.(?!__)[A-Za-z_0-9]\w*)*")  # parameter paths (`blocks.0.attn`)
MODEL_NAME_KEYS = frozenset({"name", "as_name"})
MODEL_FQN_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name"})
MODEL_CODE_KEYS = {  # keys whose presence means torch would evaluate text: what each one does
    "expr_str": "a symbolic size torch evaluates with sympy.sympify",
    "as_custom_obj": "a custom object",
}
MODEL_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # \r ends a line of FX's generated code


class _Refused(Exception):
    """Raised inside the load when torch reaches a path the archive check should have kept it from."""


def refuse_model(what: str, detail: str) -> CandidateError:
    return CandidateError("crash", f"the exported model holds {what} ({detail}): not loaded")


def read_model_file(path: Path) -> bytes:
    """The archive's bytes, read once (a process left behind cannot swap the file after the check), from a
    regular file no larger than MODEL_MAX_BYTES (not a FIFO that never ends, nor a link to /dev/zero)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise CandidateError("crash", f"no loadable model from train.py ({exc.strerror}: {path.name})") from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CandidateError("crash", f"no loadable model from train.py ({path.name} is not a regular file)")
        size = info.st_size
        if size <= MODEL_MAX_BYTES:
            data = fh.read(MODEL_MAX_BYTES + 1)  # a file that grew since fstat is caught below
            size = len(data)
    if size > MODEL_MAX_BYTES:
        raise refuse_model("too many bytes", f"{size / 2**30:.1f} GiB, over {MODEL_MAX_BYTES / 2**30:g} GiB")
    return data


def model_members(data: bytes) -> dict[str, bytes]:
    """The archive's members by name under its root folder, after bounding their number and sizes from the
    central directory. Only stored (uncompressed) members are accepted, as torch writes them: a member then
    cannot expand beyond the archive's own size, so no decompression bomb."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
        if len(infos) > MODEL_MAX_MEMBERS:
            raise refuse_model("too many files", f"{len(infos)} members, over {MODEL_MAX_MEMBERS}")
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise refuse_model("duplicate members", "two entries share a name")
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or not all("/" in name for name in names):
            raise refuse_model("no single root folder", f"{len(roots)} top-level names")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise refuse_model("compressed members", f"{info.filename}: torch stores members uncompressed")
        if sum(info.file_size for info in infos) > len(data):
            raise refuse_model("members larger than the archive", f"{len(infos)} members")
        return {name.split("/", 1)[1]: archive.read(name) for name in names if not name.endswith("/")}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CandidateError("crash", f"no loadable model from train.py ({first_line(exc)})") from exc


def model_json(members: dict[str, bytes], name: str):
    body = members.get(name)
    if body is None:
        raise CandidateError("crash", f"no loadable model from train.py ({name} missing from {MODEL_FILE})")
    if len(body) > MODEL_MAX_JSON_BYTES:
        raise refuse_model("an oversized config", f"{name}: {len(body)} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise CandidateError("crash", f"no loadable model from train.py ({name}: {first_line(exc)})") from exc


def check_payload_config(members: dict[str, bytes], name: str, folder: str) -> None:
    """Every weight or constant is raw tensor bytes: none pickled, none a custom or opaque object."""
    config = model_json(members, name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise CandidateError("crash", f"no loadable model from train.py ({name} has no config)")
    for fqn, meta in entries.items():
        path = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path, str):
            raise CandidateError("crash", f"no loadable model from train.py ({name}: {fqn!r} has no file)")
        if meta.get("use_pickle") is not False:
            raise refuse_model("pickled objects", f"{folder}{path}, for {fqn!r}")
        if not MODEL_TENSOR_MEMBER.fullmatch(folder + path) or folder + path not in members:
            raise refuse_model("objects other than tensors", f"{folder}{path}, for {fqn!r}")
        if not isinstance(meta.get("tensor_meta"), dict) or not MODEL_FQN.fullmatch(fqn):
            raise refuse_model("objects other than tensors", f"{folder}{path}, for {fqn!r}")


def check_graph_json(graph: dict) -> None:
    """The serialized program: static shapes, aten (and higher-order) operators, names that are names, and
    no text that torch would evaluate (guards, symbolic expressions) or that would break FX's code lines."""
    if not isinstance(graph, dict):
        raise CandidateError("crash", "no loadable model from train.py (models/model.json is not an object)")
    if graph.get("guards_code"):
        raise refuse_model("code torch would run on loading", "guards_code")
    if graph.get("range_constraints"):
        raise refuse_model("code torch would run on loading", "symbolic shapes in range_constraints")
    stack = [graph]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in MODEL_CODE_KEYS:
                raise refuse_model("code torch would run on loading", MODEL_CODE_KEYS[key])
            if isinstance(value, str):
                check_graph_string(key, value)
            else:
                stack.append(value)


def check_graph_string(key: str, value: str) -> None:
    if MODEL_CONTROL_CHARS.search(value):
        raise refuse_model("code torch would run on loading", f"a control character in {key}")
    if key == "target" and not MODEL_TARGET.fullmatch(value):
        raise refuse_model("code torch would run on loading", f"the operator {value[:80]!r}")
    if key in MODEL_NAME_KEYS and value and not MODEL_NAME.fullmatch(value):
        raise refuse_model("code torch would run on loading", f"the name {value[:80]!r}")
    if key in MODEL_FQN_KEYS and not MODEL_FQN.fullmatch(value):
        raise refuse_model("code torch would run on loading", f"the name {value[:80]!r}")


def safe_model_archive(data: bytes) -> bytes:
    """Check an exported model's archive and return a copy torch can load without running anything from it:
    only the checked members, and empty sample inputs (torch unpickles them, and falls back to the full
    unpickler when the safe one fails; an empty record loads as none). Raises CandidateError."""
    members = model_members(data)
    for name in members:
        if name not in MODEL_FIXED_MEMBERS and not MODEL_TENSOR_MEMBER.fullmatch(name):
            what = "pickled objects" if name.endswith((".pt", ".pkl")) or "_obj_" in name else "other files"
            raise refuse_model(what, name)
    check_payload_config(members, "data/weights/model_weights_config.json", "data/weights/")
    check_payload_config(members, "data/constants/model_constants_config.json", "data/constants/")
    check_graph_json(model_json(members, "models/model.json"))
    members["data/sample_inputs/model.pt"] = b""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, body in members.items():
            archive.writestr(f"model/{name}", body)
    return out.getvalue()


@contextlib.contextmanager
def no_unpickling():
    """Defence in depth for the load: every unpickler torch's loader calls refuses. The archive check keeps
    torch off these paths; this catches one it missed or a torch that grew another. Not thread-safe: the
    harness loads in its only thread."""
    import torch
    from torch.export.pt2_archive import _package

    def refuse(*args, **kwargs):
        raise _Refused("torch tried to unpickle part of the archive")

    class NoPickle:
        loads = load = staticmethod(refuse)

    saved = torch.load, torch._C._pickle_load_obj, _package.pickle
    torch.load, torch._C._pickle_load_obj, _package.pickle = refuse, refuse, NoPickle
    try:
        yield
    finally:
        torch.load, torch._C._pickle_load_obj, _package.pickle = saved


def check_loaded_graph(program) -> None:
    """What will run: only aten and higher-order operators in every (sub)graph, whatever the text said, and
    the getitem torch itself adds to unpack an operator's several outputs."""
    import operator

    import torch

    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            target = node.target
            allowed = node.op in ("placeholder", "output", "get_attr") or (
                node.op == "call_function"
                and (
                    target is operator.getitem
                    or isinstance(target, torch._ops.HigherOrderOperator)
                    or (
                        isinstance(target, torch._ops.OpOverload)
                        and target.namespace == "aten"
                        and target._opname not in FILE_READING_OPS
                    )
                )
            )
            if not allowed:
                raise refuse_model("code torch would run on loading", f"{node.op} {str(target)[:80]}")


def load_model(io_dir: Path, device: str):
    import torch

    try:
        archive = safe_model_archive(read_model_file(io_dir / MODEL_FILE))
        with no_unpickling():
            program = torch.export.load(io.BytesIO(archive))
        report = json.loads((io_dir / "report.json").read_text())
    except CandidateError:
        raise
    except _Refused as exc:
        raise refuse_model("pickled objects", str(exc)) from exc
    except Exception as exc:  # a missing or damaged file, whatever torch raises for it
        raise CandidateError("crash", f"no loadable model from train.py ({first_line(exc)})") from exc
    if not isinstance(report, dict):
        raise CandidateError("crash", f"report.json holds a {type(report).__name__}, not an object")
    check_loaded_graph(program)
    # Tied weights are one storage under two names: count it once.
    tensors = {t.untyped_storage().data_ptr(): t for t in program.state_dict.values() if isinstance(t, torch.Tensor)}
    n_params = sum(t.numel() for t in tensors.values())
    context = report.get("context_length")
    if not isinstance(context, int) or context < 1:
        raise CandidateError("crash", f"context_length must be a positive int, got {context!r}")
    return program.module().to(device), context, n_params, report


# -- the harness -------------------------------------------------------------------------------------------
def evaluate(
    task: LMTask,
    train_path: Path,
    *,
    data: str | None = None,
    seed: int = 0,
    budget: float | None = None,
    device: str | None = None,
    clock: str | None = None,
    private_out: str | None = None,
    pgid_file: str | None = None,
    log=None,
) -> dict:
    """Train and score `train_path`; return the block as a dict (never raises for candidate faults; raises
    DataError for a budget below the minimum)."""
    import torch

    started = time.monotonic()
    text = task.load(data)
    train, val, heldout = split(task, text)
    device = device or pick_device()
    threads = cpu_threads()
    torch.set_num_threads(threads)
    budget = float(budget if budget is not None else task.budget_seconds.get(device, task.budget_seconds["cpu"]))
    clock = clock or ("cpu" if device == "cpu" else "wall")
    check_budget(budget, clock, threads)
    job = {
        "device": device,
        "threads": threads,
        "budget_seconds": budget,
        "clock": clock,
        "seed": seed,
        "eval_batch": EVAL_BATCH,
        "kill_slack_seconds": KILL_SLACK_SECONDS,
        "min_train_fraction": MIN_TRAIN_FRACTION,
        "memory_bytes": sandbox.memory_cap_bytes(),
    }
    block: dict = {LM_BLOCK_KEY: math.nan, f"{LM_BLOCK_KEY}_se": math.nan}
    status, error, times, report, n_params, scores = "ok", "", {}, {}, 0, []
    try:
        with tempfile.TemporaryDirectory(prefix="autoresearch-lm-") as tmp:
            io_dir = Path(tmp)
            train.tofile(io_dir / "train.bin")
            times = run_candidate(train_path, io_dir, job, log or sys.stderr.buffer, pgid_file)
            # The ratchet allows the harness the child's cap plus SCORING_SECONDS: scoring gets what is left.
            deadline = time.monotonic() + SCORING_SECONDS - SCORING_RESERVE_SECONDS
            model, context, n_params, report = load_model(io_dir, device)
        if context > task.max_context:
            raise CandidateError("crash", f"context_length {context} is over the task's {task.max_context}")
        nats, inputs, reference = byte_nats(model, val, context, device, deadline)
        check_causal(model, inputs, reference, device, seed, deadline)
        scores = chunk_bpb(nats, task.n_chunks)
        block[LM_BLOCK_KEY] = bits_per_byte(nats)
        block[f"{LM_BLOCK_KEY}_se"] = float(np.std(scores, ddof=1) / math.sqrt(len(scores)))
        if private_out:
            held_nats, _, _ = byte_nats(model, heldout, context, device, deadline)
            write_private(private_out, held_nats, task.n_chunks)
    except CandidateError as exc:
        status, error = exc.status, str(exc)
    except Exception as exc:  # the model's own code raising while it is scored in this process
        status, error = "crash", f"scoring failed: {first_line(exc)}"
    times = times or job.get("measured", {})
    seconds = times.get("cpu_seconds", math.nan) / threads if clock == "cpu" else times.get("wall_seconds", math.nan)
    tokens = reported_count(report, "tokens")
    mfu = math.nan
    if status == "ok" and tokens and n_params and seconds > 0:
        mfu = 100 * 6 * n_params * tokens / seconds / matmul_flops_per_second(device, threads)
    block.update(
        status=status,
        training_seconds=round(seconds, 2) if math.isfinite(seconds) else "nan",
        wall_seconds=round(times.get("wall_seconds", math.nan), 2),
        cpu_seconds=round(times.get("cpu_seconds", math.nan), 2),
        total_seconds=round(time.monotonic() - started, 2),
        tokens_per_second=round(tokens / seconds) if tokens and seconds > 0 else 0,
        num_steps=reported_count(report, "num_steps"),
        num_params=n_params,
        mfu_percent=round(mfu, 2) if math.isfinite(mfu) else "nan",
        peak_memory_mb=round(proc.peak_child_memory_mb(), 1),
        device=device,
        threads=threads,
        clock=clock,
        budget_seconds=budget,
        timeout_seconds=round(harness_timeout(budget, clock)),
        seed=seed,
        val_bytes=len(val),
        task=task.name,
        metric=LM_BLOCK_KEY,
        direction="lower",
        keep_rule=KEEP_RULE,
        fold_scores=[round(block[LM_BLOCK_KEY], 6)] if status == "ok" else "none",
    )
    if error:
        block["error"] = error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"
    return block


def first_line(exc: BaseException) -> str:
    """`Type: the first non-empty line of the message`: torch's errors put the cause first, then pages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def write_private(path: str, nats: np.ndarray, n_chunks: int) -> None:
    """Held-out figures for the morning review (bpb, and per-chunk bpb for an interval); never printed."""
    record = {
        "heldout_bpb": bits_per_byte(nats),
        "heldout_bpb_values": chunk_bpb(nats, n_chunks),
        "heldout_bytes": int(len(nats)),
    }
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def main(task: LMTask, default_train: Path, argv: list[str] | None = None) -> int:
    """The harness CLI every language-model prepare.py exposes; prints the summary block on stdout."""
    parser = argparse.ArgumentParser(description=f"Frozen harness of the {task.name} task.")
    parser.add_argument("--train", default=None, help="the candidate file (default: the task's train.py)")
    parser.add_argument("--data", default=None, help="a local copy of the text")
    parser.add_argument("--seed", type=int, default=0, help="the seed handed to train(); reruns use others")
    parser.add_argument("--budget", type=float, default=None, help="training budget in seconds (default per device)")
    parser.add_argument("--device", choices=["cpu", "mps", "cuda"], default=None, help="default: the best available")
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="budget clock (default: CPU time on a CPU, wall time elsewhere); for benchmarks",
    )
    parser.add_argument("--private-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pgid-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--check-data", action="store_true", help="fetch and check the text, then exit")
    parser.add_argument(contract.CAPABILITIES_FLAG, action="store_true", help="print what this harness supports")
    args = parser.parse_args(argv)
    proc.hide_from_peers()
    try:
        if args.capabilities:
            print(CAPABILITIES.dumps())
            return 0
        if args.check_data:
            train, val, heldout = split(task, task.load(args.data))
            sizes = f"{len(train)} train / {len(val)} validation / {len(heldout)} held-out bytes"
            print(f"data: {task.name} ok, {sizes}")
            return 0
        train_path = Path(args.train) if args.train else default_train
        if not train_path.is_file():
            raise DataError(f"{train_path}: no such file")
        if args.budget is not None:  # before torch is imported: a refusal in a second, not after ten
            check_budget(args.budget, args.clock or ("cpu" if args.device == "cpu" else None), cpu_threads())
        block = evaluate(
            task,
            train_path,
            data=args.data,
            seed=args.seed,
            budget=args.budget,
            device=args.device,
            clock=args.clock,
            private_out=args.private_out,
            pgid_file=args.pgid_file,
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stderr.flush()
    sys.stdout.write(contract.render(block, CAPABILITIES.family))
    sys.stdout.flush()
    return 0
