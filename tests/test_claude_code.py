"""The real Claude Code client, driven by a scripted agent through a fake Messages API on 127.0.0.1.

`scripts/headless.py t1 --max-iters 2` runs `claude -p "/autoresearch t1 --max-iters 2"` in a copy of the
project with its real .claude/ settings, slash command and hooks, and an untrusted workspace (the allow
rules apply through --settings), on the suite's fixture task (a baseline in about a second). The agent starts
the run, keeps one edit, has an edit of prepare.py denied by the hook, is refused a stop and is cut by the turn
limit; the runner relaunches it, the new session resumes the run within 3 requests, discards a second edit,
and is let go at the iteration cap. A second test runs `/autoresearch t2 --workers 2 --max-iters 4`: the agent
submits a wave of three edits, is refused a stop while they are queued, waits, submits a wave of one, waits, and
is let go at the cap.
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
from claude_runner import _kill_run, clean_env, find_claude, run_claude
from conftest import FIXTURE_TASK, make_project
from fake_anthropic import FakeAnthropic, Text, ToolUse, all_text, tool_results, turn_index
from test_ratchet import BETTER_EDIT, SEED_EDIT, WORSE_EDIT, weaken_baseline

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


WAVES_TIMEOUT_SECONDS = 600  # a baseline, two waves (4 scorings, a confirmation) and ~20 hook calls on 2 busy cores
WAVES_MAX_TURNS = 20  # the script has 13 turns: a turn limit only stops a runaway
WAIT_TIMEOUT_MS = 600_000  # program.md: `wait` returns within 9 minutes, and gets the Bash tool's stock 10
RESUME_REQUESTS_MAX = 3  # issue 13: a resumed session reaches its first new edit within this many requests
MAX_TURNS = 6  # cuts the first session after the refused stop, so the runner relaunches it: a resume


def requests_to_first_edit(last_request: dict) -> int:
    """How many requests a session sent up to the one answered with its first Edit (from its last request)."""
    replies = [m for m in last_request["messages"] if m.get("role") == "assistant"]
    for k, message in enumerate(replies):
        content = message.get("content") if isinstance(message.get("content"), list) else []
        if any(b.get("type") == "tool_use" and b.get("name") == "Edit" for b in content):
            return k + 1
    raise AssertionError("the session made no edit")


def agent_script(repo: Path):
    """The agent, following program.md literally, one turn per request, chosen by the session and the number of
    assistant turns so far. The first session starts the run, keeps an edit, has an edit of prepare.py denied,
    is refused a stop and is cut by the turn limit; the second resumes the run, discards an edit and is let go
    at the iteration cap."""
    train, prepare = str(repo / "train.py"), str(repo / "prepare.py")
    sessions = []  # one entry per session: a request with no assistant turn yet opens one

    def bash(command):
        return ToolUse("Bash", {"command": command, "description": "autoresearch"})

    setup = [  # program.md's set-up: one turn, three calls
        ToolUse("Read", {"file_path": prepare}),
        ToolUse("Read", {"file_path": train}),
        bash("uv run scripts/ratchet.py start t1 --max-iters 2"),
    ]
    first = [
        setup,
        ToolUse("Edit", {"file_path": train, "old_string": BETTER_EDIT[0], "new_string": BETTER_EDIT[1]}),
        bash('uv run scripts/ratchet.py try "all features, not age alone"'),
        ToolUse("Edit", {"file_path": prepare, "old_string": "N_REPEATS = 2", "new_string": "N_REPEATS = 1"}),
        Text("Iteration 1 is done; stopping here."),  # the Stop hook must refuse this
    ]
    second = [
        setup,
        ToolUse("Edit", {"file_path": train, "old_string": WORSE_EDIT[0], "new_string": WORSE_EDIT[1]}),
        bash('uv run scripts/ratchet.py try "much stronger regularisation"'),
        Text("The run is over."),  # the cap is reached: the Stop hook lets it end
    ]

    def script(request: dict):
        turn = turn_index(request)
        if turn == 0:
            sessions.append(len(sessions))
        turns = first if len(sessions) == 1 else second
        return turns[turn] if turn < len(turns) else Text("Nothing more to do.")

    return script


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
                str(MAX_TURNS),
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
    # what the model cost, from the client's own logs: the fake answers 10 input and 5 output tokens a request
    assert f"; model: {len(requests)} requests, {15 * len(requests)} tokens, $" in stdout.splitlines()[-1], report
    assert "per iteration" in stdout.splitlines()[-1] and "per kept improvement" in stdout.splitlines()[-1]

    sessions = [i for i, r in enumerate(requests) if turn_index(r) == 0] + [len(requests)]
    assert len(sessions) == 3, f"expected two sessions, got {len(sessions) - 1}\n{report}"
    first, second = requests[sessions[0] : sessions[1]], requests[sessions[1] :]
    opening = all_text(first[0])
    assert "AUTORESEARCH-LOOP:" in opening and "t1 --max-iters 2" in opening  # the slash command, expanded
    assert "## The loop (two tool calls per iteration)" in opening  # program.md inlined: no request to read it
    results = tool_results(first[5])
    assert len(results) == 6, [r["text"][:80] for r in results]
    assert not any(r["is_error"] for i, r in enumerate(results) if i != 5), [r["text"][:200] for r in results]
    assert "run t1 started" in results[2]["text"]
    denied = results[5]
    assert denied["is_error"] and "only train.py may change" in denied["text"]
    stop_refused = all_text(first[5])
    assert "Stop hook" in stop_refused and "not over (next: iter 2" in stop_refused
    assert "relaunching" in stdout, report  # the turn limit cut the first session: the runner went on

    # the resume: the digest arrives with `start`, not twice, and the first new edit is within 3 requests
    resumed = tool_results(second[1])
    assert "run t1 resumed" in resumed[2]["text"] and "best: iter 1" in resumed[2]["text"]
    assert all_text(second[1]).count("best: iter 1") == 1  # the SessionStart hook did not inject it too
    assert requests_to_first_edit(second[-1]) <= RESUME_REQUESTS_MAX

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


def wave_script(repo: Path):
    """The agent of a run with two workers, following program.md's waves: the set-up, a wave of three edits (a
    clear gain, a no-op, a clear loss) with a stop tried before the `wait` (the Stop hook must refuse it), a
    wave of one, and the end at the iteration cap."""
    train, prepare = str(repo / "train.py"), str(repo / "prepare.py")

    def edit(change):
        return ToolUse("Edit", {"file_path": train, "old_string": change[0], "new_string": change[1]})

    def bash(command, **extra):
        return ToolUse("Bash", {"command": command, "description": "autoresearch", **extra})

    return [
        [
            ToolUse("Read", {"file_path": prepare}),
            ToolUse("Read", {"file_path": train}),
            bash("uv run scripts/ratchet.py start t2 --workers 2 --max-iters 4"),
        ],
        edit(BETTER_EDIT),
        bash('uv run scripts/ratchet.py submit "all features, not age alone"'),
        edit(SEED_EDIT),
        bash('uv run scripts/ratchet.py submit "same model, another constant"'),
        edit(WORSE_EDIT),
        bash('uv run scripts/ratchet.py submit "much stronger regularisation"'),
        Text("Three candidates are queued; stopping here."),  # the Stop hook must refuse this
        bash("uv run scripts/ratchet.py wait", timeout=WAIT_TIMEOUT_MS),
        edit(WORSE_EDIT),  # on the new best (all features): still clearly worse
        bash('uv run scripts/ratchet.py submit "much stronger regularisation, all features"'),
        bash("uv run scripts/ratchet.py wait", timeout=WAIT_TIMEOUT_MS),
        Text("The run is over."),  # the cap is reached: the Stop hook lets it end
    ]


@pytest.mark.slow
def test_waves_with_the_real_client(tmp_path, env):
    repo = tmp_path / "repo"
    project = make_project(repo, env, PROJECT_FILES)
    weaken_baseline(project)
    (repo / ".venv").symlink_to(sys.prefix)
    (repo / ".git" / "info" / "exclude").write_text(".venv\n")
    with FakeAnthropic(wave_script(repo)) as api:
        run = run_claude(
            repo,
            "/autoresearch t2 --workers 2 --max-iters 4",
            api.url,
            settings=repo / ".claude" / "settings.json",  # as scripts/headless.py passes them: no trust needed
            trust=False,
            max_turns=WAVES_MAX_TURNS,
            timeout=WAVES_TIMEOUT_SECONDS,
            output_format="stream-json",
            extra_env={k: v for k, v in env.items() if k.startswith("AUTORESEARCH_")},
        )
        requests = api.main_requests()
        assert not api.errors, api.errors
    report = f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    assert not run.timed_out and run.returncode == 0, report
    last = requests[-1]
    assert turn_index(last) == 12, f"the session ended after {turn_index(last)} turns\n{report}"
    opening = all_text(requests[0])
    assert "AUTORESEARCH-LOOP:" in opening and "t2 --workers 2 --max-iters 4" in opening
    assert "## Waves" in opening  # program.md inlined, with the waves

    # the hooks refused no call: every tool result is the tool's own, none an error
    results = tool_results(last)
    assert len(results) == 13, [r["text"][:80] for r in results]
    refused = [r["text"][:300] for r in results if r["is_error"]]
    assert refused == [], refused
    texts = [r["text"] for r in results]
    assert "run t2 started" in texts[2], texts[2]
    for k, (index, wave) in enumerate([(4, 1), (6, 1), (8, 1), (11, 2)]):
        assert f"queued iter {k + 1} (wave {wave};" in texts[index], texts[index]
    first_wait, second_wait = texts[9], texts[12]
    assert [line.split(" | ")[0] for line in first_wait.splitlines() if line.startswith("iter ")] == [
        "iter 1",
        "iter 2",
        "iter 3",
    ], first_wait
    assert "wave 1 | 3 candidates on 2 workers in" in first_wait and "| kept iter 1" in first_wait, first_wait
    assert "iter 4 | " in second_wait and "wave 2 | 1 candidate" in second_wait, second_wait
    # a stop with candidates queued was refused, and the one after the cap let through
    refused_stop = all_text(next(r for r in requests if turn_index(r) == 8))
    assert "Stop hook" in refused_stop and "run `wait` first (3 candidates are queued)" in refused_stop

    rows = project.rows()
    assert [(r["iter"], r["wave"], r["worker"] != "") for r in rows] == [
        ("0", "", False),
        ("1", "1", True),
        ("2", "1", True),
        ("3", "1", True),
        ("4", "2", True),
    ], rows
    assert {r["worker"] for r in rows[1:]} <= {"local:0", "local:1"}, rows
    for wave in ("1", "2"):
        assert sum(r["status"] == "keep" for r in rows if r["wave"] == wave) <= 1, rows
    assert [r["status"] for r in rows] == ["keep", "keep", "discard", "discard", "discard"], rows
    best = [r for r in rows if r["status"] == "keep"][-1]
    assert project.git("rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/t2"
    assert project.git("rev-parse", "HEAD").startswith(best["commit"])  # the branch is on the best
    assert project.git("log", "--format=%s", "-1") == "all features, not age alone"
    assert project.git("diff", "main", "HEAD", "--name-only") == "train.py"
    assert project.status() == ""  # every submit put train.py back; nothing left behind
    for k in range(1, 5):
        assert project.git("rev-parse", "--verify", "-q", f"refs/autoresearch/t2/{k:04d}")  # a ref per candidate
    assert not list((repo / ".git" / "autoresearch" / "t2" / "queue").glob("*.json"))  # every wave judged
