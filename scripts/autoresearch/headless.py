"""Run a tagged loop with no one watching: `claude -p "/autoresearch TAG ..."` until a stop condition holds.

The session's events (stream-json) go to `.git/autoresearch/<tag>/headless.jsonl`; the ratchet's one-line
results are echoed to stdout. A session that ends early (an API error, a turn limit) while the run should go
on is relaunched, and resumes the run, as long as the last one added rows. The exit code says how it ended:
0 a stop condition (printed, with what the model cost), 1 the client ended without one, 2 could not start
(no client, or a client that cannot authenticate: checked before anything is launched).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

from autoresearch import cost

SETTINGS = ".claude/settings.json"  # passed with --settings: its allow rules then apply without the trust dialog
LOG_NAME = cost.HEADLESS_LOG  # in the run folder under .git: never in the tree, never committed
# Any of these in the environment is a credential the client uses without a login (a server's usual way).
CREDENTIAL_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
AUTH_STATUS_SECONDS = 30  # `claude auth status` is offline and answers in about 0.4 s; this is for a loaded host
NOT_LOGGED_IN = "claude is not logged in: set ANTHROPIC_API_KEY (a server) or run claude and /login once"
LOGIN_WORDS = ("Not logged in", "/login", "Invalid API key")  # a session's text that means the same thing
# The client reads .claude/settings.json twice: as the project's settings, whose allow rules it drops in a folder
# without a trust record (and says so on stderr), and as the --settings file, whose rules apply. Its line about
# the first is replaced by this one, so a person reading cron mail is not told the rules do not apply.
UNTRUSTED_NOTE = re.compile(
    r"^Ignoring \d+ permissions\.allow entr(y|ies) from \.claude/settings\.json: .*not been trusted"
)
TRUST_NOTE = (
    "autoresearch: claude skips the allow rules of .claude/settings.json as project settings (this folder has no "
    "trust record); the same rules apply, passed with --settings"
)
RELAUNCHES_WITHOUT_PROGRESS = 1  # a relaunched session that adds no row means something needs a person
ECHOED = ("iter ", "run ", "error:")  # the ratchet's own lines, worth a line in cron mail or tmux


class HeadlessError(Exception):
    pass


def find_claude() -> str:
    found = shutil.which(os.environ.get("CLAUDE_BIN") or "claude")
    if not found:
        raise HeadlessError("no `claude` on PATH (install Claude Code, or set CLAUDE_BIN to its path)")
    return found


def check_credentials(claude: str, env: dict[str, str] | None = None) -> None:
    """Refuse (HeadlessError) when the client has nothing to authenticate with: no key or token in the
    environment and `claude auth status` says not logged in. A client too old to answer is let through."""
    env = dict(os.environ if env is None else env)
    if any(env.get(name) for name in CREDENTIAL_ENV):
        return
    try:
        done = subprocess.run(
            [claude, "auth", "status", "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=AUTH_STATUS_SECONDS,
            env=env,
        )
        status = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return  # no answer to go by: the session itself will say, and the final line repeats it
    if isinstance(status, dict) and status.get("loggedIn") is False:
        raise HeadlessError(NOT_LOGGED_IN)


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
    return [line for line in cost.tool_result_lines(event) if line.startswith(ECHOED)]


def relay_stderr(stream: TextIO, err: TextIO) -> None:
    """The client's stderr, line by line, with its untrusted-folder note replaced by what it means here."""
    explained = False
    for line in stream:
        if UNTRUSTED_NOTE.match(line):
            if not explained:
                print(TRUST_NOTE, file=err, flush=True)
            explained = True
            continue
        err.write(line)
        err.flush()


def run_session(command: list[str], root: Path, log: TextIO, out: TextIO, err: TextIO | None = None) -> dict:
    """One claude session; returns its final `result` event ({} if it printed none)."""
    result: dict = {}
    proc = subprocess.Popen(
        command,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    relay = threading.Thread(target=relay_stderr, args=(proc.stderr, err or sys.stderr), daemon=True)
    relay.start()
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
        relay.join(timeout=5)  # the client's last stderr lines come before the runner's final line
    result.setdefault("exit_code", proc.returncode)
    return result


def how_it_ended(result: dict) -> str:
    """How a session ended, in words: the result's subtype says "success" even for "Not logged in" (is_error
    and the exit code say otherwise), so "success" is never shown."""
    subtype = str(result.get("subtype") or "")
    failed = bool(result.get("is_error")) or result.get("exit_code") not in (0, None) or subtype.startswith("error")
    words = [f"with {subtype}" if subtype and subtype != "success" else "with an error" if failed else "normally"]
    if result.get("exit_code"):
        words.append(f"exit code {result['exit_code']}")
    return ", ".join(words)


def what_it_said(result: dict, log_path: Path) -> str:
    """The session's last text, on one line (with what to do when it says the client is not logged in), or
    where to look when it said nothing."""
    said = " ".join(str(result.get("result") or "").split())[:300]
    if any(word in said for word in LOGIN_WORDS):
        said += f" ({NOT_LOGGED_IN.split(': ', 1)[1]})"
    return said or f"no result from the client; see {log_path}"


def cost_text(root: Path, tag: str) -> str:
    """`; model: 12 requests, ...` for the final line, or nothing when no request was recorded."""
    from autoresearch import ledger
    from autoresearch.gitops import Repo
    from autoresearch.runs import run_dir

    repo = Repo(root)
    rows = [r for r in ledger.run_rows(run_dir(repo, tag) / "results.tsv", tag) if r.get("iter") != "0"]
    kept = sum(r.get("status") == "keep" for r in rows)
    shown = cost.figures(run_dir(repo, tag), len(rows), kept)
    return f"; model: {shown['line']}" if shown and (shown.get("requests") or shown.get("error")) else ""


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
    claude = find_claude()
    check_credentials(claude)
    command = claude_command(claude, root, tag, start_args, max_turns)
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
                return 0, f"autoresearch {tag}: stopped: {reason}{cost_text(root, tag)}"
            ended, said = how_it_ended(result), what_it_said(result, log_path)
            if not exists:
                return 1, f"autoresearch {tag}: the run did not start (claude ended {ended}): {said}"
            idle = 0 if rows > rows_before else idle + 1
            if idle > RELAUNCHES_WITHOUT_PROGRESS:
                return 1, (
                    f"autoresearch {tag}: claude ended {ended}, with no stop condition and no new "
                    f"iteration: {said}{cost_text(root, tag)} (session log: {log_path})"
                )
            print(
                f"autoresearch {tag}: claude ended {ended} before a stop condition; relaunching",
                file=out,
                flush=True,
            )
