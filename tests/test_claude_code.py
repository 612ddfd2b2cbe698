"""The real Claude Code client, driven by a scripted agent through a fake Messages API on 127.0.0.1.

`scripts/headless.py t1 --max-iters 2` runs `claude -p "/autoresearch t1 --max-iters 2"` in a copy of the
project with its real .claude/ settings, slash command and hooks, and an untrusted workspace (the allow
rules apply through --settings), on the suite's fixture task (a baseline in about a second). The agent starts
the run, keeps one edit, has an edit of prepare.py denied by the hook, is refused a stop, discards a second
edit, and is let go at the iteration cap.
Needs the e2e dependency group (`uv sync --all-groups`): claude-agent-sdk bundles the client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from claude_runner import _kill_run, clean_env, find_claude
from conftest import FIXTURE_TASK, make_project
from fake_anthropic import FakeAnthropic, Text, ToolUse, all_text, tool_results
from test_ratchet import BETTER_EDIT, WORSE_EDIT, weaken_baseline

pytest.importorskip("claude_agent_sdk", reason="the e2e group is not installed: uv sync --all-groups")

PROJECT_FILES = [  # prepare.py and train.py are the fixture task's
    "prepare.py",
    "train.py",
    ".gitignore",
    "program.md",
    "CLAUDE.md",
    ".claude/settings.json",
    ".claude/commands/autoresearch.md",
    "scripts/ratchet.py",
    "scripts/hook.py",
    "scripts/headless.py",
]
TIMEOUT_SECONDS = 300  # three fixture scorings and ~12 hook calls on a busy 2-core machine, plus the client's start-up


def agent_script(repo: Path) -> list:
    """One tool call per turn, chosen by the number of assistant turns so far."""
    train, prepare = str(repo / "train.py"), str(repo / "prepare.py")

    def edit(old_new):
        return ToolUse("Edit", {"file_path": train, "old_string": old_new[0], "new_string": old_new[1]})

    def bash(command):
        return ToolUse("Bash", {"command": command, "description": "autoresearch"})

    return [
        bash("uv run scripts/ratchet.py start t1 --max-iters 2"),
        ToolUse("Read", {"file_path": train}),
        edit(BETTER_EDIT),
        bash('uv run scripts/ratchet.py try "all features, not age alone"'),
        ToolUse("Read", {"file_path": prepare}),
        ToolUse("Edit", {"file_path": prepare, "old_string": "N_REPEATS = 2", "new_string": "N_REPEATS = 1"}),
        Text("Iteration 1 is done; stopping here."),  # the Stop hook must refuse this
        ToolUse("Read", {"file_path": train}),
        edit(WORSE_EDIT),
        bash('uv run scripts/ratchet.py try "much stronger regularisation"'),
        Text("The run is over."),  # the cap is reached: the Stop hook lets it end
    ]


@pytest.mark.slow
def test_headless_run_with_the_real_client(tmp_path, env):
    repo = tmp_path / "repo"
    project = make_project(repo, env, PROJECT_FILES)
    weaken_baseline(project)
    (repo / ".venv").symlink_to(sys.prefix)  # what `uv run` and the hooks find in a project
    (repo / ".git" / "info" / "exclude").write_text(".venv\n")  # `.venv/` in .gitignore skips only folders
    scratch = Path(tempfile.mkdtemp(prefix="cc-e2e-"))
    (scratch / "home").mkdir(), (scratch / "tmp").mkdir()
    with FakeAnthropic(agent_script(repo)) as api:
        run_env = clean_env(
            api.url,
            scratch / "home",
            scratch / "tmp",
            {**{k: v for k, v in env.items() if k.startswith("AUTORESEARCH_")}, "CLAUDE_BIN": find_claude()},
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                str(repo / "scripts" / "headless.py"),
                "t1",
                "--max-iters",
                "2",
                "--max-turns",
                "30",
            ],
            cwd=repo,
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_SECONDS)
        finally:
            _kill_run(proc, scratch / "tmp")
            shutil.rmtree(scratch, ignore_errors=True)
        requests = api.main_requests()
        assert not api.errors, api.errors
    report = f"stdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"
    assert proc.returncode == 0, report
    assert "stopped: iteration cap reached (2 of 2)" in stdout.splitlines()[-1], report
    assert "| KEPT |" in stdout and "| DISCARDED |" in stdout, report

    first = all_text(requests[0])
    assert "AUTORESEARCH-LOOP:" in first and "t1 --max-iters 2" in first  # the slash command, expanded
    results = tool_results(requests[-1])
    assert len(results) == 9, [r["text"][:80] for r in results]
    assert not any(r["is_error"] for i, r in enumerate(results) if i != 5), [r["text"][:200] for r in results]
    assert "run t1 started" in results[0]["text"]
    denied = results[5]
    assert denied["is_error"] and "only train.py may change" in denied["text"]
    stop_refused = all_text(requests[7])
    assert "Stop hook" in stop_refused and "not over (next: iter 2" in stop_refused

    assert project.git("rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/t1"
    assert project.git("log", "--format=%s", "-2").splitlines() == [
        "all features, not age alone",
        "weak baseline: age alone",
    ]
    rows = project.rows()
    assert [(r["iter"], r["status"]) for r in rows] == [("0", "keep"), ("1", "keep"), ("2", "discard")]
    assert rows[2]["description"] == "much stronger regularisation"
    assert project.git("diff", "main", "HEAD", "--name-only") == "train.py"
    assert project.read("prepare.py") == (FIXTURE_TASK / "prepare.py").read_text()
    assert project.status() == ""
    log = repo / ".git" / "autoresearch" / "t1" / "headless.jsonl"
    assert any(json.loads(line).get("type") == "result" for line in log.read_text().splitlines())
    assert not os.path.exists(repo / "headless.jsonl")
