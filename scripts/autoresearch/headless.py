"""Run a tagged loop with no one watching: `claude -p "/autoresearch TAG ..."` until a stop condition holds.

The session's events (stream-json) go to `.git/autoresearch/<tag>/headless.jsonl`; the ratchet's one-line
results are echoed to stdout. A session that ends early (an API error, a turn limit) while the run should go
on is relaunched, and resumes the run, as long as the last one added rows. The exit code says how it ended:
0 a stop condition (printed), 1 the client ended without one, 2 could not start.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TextIO

SETTINGS = ".claude/settings.json"  # passed with --settings: its allow rules then apply without the trust dialog
LOG_NAME = "headless.jsonl"  # in the run folder under .git: never in the tree, never committed
RELAUNCHES_WITHOUT_PROGRESS = 1  # a relaunched session that adds no row means something needs a person
ECHOED = ("iter ", "run ", "error:")  # the ratchet's own lines, worth a line in cron mail or tmux


class HeadlessError(Exception):
    pass


def find_claude() -> str:
    found = shutil.which(os.environ.get("CLAUDE_BIN") or "claude")
    if not found:
        raise HeadlessError("no `claude` on PATH (install Claude Code, or set CLAUDE_BIN to its path)")
    return found


def claude_command(claude: str, root: Path, tag: str, start_args: list[str], max_turns: int | None) -> list[str]:
    prompt = " ".join(["/autoresearch", shlex.quote(tag), *map(shlex.quote, start_args)])
    command = [
        claude,
        "-p",
        prompt,
        "--settings",
        str(root / SETTINGS),
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    return command + (["--max-turns", str(max_turns)] if max_turns else [])


def echo_lines(event: dict) -> list[str]:
    """The ratchet's lines in one stream-json event (tool results of the agent's Bash calls)."""
    if event.get("type") != "user":
        return []
    out = []
    for block in (event.get("message") or {}).get("content") or []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            text = (
                content
                if isinstance(content, str)
                else "\n".join(c.get("text", "") for c in content or [] if isinstance(c, dict))
            )
            out += [line for line in text.splitlines() if line.startswith(ECHOED)]
    return out


def run_session(command: list[str], root: Path, log: TextIO, out: TextIO) -> dict:
    """One claude session; returns its final `result` event ({} if it printed none)."""
    result: dict = {}
    proc = subprocess.Popen(
        command, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            for shown in echo_lines(event):
                print(shown, file=out, flush=True)
            if event.get("type") == "result":
                result = event
        proc.wait()
    finally:
        if proc.poll() is None:  # Ctrl-C or an error here: the session must not go on unattended
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    result.setdefault("exit_code", proc.returncode)
    return result


def run_status(root: Path, tag: str) -> tuple[int, str | None, bool]:
    """(rows so far, stop reason or None, whether the run exists)."""
    from autoresearch import ledger, stopping
    from autoresearch.gitops import Repo
    from autoresearch.runs import load_config, run_dir

    repo = Repo(root)
    config = load_config(repo, tag)
    if config is None:
        return 0, None, False
    rows = ledger.run_rows(run_dir(repo, tag) / "results.tsv", tag)
    return len(rows), stopping.stop_reason(config, rows, run_dir(repo, tag)), True


def headless(
    root: Path, tag: str, start_args: list[str], *, max_turns: int | None = None, out: TextIO | None = None
) -> tuple[int, str]:
    """Run the loop until a stop condition; returns (exit code, the one line that says how it ended)."""
    from autoresearch.gitops import Repo
    from autoresearch.runs import check_tag, run_dir

    check_tag(tag)
    out = out or open(os.devnull, "w")
    command = claude_command(find_claude(), root, tag, start_args, max_turns)
    folder = run_dir(Repo(root), tag)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / LOG_NAME
    print(f"autoresearch {tag}: session log in {log_path}", file=out, flush=True)
    idle = 0
    with open(log_path, "a") as log:
        while True:
            rows_before, _, _ = run_status(root, tag)
            result = run_session(command, root, log, out)
            rows, reason, exists = run_status(root, tag)
            if reason:
                return 0, f"autoresearch {tag}: stopped: {reason}"
            ended = result.get("subtype") or f"exit code {result['exit_code']}"
            said = " ".join(str(result.get("result") or "").split())[:300]
            if not exists:
                return (
                    1,
                    f"autoresearch {tag}: the run did not start ({ended}): {said or 'see ' + str(log_path)}",
                )
            idle = 0 if rows > rows_before else idle + 1
            if idle > RELAUNCHES_WITHOUT_PROGRESS:
                return 1, (
                    f"autoresearch {tag}: claude ended ({ended}) with no stop condition and no new "
                    f"iteration; see {log_path}: {said}"
                )
            print(
                f"autoresearch {tag}: claude ended ({ended}) before a stop condition; relaunching",
                file=out,
                flush=True,
            )
