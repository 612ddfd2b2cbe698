"""The candidate's side of the language-model trust boundary: the only process that imports train.py.

Run by the frozen harness as `python -m autoresearch.lm_child TRAIN_PY IO_DIR`. Before anything else it caps
its own CPU time with the kernel (RLIMIT_CPU: the budget, all in, start-up and export included). Then it
starts torch, exports a probe model twice (the first pays torch.export's one-off imports, the second measures
what an export costs on this machine, under its present load), and keeps a multiple of that cost out of the
clock it hands `train()`: a train.py that stops when `clock.left()` reaches 0 leaves the export its time, at
any budget. A budget whose start-up and export reserve leave train() too small a share is refused here, with
the measured minimum, before train.py is loaded. Then it reads the training bytes (the only text it is
shown), calls `train(...)`, exports the returned model with torch.export at the harness's evaluation shape,
and ends without the interpreter's teardown (which, with torch loaded, cost more than the export itself).
Nothing written here is trusted: the harness measures the time itself, loads the exported graph in its
own process, checks it is causal and scores it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from autoresearch.sandbox import cap_memory

# Exit code of a child that refuses its budget before train.py is loaded; its last output line says why.
# Unusual on purpose: a train.py that exits with it only turns its crash into another crash message.
BUDGET_TOO_SMALL_EXIT = 86
# What is left of the budget when train() returns pays for the export, the save and the exit. The export's cost
# follows the graph's nodes; the child measures a probe (the baseline's graph at toy widths) and keeps a
# multiple of it. Measured here (2 cores, torch 2.x, CPU-s; benchmarks/lm_export_cost.py): the probe 0.3-0.8,
# the baseline's export 0.6-1.0, a 12-layer model's (421 nodes) 2.0-2.6; the interpreter's teardown after an
# export 1.65-1.95, which the child skips (os._exit: 0.12). So 8x the probe covers a graph 4x the baseline's
# with room for a machine that got busier between the probe and the export.
EXPORT_RESERVE_FACTOR = 8.0
EXPORT_RESERVE_MIN_SECONDS = 1.0  # a floor (clock units: s of the budget) for a probe measured too fast to
# trust (a coarse clock, a core that was briefly free); with the teardown in the clock a 4 s floor was needed
SUGGESTED_BUDGET_MARGIN = 1.25  # the minimum a refusal names is this much over what was measured, so a retry
# at that budget passes on a machine a little busier than when it was measured
PROBE_WIDTH, PROBE_HEADS, PROBE_CONTEXT, PROBE_LAYERS = 16, 2, 8, 3  # the baseline's graph at toy sizes


def cap_cpu_seconds(limit: float, slack: float) -> None:
    """SIGXCPU at `limit` CPU-seconds of this process (all threads), SIGKILL `slack` later."""
    soft = max(1, int(limit + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + max(1, int(slack))))


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spent_seconds(clock: str, threads: int, started: float) -> float:
    """Seconds of the budget spent since `started`: CPU time over the threads on a CPU clock, else wall."""
    if clock == "cpu":
        return process_cpu_seconds() / threads
    return time.monotonic() - started


class Clock:
    """The budget as train.py sees it, in seconds of the machine: CPU time over the threads on a CPU, wall
    time elsewhere. Counted from this process's start, so start-up comes out of it too; `reserved` seconds
    (the measured export, times a margin) are kept back, so `left()` reaches 0 while the export still fits.
    `fraction()` is the share of train()'s own time spent: 0 when train() is called, 1 when left() is 0."""

    def __init__(self, budget_seconds: float, clock: str, threads: int, started: float, reserved: float = 0.0):
        self.budget, self.clock, self.threads, self.started = budget_seconds, clock, threads, started
        self.reserved = reserved
        self.origin = self.spent()

    def spent(self) -> float:
        return spent_seconds(self.clock, self.threads, self.started)

    def left(self) -> float:
        return self.budget - self.reserved - self.spent()

    def fraction(self) -> float:
        span = self.budget - self.reserved - self.origin
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (self.spent() - self.origin) / span))


def probe_model(torch):
    """A byte GPT with the baseline's layers and ops (embedding, layer norm, causal SDPA, GELU MLP, tied head)
    at toy widths: torch.export's cost follows the graph's nodes, not the weights' sizes."""
    nn, functional = torch.nn, torch.nn.functional
    width, heads = PROBE_WIDTH, PROBE_HEADS

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
            q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))
            y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.mlp(self.ln2(x))

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(256, width), nn.Embedding(PROBE_CONTEXT, width)
            self.blocks = nn.Sequential(*[Block() for _ in range(PROBE_LAYERS)])
            self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, 256, bias=False)
            self.head.weight = self.tok.weight

        def forward(self, idx):
            x = self.blocks(self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device)))
            return self.head(self.ln_f(x))

    return Probe().eval()


def export_model(torch, model, batch: int, context: int, device, path: Path) -> None:
    example = torch.zeros(batch, context, dtype=torch.long, device=device)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    torch.export.save(exported, path)


def measure_export(torch, job: dict, device, io: Path, started: float) -> float:
    """Export + save a probe twice; return the second one's cost in budget seconds. The first pays the
    one-off imports (~10 CPU-s here without compiled bytecode), so the final export does not."""
    path = io / "probe.pt2"
    cost = 0.0
    for _ in range(2):
        before = spent_seconds(job["clock"], job["threads"], started)
        export_model(torch, probe_model(torch).to(device), job["eval_batch"], PROBE_CONTEXT, device, path)
        cost = spent_seconds(job["clock"], job["threads"], started) - before
    path.unlink(missing_ok=True)
    return cost


def export_reserve(probe_seconds: float) -> float:
    return max(EXPORT_RESERVE_MIN_SECONDS, EXPORT_RESERVE_FACTOR * probe_seconds)


def budget_refusal(budget: float, start_up: float, reserved: float, min_train_fraction: float) -> str | None:
    """Why the budget is too small to train and export, naming the minimum; None when train() gets at least
    `min_train_fraction` of it. All figures in budget seconds (CPU-s over the threads on a CPU)."""
    if budget - start_up - reserved >= min_train_fraction * budget:
        return None
    minimum = math.ceil(SUGGESTED_BUDGET_MARGIN * (start_up + reserved) / (1 - min_train_fraction))
    return (
        f"--budget {budget:g} is too small here: starting torch took {start_up:.1f} s of it and "
        f"{reserved:.1f} s are kept for the export, leaving train() under {min_train_fraction:.0%}; "
        f"use --budget {minimum} or more"
    )


def exit_now(code: int = 0) -> None:
    """End the process without the interpreter's teardown: with torch and torch.export loaded it cost
    1.65-1.9 CPU-s here, more than the export, and it runs on the budget's clock after the export. The files
    are written and closed; only the standard streams need flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(train_path: str, io_dir: str) -> None:
    started = time.monotonic()
    io = Path(io_dir)
    job = json.loads((io / "job.json").read_text())
    cap_memory(int(job.get("memory_bytes", 0)))
    if job["clock"] == "cpu":
        cap_cpu_seconds(job["budget_seconds"] * job["threads"], job["kill_slack_seconds"])
    import importlib.util

    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    probe = measure_export(torch, job, device, io, started)
    reserved = export_reserve(probe)
    data = torch.from_numpy(np.fromfile(io / "train.bin", dtype=np.uint8))
    clock = Clock(job["budget_seconds"], job["clock"], job["threads"], started, reserved)
    refusal = budget_refusal(clock.budget, clock.origin, reserved, job["min_train_fraction"])
    if refusal:
        print(refusal, flush=True)
        exit_now(BUDGET_TOO_SMALL_EXIT)  # the teardown could take it past the budget: a kill, not this line
    print(
        f"harness: start-up {clock.origin:.1f} s of the {clock.budget:g} s budget, {reserved:.1f} s kept for the "
        f"export (a probe's took {probe:.2f} s): train() has {clock.left():.1f} s ({job['clock']} clock)",
        flush=True,
    )
    spec = importlib.util.spec_from_file_location("train", train_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "train", None)):
        raise AttributeError(f"{Path(train_path).name} must define train(data, device, clock, seed)")
    result = module.train(data, device, clock, job["seed"])
    model, context = result["model"], int(result["context_length"])
    model.eval()
    export_model(torch, model, job["eval_batch"], context, device, io / "model.pt2")
    report = {k: result.get(k) for k in ("num_steps", "tokens")}
    (io / "report.json").write_text(json.dumps({**report, "context_length": context}))


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except SystemExit:
        raise
    except BaseException:  # train.py's crash: its traceback, then the same exit without the teardown
        traceback.print_exc()
        exit_now(1)
    exit_now(0)
