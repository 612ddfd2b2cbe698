"""The headless runner's own paths, with stand-ins for the client (the real one is in test_claude_code.py)."""

from __future__ import annotations

import subprocess
import sys

from autoresearch.headless import claude_command, echo_lines
from conftest import ROOT

HEADLESS = ROOT / "scripts" / "headless.py"


def headless(project, *args, claude: str) -> subprocess.CompletedProcess:
    env = {**project.env, "CLAUDE_BIN": claude}
    return subprocess.run(
        [sys.executable, str(HEADLESS), *args],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_passes_the_run_options_and_the_settings(tmp_path):
    command = claude_command("claude", tmp_path, "nov22", ["--max-iters", "5", "--task", "tasks/a b"], None)
    assert command[:3] == ["claude", "-p", "/autoresearch nov22 --max-iters 5 --task 'tasks/a b'"]
    assert command[command.index("--settings") + 1] == str(tmp_path / ".claude" / "settings.json")
    assert "stream-json" in command and "--verbose" in command


def test_echoes_only_the_ratchets_lines():
    event = {
        "type": "user",
        "message": {
            "content": [
                {
                    "type": "tool_result",
                    "content": [{"type": "text", "text": "noise\niter 3 | val_auc=0.9 | KEPT | 2.0 s — x\nmore noise"}],
                }
            ]
        },
    }
    assert echo_lines(event) == ["iter 3 | val_auc=0.9 | KEPT | 2.0 s — x"]
    assert echo_lines({"type": "assistant", "message": {"content": "iter 3"}}) == []


def test_no_client_is_one_line_and_exit_2(project):
    out = headless(project, "t1", claude="/nonexistent/claude")
    assert out.returncode == 2 and out.stderr.startswith("error: no `claude`") and len(out.stderr.splitlines()) == 1


def test_a_session_that_never_starts_the_run_exits_1_and_says_so(project, tmp_path):
    fake = tmp_path / "claude"
    fake.write_text('#!/bin/sh\necho \'{"type":"result","subtype":"error_max_turns","result":"gave up"}\'\nexit 1\n')
    fake.chmod(0o755)
    out = headless(project, "t1", "--max-iters", "1", claude=str(fake))
    assert out.returncode == 1, out.stderr
    last = out.stdout.splitlines()[-1]
    assert "did not start" in last and "error_max_turns" in last and "gave up" in last
    assert project.status() == ""  # the log went under .git, nothing in the tree
