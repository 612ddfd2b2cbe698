"""Ratchet overhead per iteration: the `try` command's wall time minus the harness's. Prints figures.

Builds a throwaway repository with the heart task, starts a run, then times N `try` calls that alternate two
edits (each is a real iteration: commit, score, decide, row, keep or reset). The harness's own time is the
`N.N s` the ratchet prints; what is left is the ratchet's: interpreter and imports, git, the ledger, fsyncs.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/ratchet_overhead.py [--iterations 20]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDITS = [("C = 1.0", "C = 0.5"), ("C = 1.0", "C = 2.0")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for name in ("prepare.py", "train.py", ".gitignore"):
            shutil.copy(ROOT / name, repo / name)

        def git(*a):
            subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)

        git("init", "-q", "-b", "main")
        git("add", "-A")
        git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "task")
        ratchet = [sys.executable, str(ROOT / "scripts" / "ratchet.py")]
        subprocess.run([*ratchet, "start", "bench"], cwd=repo, check=True, capture_output=True)
        overheads, walls = [], []
        source = (repo / "train.py").read_text()
        for i in range(args.iterations):
            (repo / "train.py").write_text(source.replace(*EDITS[i % 2]))
            started = time.monotonic()
            out = subprocess.run([*ratchet, "try", f"edit {i}"], cwd=repo, capture_output=True, text=True)
            wall = time.monotonic() - started
            harness = float(re.search(r"\| ([\d.]+) s —", out.stdout).group(1))
            walls.append(wall)
            overheads.append(wall - harness)
            source = (repo / "train.py").read_text()
    print("---")
    print(f"iterations:              {args.iterations}")
    print(f"median_iteration_s:      {statistics.median(walls):.2f}")
    print(f"median_overhead_s:       {statistics.median(overheads):.2f}")
    print(f"max_overhead_s:          {max(overheads):.2f}")


if __name__ == "__main__":
    main()
