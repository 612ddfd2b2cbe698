"""What a session costs in model requests and bytes sent, measured through the real Claude Code client.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run --all-groups benchmarks/session_cost.py [--iters 4]

The client bundled with claude-agent-sdk runs `claude -p "/autoresearch TAG --max-iters N"` in a copy of this
working tree (heart task, the project's own .claude/ settings, slash command, hooks and program.md) against a
fake Messages API on 127.0.0.1. The fake plays an agent that follows program.md literally: the set-up in one
turn (read prepare.py and train.py, run `start`), then per iteration one Edit and one `try`. A first session
runs ITERS iterations and is cut by the turn limit, as a crash or a closed laptop would; a second session on
the same tag resumes the run and goes on to the cap. Prints a `key: value` block:

- setup_requests, setup_kb: requests (and the bytes of their bodies) up to the one answered with the first Edit
- resume_requests, resume_kb: the same for the session that resumes the run
- iteration_requests, iteration_kb: per iteration in steady state (mean over the first session)
- context_growth_kb_kept / _discarded: how much an iteration adds to the conversation every later request resends
Takes about 2 minutes on 2 cores (the baseline and ITERS + 1 scorings of the heart task).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from claude_runner import find_claude, run_claude  # noqa: E402
from fake_anthropic import FakeAnthropic, Text, ToolUse, tool_results  # noqa: E402

TAG = "bench"
C_VALUES = ["0.5", "0.05", "2.0", "0.2", "5.0", "0.1"]  # one idea per iteration: the regularisation strength
SIMPLER_ITERATION = 2  # this one drops `max_iter=MAX_ITER` instead: equal within noise and smaller, so KEPT
SESSION_TIMEOUT_SECONDS = 900  # a busy machine; the heart task's scorings are ~10 s each


def copy_working_tree(dest: Path) -> None:
    """The tracked files as they are now (uncommitted edits included) in a fresh repository."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    # its own environment: `uv run` in the copy installs the copy's package there, never in ours
    subprocess.run(["uv", "sync", "-q"], cwd=dest, check=True, env={**os.environ, "VIRTUAL_ENV": ""})
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    (dest / ".git" / "info" / "exclude").write_text(".venv\n")
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=dest, check=True)


def literal_agent(repo: Path, cap: int, first_iter: int):
    """program.md followed to the letter: set-up in one turn, then Edit and `try` in turn, one C per idea."""
    train, prepare = str(repo / "train.py"), str(repo / "prepare.py")

    def script(request: dict):
        turn = sum(1 for m in request.get("messages", []) if m.get("role") == "assistant")
        if turn == 0:
            return [
                ToolUse("Read", {"file_path": prepare}),
                ToolUse("Read", {"file_path": train}),
                ToolUse("Bash", {"command": f"uv run scripts/ratchet.py start {TAG} --max-iters {cap}"}),
            ]
        iteration = first_iter + (turn - 1) // 2
        if iteration > cap:
            return Text("The run is over: the iteration cap is reached.")
        source = Path(train).read_text()
        if iteration == SIMPLER_ITERATION and "max_iter=MAX_ITER" in source:
            old, new, hypothesis = "C=C, max_iter=MAX_ITER)", "C=C)", "lbfgs needs no raised max_iter"
        else:
            value = C_VALUES[(iteration - 1) % len(C_VALUES)]
            old = re.search(r"^C = .*$", source, flags=re.M).group(0)
            new, hypothesis = f"C = {value}  # inverse regularisation strength", f"regularisation C = {value}"
        if turn % 2 == 1:
            return ToolUse("Edit", {"file_path": train, "old_string": old, "new_string": new})
        return ToolUse("Bash", {"command": f'uv run scripts/ratchet.py try "{hypothesis}"'})

    return script


def body_bytes(body: dict) -> int:
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def messages_bytes(body: dict) -> int:
    return len(json.dumps(body.get("messages", []), separators=(",", ":"), ensure_ascii=False).encode())


def first_edit_index(requests: list[dict], api: FakeAnthropic) -> int:
    """How many requests the session sent up to and including the one answered with the first Edit."""
    for i, body in enumerate(requests):
        if any(isinstance(b, ToolUse) and b.name == "Edit" for b in api.reply_blocks(body)):
            return i + 1
    raise RuntimeError("the session never got to an edit")


def session(repo: Path, script, cap: int, max_turns: int | None) -> tuple[list[dict], FakeAnthropic, list]:
    """One `claude -p "/autoresearch ..."` session: (its agent-loop requests, the fake, all its requests)."""
    with FakeAnthropic(script) as api:
        run = run_claude(
            repo,
            f"/autoresearch {TAG} --max-iters {cap}",
            api.url,
            settings=repo / ".claude" / "settings.json",
            max_turns=max_turns,
            timeout=SESSION_TIMEOUT_SECONDS,
            output_format="stream-json",
            trust=False,
            extra_env={"VIRTUAL_ENV": "", **{k: v for k, v in os.environ.items() if k.startswith("AUTORESEARCH_")}},
        )
        if run.timed_out:
            raise RuntimeError("the session timed out")
        return api.main_requests(), api, api.message_requests()


def iteration_figures(requests: list[dict], setup: int) -> tuple[list[int], dict[str, list[float]]]:
    """Bytes sent per iteration, and conversation growth per iteration by its outcome."""
    sent, growth = [], {"KEPT": [], "DISCARDED": [], "CRASH": []}
    starts = list(range(setup - 1, len(requests), 2))  # the request answered with each iteration's Edit
    for a, b in zip(starts, starts[1:], strict=False):
        sent.append(body_bytes(requests[a]) + body_bytes(requests[a + 1]))
        line = tool_results(requests[b])[-1]["text"]
        outcome = next((s for s in growth if f"| {s} |" in line), None)
        if outcome:
            growth[outcome].append((messages_bytes(requests[b]) - messages_bytes(requests[a])) / 1000)
    return sent, growth


def mean(xs) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=4, help="iterations in the first session (default 4)")
    args = parser.parse_args()
    cap = args.iters + 2
    work = Path(tempfile.mkdtemp(prefix="session-cost-"))
    try:
        repo = work / "repo"
        repo.mkdir()
        copy_working_tree(repo)
        first, api1, all1 = session(repo, literal_agent(repo, cap, 1), cap, max_turns=1 + 2 * args.iters)
        setup = first_edit_index(first, api1)
        sent, growth = iteration_figures(first, setup)
        second, api2, all2 = session(repo, literal_agent(repo, cap, args.iters + 1), cap, max_turns=None)
        resume = first_edit_index(second, api2)
        for result in tool_results(first[-1]) + tool_results(second[-1]):  # the ratchet's lines, as the agent saw them
            print(
                *[line for line in result["text"].splitlines() if line.startswith(("run ", "iter "))], file=sys.stderr
            )
        rows = (repo / "results.tsv").read_text().splitlines()
        version = subprocess.run([find_claude(), "--version"], capture_output=True, text=True).stdout.strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "client": version,
        "setup_requests": setup,
        "setup_kb": round(sum(map(body_bytes, first[:setup])) / 1000, 1),
        "resume_requests": resume,
        "resume_kb": round(sum(map(body_bytes, second[:resume])) / 1000, 1),
        "iteration_requests": round((len(first) - setup + 1) / max(1, args.iters), 2),
        "iteration_kb": round(mean(sent) / 1000, 1),
        "context_growth_kb_kept": round(mean(growth["KEPT"]), 2),
        "context_growth_kb_discarded": round(mean(growth["DISCARDED"]), 2),
        "iterations_kept_discarded": f"{len(growth['KEPT'])}/{len(growth['DISCARDED'])}",
        "side_queries": len(all1) - len(first) + len(all2) - len(second),
        "first_session_kb": round(sum(map(body_bytes, first)) / 1000, 1),
        "results_rows": len(rows) - 1,
    }
    print("---")
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
