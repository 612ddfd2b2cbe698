"""What the language-model child spends after train() returns, in CPU-s: the figures behind its export reserve.

    uv run --extra lm benchmarks/lm_export_cost.py [--runs 3] [--threads 2]

Each run is a fresh interpreter that does what lm_child does (import torch, export the probe twice), then
exports the baseline GPT and the same GPT at 12 layers (the deepest model the reserve is sized for), and
ends either through the interpreter's teardown or as lm_child ends (os._exit). The parent reads the run's
whole CPU time from the kernel (wait4), so the teardown, which no process can time itself, is measured too.
Prints, per figure, the median and range over the runs, and the reserve the child would keep (8x the probe,
at least 1 s of the budget) against the 12-layer export.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from autoresearch.lm_child import export_reserve

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tasks" / "shakespeare" / "train.py"

CHILD = r"""
import importlib.util, json, os, resource, sys, tempfile
from pathlib import Path

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

out, mark = {}, cpu()
def lap(name):
    global mark
    now = cpu()
    out[name], mark = now - mark, now

import torch
torch.set_num_threads(int(sys.argv[3]))
from autoresearch.lm_child import export_model, probe_model
lap("import_torch")
folder = Path(tempfile.mkdtemp())
export_model(torch, probe_model(torch), 64, 8, "cpu", folder / "probe.pt2")
lap("probe_warm_up")
export_model(torch, probe_model(torch), 64, 8, "cpu", folder / "probe.pt2")
lap("probe")
spec = importlib.util.spec_from_file_location("baseline", sys.argv[1])
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)
export_model(torch, baseline.GPT().eval(), 64, baseline.CONTEXT_LENGTH, "cpu", folder / "baseline.pt2")
lap("baseline_export")
baseline.N_LAYER = 12
export_model(torch, baseline.GPT().eval(), 64, baseline.CONTEXT_LENGTH, "cpu", folder / "deep.pt2")
lap("12_layer_export")
for name in os.listdir(folder):
    os.unlink(folder / name)
os.rmdir(folder)
out["before_exit"] = cpu()
print(json.dumps(out), flush=True)
if sys.argv[2] == "os_exit":
    os._exit(0)
"""


def one_run(ending: str, threads: int) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(TRAIN), ending, str(threads)], stdout=subprocess.PIPE, text=True, env=env
    )
    figures = json.loads(child.stdout.read())
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"the measuring child failed ({status})")
    figures[f"exit_{ending}"] = usage.ru_utime + usage.ru_stime - figures.pop("before_exit")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runs = [one_run(ending, args.threads) for _ in range(args.runs) for ending in ("teardown", "os_exit")]
    names = list(dict.fromkeys(name for run in runs for name in run))
    print("--- CPU-s (median, min-max)")
    for name in names:
        values = [run[name] for run in runs if name in run]
        print(f"{name + ':':24s} {statistics.median(values):6.2f}  {min(values):.2f}-{max(values):.2f}")
    probe = statistics.median(run["probe"] for run in runs) / args.threads
    deep = max(run["12_layer_export"] + run["exit_os_exit"] for run in runs if "exit_os_exit" in run) / args.threads
    print(
        f"reserve at the median probe: {export_reserve(probe):.2f} s of the budget ({args.threads} threads); "
        f"the slowest 12-layer export + os._exit: {deep:.2f} s"
    )


if __name__ == "__main__":
    main()
