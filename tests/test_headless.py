"""The headless runner's own paths, with stand-ins for the client (the real one is in test_claude_code.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from autoresearch.headless import CREDENTIAL_ENV, NOT_LOGGED_IN, TRUST_NOTE, claude_command, echo_lines
from conftest import RATCHET, ROOT

HEADLESS = ROOT / "scripts" / "headless.py"
# What the client 2.1.330 prints when it has no credentials: a result whose subtype is "success".
NOT_LOGGED_IN_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": True,
    "result": "Not logged in · Please run /login",
    "session_id": "s1",
}
UNTRUSTED_LINE = (
    "Ignoring 19 permissions.allow entries from .claude/settings.json: this workspace has not been trusted. Run "
    'Claude Code interactively here once and accept the trust dialog, or set projects["/x"].hasTrustDialogAccepted'
)


def fake_claude(tmp_path: Path, session: str, auth: dict | None = None) -> Path:
    """A stand-in client: `auth status` answers `auth` (or fails like an old client); a session (-p) appends its
    arguments to launches.jsonl and runs `session`, Python code with `emit(event)` and `sh(*args)` at hand."""
    fake = tmp_path / "claude"
    body = textwrap.indent(textwrap.dedent(session), "    ")
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, subprocess, sys\n"
        f"RATCHET = {str(RATCHET)!r}\n"
        "def emit(event):\n"
        "    print(json.dumps(event), flush=True)\n"
        "def sh(*args):\n"
        "    return subprocess.run([sys.executable, RATCHET, *args], capture_output=True, text=True).stdout\n"
        "if sys.argv[1:3] == ['auth', 'status']:\n"
        f"    print({json.dumps(json.dumps(auth)) if auth else repr('error: unknown command')})\n"
        "    sys.exit(0 if (" + repr(auth) + " or {}).get('loggedIn') else 1)\n"
        f"with open({str(tmp_path / 'launches.jsonl')!r}, 'a') as fh:\n"
        "    fh.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if True:\n"
        f"{body}\n"
    )
    fake.chmod(0o755)
    return fake


def launches(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "launches.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def headless(project, *args, claude: str, credentials: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in project.env.items() if k not in CREDENTIAL_ENV}
    env.update({**(credentials or {}), "CLAUDE_BIN": claude})
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


def test_without_credentials_it_refuses_in_one_line_before_any_session(project, tmp_path):
    fake = fake_claude(tmp_path, "emit({})", auth={"loggedIn": False, "authMethod": "none"})
    out = headless(project, "t1", "--max-iters", "1", claude=str(fake))
    assert out.returncode == 2 and out.stderr == f"error: {NOT_LOGGED_IN}\n" and out.stdout == ""
    assert launches(tmp_path) == []  # no session was launched
    assert project.status() == ""


def test_a_key_in_the_environment_is_enough_and_a_failed_session_never_says_success(project, tmp_path):
    fake = fake_claude(
        tmp_path, f"emit({NOT_LOGGED_IN_RESULT!r})\nprint({UNTRUSTED_LINE!r}, file=sys.stderr)\nsys.exit(1)"
    )
    key = {"ANTHROPIC_API_KEY": "sk-ant-revoked"}  # present, so `auth status` is not asked; the API refuses it
    out = headless(project, "t1", "--max-iters", "3", "--no-confirm", claude=str(fake), credentials=key)
    assert out.returncode == 1, out.stderr
    last = out.stdout.splitlines()[-1]
    assert "success" not in last, last
    assert last.startswith("autoresearch t1: the run did not start (claude ended with an error, exit code 1)")
    assert "Not logged in" in last and "set ANTHROPIC_API_KEY (a server) or run claude and /login once" in last
    assert [a[:2] for a in launches(tmp_path)] == [["-p", "/autoresearch t1 --max-iters 3 --no-confirm"]]
    assert TRUST_NOTE in out.stderr and "Ignoring 19" not in out.stderr  # the client's note, explained


def test_a_client_too_old_for_auth_status_is_let_through(project, tmp_path):
    fake = fake_claude(tmp_path, f"emit({NOT_LOGGED_IN_RESULT!r})\nsys.exit(1)", auth=None)
    out = headless(project, "t1", claude=str(fake))
    assert out.returncode == 1 and len(launches(tmp_path)) == 1


def test_help_lists_every_option_with_the_whole_description():
    out = subprocess.run([sys.executable, str(HEADLESS), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for option in (
        "--task",
        "--deadline",
        "--max-iters",
        "--budget",
        "--keep-rule",
        "--confirm",
        "--no-confirm",
        "--workers",
        "--executor",
        "--ray-address",
    ):
        assert option in out.stdout, option
    assert "--max-turns" in out.stdout and "ANTHROPIC_API_KEY" in out.stdout
    assert "Exit codes: 0 a stop condition ended the run, 1 the client ended without one, 2 could not start." in (
        out.stdout
    )


def test_bad_options_are_refused_before_anything_runs(project, tmp_path):
    fake = fake_claude(tmp_path, "emit({})")
    out = headless(project, "t1", "--deadline", "tomorrow", claude=str(fake))
    assert out.returncode == 2 and "not an ISO time" in out.stderr and launches(tmp_path) == []
    out = headless(project, "t1", "--keep-rule", "lucky", claude=str(fake))
    assert out.returncode == 2 and "invalid choice" in out.stderr and launches(tmp_path) == []


def test_a_stopped_run_ends_with_what_the_model_cost(project, tmp_path):
    """The stand-in starts the run and stops it, printing stream-json as the client does: a response of two
    content blocks (two events, one id, one usage) before each tool result."""
    session = """
        usage = {"input_tokens": 1000, "output_tokens": 1, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        def say(n, text):
            for block in ({"type": "text", "text": "on it"}, {"type": "tool_use", "id": f"t{n}"}):
                emit({"type": "assistant", "session_id": "s1", "message": {"id": f"msg_{n}",
                      "model": "claude-opus-5-5", "content": [block], "usage": usage}})
            emit({"type": "user", "session_id": "s1", "message": {"content": [
                {"type": "tool_result", "tool_use_id": f"t{n}", "content": text}]}})
        emit({"type": "system", "subtype": "init", "session_id": "s1"})
        say(1, sh("start", "t1", "--max-iters", "5"))
        say(2, sh("stop", "enough for a test"))
        emit({"type": "result", "subtype": "success", "is_error": False, "session_id": "s1",
              "usage": {"output_tokens": 1002}, "total_cost_usd": 0.028})
    """
    fake = fake_claude(tmp_path, session)
    out = headless(project, "t1", "--max-iters", "5", claude=str(fake), credentials={"ANTHROPIC_API_KEY": "k"})
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.splitlines()[-1]
    # 2 requests of 1000 input tokens ($4/M) and 501 output tokens each (the result's 1002; $20/M): $0.028
    assert last == (
        "autoresearch t1: stopped: stop requested by the person: enough for a test; "
        "model: 2 requests, 3.0 k tokens, $0.028 (no iteration yet, no kept improvement)"
    ), out.stdout
    assert "run t1 started" in out.stdout  # the ratchet's own line, echoed
    assert project.status() == ""  # the log went under .git, nothing in the tree


def test_a_session_that_never_starts_the_run_exits_1_and_says_so(project, tmp_path):
    fake = tmp_path / "claude"
    fake.write_text('#!/bin/sh\necho \'{"type":"result","subtype":"error_max_turns","result":"gave up"}\'\nexit 1\n')
    fake.chmod(0o755)
    out = headless(project, "t1", "--max-iters", "1", claude=str(fake))
    assert out.returncode == 1, out.stderr
    last = out.stdout.splitlines()[-1]
    assert "did not start" in last and "error_max_turns" in last and "gave up" in last
    assert project.status() == ""  # the log went under .git, nothing in the tree


def test_wave_options_reach_start_in_its_own_spelling():
    """`headless.py TAG --workers 2 --executor ray --ray-address H:P` starts the run the slash command would."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("headless_cli", HEADLESS)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = argparse.Namespace(
        task=None, deadline=None, max_iters=4, budget=None, keep_rule=None, confirm=None,
        workers=2, executor="ray", ray_address="127.0.0.1:6379",
    )  # fmt: skip
    assert cli.start_args(args) == [
        "--max-iters",
        "4",
        "--workers",
        "2",
        "--executor",
        "ray",
        "--ray-address",
        "127.0.0.1:6379",
    ]
