"""The candidate's side of the language-model trust boundary: the only process that imports train.py.

Run by the frozen harness as `python -m autoresearch.lm_child TRAIN_PY IO_DIR`. Before anything else it caps
its own CPU time with the kernel (RLIMIT_CPU: the budget, all in, imports and export included), then it reads
the training bytes (the only text it is shown), calls `train(...)`, and exports the returned model with
torch.export at the harness's evaluation shape. Nothing written here is trusted: the harness measures the
time itself, loads the exported graph in its own process, checks it is causal and scores it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from autoresearch.sandbox import cap_memory


def cap_cpu_seconds(limit: float, slack: float) -> None:
    """SIGXCPU at `limit` CPU-seconds of this process (all threads), SIGKILL `slack` later."""
    soft = max(1, int(limit + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + max(1, int(slack))))


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """The budget as train.py sees it, in seconds of the machine: CPU time over the threads on a CPU, wall
    time elsewhere. Counted from this process's start, so imports and the export come out of it too."""

    def __init__(self, budget_seconds: float, clock: str, threads: int, started: float):
        self.budget, self.clock, self.threads, self.started = budget_seconds, clock, threads, started

    def spent(self) -> float:
        if self.clock == "cpu":
            return process_cpu_seconds() / self.threads
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.budget - self.spent()

    def fraction(self) -> float:
        return min(1.0, self.spent() / self.budget)


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
    # The first torch.export in a process costs ~5 CPU-s of imports; pay it before train() reads the clock,
    # so the export at the end fits in the few seconds a train.py keeps in reserve.
    torch.export.export(torch.nn.Linear(1, 1), (torch.zeros(1, 1),))
    device = torch.device(job["device"])
    data = torch.from_numpy(np.fromfile(io / "train.bin", dtype=np.uint8))
    spec = importlib.util.spec_from_file_location("train", train_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "train", None)):
        raise AttributeError(f"{Path(train_path).name} must define train(data, device, clock, seed)")
    clock = Clock(job["budget_seconds"], job["clock"], job["threads"], started)
    result = module.train(data, device, clock, job["seed"])
    model, context = result["model"], int(result["context_length"])
    model.eval()
    example = torch.zeros(job["eval_batch"], context, dtype=torch.long, device=device)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    torch.export.save(exported, io / "model.pt2")
    report = {k: result.get(k) for k in ("num_steps", "tokens")}
    (io / "report.json").write_text(json.dumps({**report, "context_length": context}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
