"""How long each Claude Code hook takes per call (it runs before every tool call), off a run and during one.

    uv run benchmarks/hook_latency.py [N]

Builds a throwaway repository with a run record (no harness run: the hooks only read the record and the
ledger), then times N calls of scripts/hook.py per event, with the venv's python (what .claude/settings.json
runs) and through `uv run --no-sync` (the alternative), and prints `key: value` lines in milliseconds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoresearch import hooks, ledger
from autoresearch.gitops import Repo
from autoresearch.runs import RunConfig, run_dir, save_config

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "scripts" / "hook.py"
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
RULE_CALLS = 1000  # in-process calls: microseconds each, so many are cheap


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=repo, check=True, capture_output=True
    )


def make_run(repo: Path) -> None:
    for name in ("prepare.py", "train.py"):
        (repo / name).write_text((ROOT / name).read_text())
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "task")
    git(repo, "checkout", "-qb", "autoresearch/bench")
    handle = Repo(repo)
    config = RunConfig("bench", ".", handle.head(), "val_auc", True, 60.0, "2026-01-01T00:00:00+00:00", max_iters=100)
    save_config(handle, config)
    book = ledger.Ledger(repo / "results.tsv", run_dir(handle, "bench") / "results.tsv", "val_auc")
    book.append(
        {
            "commit": handle.head()[:7],
            "val_auc": 0.88,
            "memory_gb": 0.1,
            "status": "keep",
            "description": "baseline",
            "iter": 0,
            "tag": "bench",
            "timestamp": config.created,
        }
    )


def time_calls(command: list[str], event_name: str, event: dict, project: Path) -> float:
    env = {**os.environ, "CLAUDE_PROJECT_DIR": str(project)}
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        subprocess.run(
            [*command, str(HOOK), event_name],
            input=json.dumps(event),
            capture_output=True,
            text=True,
            env=env,
            cwd=project,
            check=True,
        )
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        off, on = Path(tmp) / "off", Path(tmp) / "on"
        off.mkdir(), on.mkdir()
        git(off, "init", "-q", "-b", "main")
        make_run(on)
        edit = {"tool_name": "Edit", "tool_input": {"file_path": str(on / "train.py")}, "cwd": str(on)}
        shell = {"tool_name": "Bash", "tool_input": {"command": "git reset --hard HEAD~1"}, "cwd": str(on)}
        # the longest shape the loop allows: a pipeline, each word resolved against the guarded folders
        piped = "uv run train.py 2>&1 | grep -n auc | head -n 20"
        allowed = {"tool_name": "Bash", "tool_input": {"command": piped}, "cwd": str(on)}
        runners = {
            "venv_python": [sys.executable],
            "uv_run_no_sync": ["uv", "run", "--no-sync", "--project", str(ROOT), "python"],
        }
        print(f"calls_per_figure: {CALLS}")
        start = time.perf_counter()
        for _ in range(CALLS):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"bare_python_start_ms: {(time.perf_counter() - start) * 1000 / CALLS:.0f}")
        cases = {
            "pre_tool_use_off_run": ("pre-tool-use", {**edit, "cwd": str(off)}, off),
            "pre_tool_use_edit": ("pre-tool-use", edit, on),
            "pre_tool_use_bash_deny": ("pre-tool-use", shell, on),
            "pre_tool_use_bash_allow": ("pre-tool-use", allowed, on),
            "stop": ("stop", {"stop_hook_active": False, "cwd": str(on)}, on),
            "session_start": ("session-start", {"source": "compact", "cwd": str(on)}, on),
        }
        for name, command in runners.items():
            for case, (event_name, event, project) in cases.items():
                print(f"{name}_{case}_ms: {time_calls(command, event_name, event, project):.0f}")
        state = hooks.run_state(on)  # the rules alone, without the interpreter's start-up
        for case, event in {"bash_allow": allowed, "bash_deny": shell, "edit": edit}.items():
            times = []
            for _ in range(RULE_CALLS):
                start = time.perf_counter()
                hooks.pre_tool_use(event, state)
                times.append((time.perf_counter() - start) * 1e6)
            print(f"rules_only_{case}_us: {statistics.median(times):.0f}")


if __name__ == "__main__":
    main()
