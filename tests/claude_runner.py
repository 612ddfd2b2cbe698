"""Run the real Claude Code CLI (bundled in the claude-agent-sdk wheel) offline
against a fake Messages API, in a clean, throwaway environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["find_claude", "clean_env", "mark_trusted", "run_claude", "ClaudeRun"]


def find_claude() -> str:
    """$CLAUDE_BIN, else the binary bundled with claude_agent_sdk, else `claude` on PATH."""
    if os.environ.get("CLAUDE_BIN"):
        return os.environ["CLAUDE_BIN"]
    try:
        import claude_agent_sdk

        p = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    found = shutil.which("claude")
    if found:
        return found
    raise FileNotFoundError("claude binary not found (pip install claude-agent-sdk)")


def mark_trusted(home: str | Path, project_dir: str | Path) -> None:
    """Write $HOME/.claude.json so project_dir counts as trusted (its
    .claude/settings.json permission rules then apply). Minimal shape:
    {"projects": {"/abs/project": {"hasTrustDialogAccepted": true}}}"""
    cfg_path = Path(home) / ".claude.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    projects = cfg.setdefault("projects", {})
    for p in {str(Path(project_dir).absolute()), str(Path(project_dir).resolve())}:
        projects.setdefault(p, {}).update({"hasTrustDialogAccepted": True})
    cfg_path.write_text(json.dumps(cfg, indent=2))


def clean_env(
    server_url: str, home: str | Path, tmpdir: str | Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """os.environ without inherited CLAUDE*/ANTHROPIC_* plus offline settings."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("CLAUDE") or k.startswith("ANTHROPIC_"))}
    env.update(
        {
            "ANTHROPIC_BASE_URL": server_url,
            "ANTHROPIC_API_KEY": "dummy",
            "HOME": str(home),
            "TMPDIR": str(tmpdir),
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
    )
    env.pop("XDG_CONFIG_HOME", None)
    if extra:
        env.update(extra)
    return env


@dataclass
class ClaudeRun:
    returncode: int
    output: Any  # parsed JSON (json) / list of events (stream-json) / raw str
    stderr: str
    stdout: str
    seconds: float  # wall time of the whole run
    started_at: float  # time.time() at spawn (compare with FakeAnthropic request times)
    timed_out: bool = False

    def __iter__(self):  # allows: rc, out, err = run_claude(...)
        return iter((self.returncode, self.output, self.stderr))


def _parse(stdout: str, output_format: str) -> Any:
    if output_format == "json":
        try:
            return json.loads(stdout)
        except json.JSONDecodeError:
            # tolerate leading noise: take the last JSON line
            for line in reversed(stdout.strip().splitlines()):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
            return stdout
    if output_format == "stream-json":
        events = []
        for line in stdout.splitlines():
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    events.append({"type": "_unparsed", "line": line})
        return events
    return stdout


def run_claude(
    project_dir: str | Path,
    prompt: str,
    server_url: str,
    *,
    settings: str | Path | dict | None = None,
    max_turns: int | None = 10,
    timeout: float = 120,
    output_format: str = "json",
    trust: bool = True,
    home: str | Path | None = None,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> ClaudeRun:
    """Run `claude -p PROMPT` in project_dir; returns a ClaudeRun, which also
    unpacks as (returncode, parsed_json_or_events, stderr).

    settings: path to a settings JSON or a dict (written to the throwaway HOME),
    passed via --settings (its allow rules apply without trust).
    home: reuse a HOME dir (e.g. to inspect it afterwards); default a fresh temp dir.
    """
    project_dir = Path(project_dir)
    own_tmp = tempfile.mkdtemp(prefix="ccrun-")
    try:
        home = Path(home) if home else Path(own_tmp) / "home"
        tmpdir = Path(own_tmp) / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmpdir.mkdir(parents=True, exist_ok=True)
        if trust:
            mark_trusted(home, project_dir)
        cmd = [find_claude(), "-p", prompt, "--output-format", output_format]
        if output_format == "stream-json":
            cmd.append("--verbose")
        if max_turns is not None:
            cmd += ["--max-turns", str(max_turns)]
        if settings is not None:
            if isinstance(settings, dict):
                sp = Path(own_tmp) / "settings.json"
                sp.write_text(json.dumps(settings))
                settings = sp
            cmd += ["--settings", str(settings)]
        cmd += list(extra_args or [])
        env = clean_env(server_url, home, tmpdir, extra_env)
        t0, started_at = time.monotonic(), time.time()
        proc = subprocess.Popen(
            cmd,
            cwd=project_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_run(proc, tmpdir)
            out, err = proc.communicate()
        finally:
            _kill_run(proc, tmpdir)  # hook children, Bash tool shells (own session!) etc.
        secs = time.monotonic() - t0
        rc = proc.returncode if not timed_out else -9
        return ClaudeRun(rc, _parse(out, output_format), err, out, secs, started_at, timed_out)
    finally:
        shutil.rmtree(own_tmp, ignore_errors=True)  # a caller-given HOME is kept


def _run_pids(root_pid: int, tmpdir: Path) -> set[int]:
    """Descendants of root_pid, plus every process whose environment carries this
    run's unique TMPDIR (the Bash tool starts its shells with setsid, so they leave
    the process group and are re-parented to init once claude exits)."""
    marker = f"TMPDIR={tmpdir}".encode()
    parent: dict[int, int] = {}
    found: set[int] = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                parent[pid] = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.add(pid)
        except (OSError, ValueError, IndexError):
            continue
    frontier = [root_pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(kids)
        frontier.extend(kids)
    found.discard(os.getpid())
    return found


def _kill_run(proc: subprocess.Popen, tmpdir: Path) -> None:
    """SIGKILL claude's process group and every process this run started."""
    if proc.poll() is None:  # pgid == pid is only ours while claude is unreaped
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in _run_pids(proc.pid, tmpdir):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
