"""The Claude Code hooks' rules, one test per rule, on real repositories (no client needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from autoresearch import hooks
from conftest import Project, make_project

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "scripts" / "hook.py"


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_mirror) -> Project:
    """One run t1 on the heart task, started once (scoring the baseline takes seconds) and copied per test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "GIT_"))}
    env.update(
        AUTORESEARCH_DATA_MIRROR=str(data_mirror),
        PYTHONDONTWRITEBYTECODE="1",
        AUTORESEARCH_CACHE=str(tmp_path_factory.mktemp("cache")),
    )
    project = make_project(tmp_path_factory.mktemp("started") / "repo", env)
    out = project.ratchet("start", "t1", "--max-iters", "3")
    assert out.returncode == 0, out.stderr
    return project


@pytest.fixture
def run(started, tmp_path):
    """A copy of the started run; yields (project, RunState)."""
    project = Project(tmp_path / "repo", started.env)
    shutil.copytree(started.path, project.path, symlinks=True)
    state = hooks.run_state(project.path)
    assert state is not None and state.tag == "t1" and state.task == "."
    return project, state


def pre(state, tool, **tool_input):
    return hooks.pre_tool_use({"tool_name": tool, "tool_input": tool_input, "cwd": str(state.root)}, state)


def bash(state, command):
    return pre(state, "Bash", command=command)


def call_shim(event_name: str, event: dict, project_dir) -> subprocess.CompletedProcess:
    env = {"CLAUDE_PROJECT_DIR": str(project_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(HOOK), event_name],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_no_run_no_opinion(project):
    assert hooks.run_state(project.path) is None  # on main
    project.git("checkout", "-qb", "autoresearch/orphan")  # a run branch without a run record
    assert hooks.run_state(project.path) is None
    for name, event in [
        (
            "pre-tool-use",
            {"tool_name": "Edit", "tool_input": {"file_path": str(project.path / "prepare.py")}},
        ),
        ("stop", {"stop_hook_active": False}),
        ("session-start", {"source": "startup"}),
    ]:
        out = call_shim(name, {**event, "cwd": str(project.path)}, project.path)
        assert (out.returncode, out.stdout) == (0, ""), out.stderr


def test_run_state_in_a_worktree_and_a_subfolder(run, tmp_path):
    project, state = run
    assert hooks.run_state(project.path / "subfolder").tag == "t1"
    project.git("checkout", "-q", "main")
    assert hooks.run_state(project.path) is None
    project.git("worktree", "add", "-q", str(tmp_path / "wt"), "autoresearch/t1")
    in_worktree = hooks.run_state(tmp_path / "wt")
    assert in_worktree.tag == "t1" and in_worktree.folder == state.folder
    assert in_worktree.train == (tmp_path / "wt" / "train.py").resolve()


def test_edit_only_the_tasks_train_py(run):
    project, state = run
    assert pre(state, "Edit", file_path=str(project.path / "train.py")) is None
    assert pre(state, "Write", file_path="train.py") is None  # relative to cwd
    for tool, path in [
        ("Edit", "prepare.py"),
        ("Write", "notes.md"),
        ("MultiEdit", ".claude/settings.json"),
        ("Edit", "../train.py"),
        ("Edit", "tasks/x/train.py"),
    ]:
        reason = pre(state, tool, file_path=str(project.path / path))
        assert reason and "only train.py may change" in reason and "ratchet.py try" in reason
    assert pre(state, "NotebookEdit", notebook_path=str(project.path / "a.ipynb"))


def test_no_reading_the_private_run_folder(run):
    project, state = run
    private = project.path / ".git" / "autoresearch" / "t1" / "heldout.jsonl"
    assert "ratchet.py status" in pre(state, "Read", file_path=str(private))
    assert pre(state, "Grep", pattern="auc", path=str(private.parent))
    assert pre(state, "Glob", pattern=".git/autoresearch/**")
    assert bash(state, "cat .git/autoresearch/t1/heldout.jsonl")
    assert bash(state, "grep -r heldout .git")
    assert pre(state, "Read", file_path=str(project.path / "prepare.py")) is None


def test_run_log_only_in_pieces(run):
    _, state = run
    for command in ["cat run.log", "less run.log", "cat ./run.log && echo done", "tail -n 5000 run.log"]:
        reason = bash(state, command)
        assert reason and "tail -n 50 run.log" in reason, command
    for command in [
        "tail -n 50 run.log",
        "grep -n Error run.log",
        "cat run.log | tail -20",
        "head -40 run.log",
    ]:
        assert bash(state, command) is None, command
    assert pre(state, "Read", file_path="run.log")
    assert pre(state, "Read", file_path="run.log", offset=1, limit=100) is None


def test_shell_writes_to_frozen_files(run):
    _, state = run
    for command in [
        "echo x > prepare.py",
        "echo x >> scripts/ratchet.py",
        "printf x 2> pyproject.toml",
        "sed -i s/60/600/ prepare.py",
        "cp /tmp/x.py prepare.py",
        "mv train.py prepare.py",
        "rm prepare.py",
        "python3 -c pass && echo x | tee .gitignore",
        "bash -c 'echo > prepare.py'",
        "touch notes.txt",
        "dd if=/dev/zero of=prepare.py",
        "ln -sf /tmp/x prepare.py",
        "truncate -s0 results.tsv",
    ]:
        reason = bash(state, command)
        assert reason and "frozen" in reason and "train.py" in reason, command
    assert "rm -r" in bash(state, "rm -rf /tmp/whatever")
    assert bash(state, "find . -name '*.py' -delete")
    for command in [
        "echo x > /tmp/scratch.txt",
        "python3 -c 'print(1)' > /dev/null 2>&1",
        "cat > train.py <<'EOF'\nx = 1\nEOF",
        "cp /tmp/best.py train.py",
        "sed -n 1,20p prepare.py",
        'uv run scripts/ratchet.py try "a > b; c && d"',
        "ls -la && wc -l train.py",
        "uv run train.py 2>&1 | tail -n 20",
    ]:
        assert bash(state, command) is None, command


def test_no_package_installs(run):
    _, state = run
    for command in [
        "pip install xgboost",
        "uv add catboost",
        "python -m pip install torch",
        "npm i left-pad",
        "uv sync --extra lm",
        "uv pip install optuna",
        "cd /tmp && sudo apt-get install -y foo",
    ]:
        reason = bash(state, command)
        assert reason and "pyproject.toml" in reason, command
    assert bash(state, "pip list") is None and bash(state, "uv run python -c 'import sklearn'") is None


def test_no_git_history_changes_outside_the_ratchet(run):
    _, state = run
    for command in [
        "git commit -am x",
        "git reset --hard HEAD~1",
        "git checkout main",
        "git checkout -- train.py",
        "git restore train.py",
        "git stash",
        "git rebase -i HEAD~3",
        "git push --force origin x",
        "git push origin +autoresearch/t1",
        "git branch -D main",
        "git -C . commit --amend -m x",
        "git commit --amend",
        "git update-ref refs/heads/main HEAD",
        "git switch main",
        "git merge main",
        "git config user.name x",
        "git tag -d v1",
        "git reflog expire --all",
    ]:
        reason = bash(state, command)
        assert reason and "ratchet" in reason, command
    for command in [
        "git status",
        "git log --oneline -5",
        "git show refs/autoresearch/t1/0000:train.py",
        "git diff HEAD~1",
        "git branch",
        "git branch --show-current",
        "git config user.name",
    ]:
        assert bash(state, command) is None, command


def test_split_command_keeps_quotes_and_heredocs():
    assert hooks.split_command('uv run scripts/ratchet.py try "x > y && z"') == [
        ["uv", "run", "scripts/ratchet.py", "try", "x > y && z"]
    ]
    assert hooks.split_command("a | b; c && d\ne") == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert hooks.split_command("cat <<EOF\ndon't\nEOF")  # unbalanced quote: still split, never raises


def test_stop_blocks_until_a_stop_condition(run):
    project, state = run
    out = call_shim("stop", {"stop_hook_active": False, "cwd": str(project.path)}, project.path)
    answer = json.loads(out.stdout)
    assert answer["decision"] == "block"
    assert "next: iter 1" in answer["reason"] and "ratchet.py try" in answer["reason"]
    assert "best val_auc=" in answer["reason"]
    stopped = project.ratchet("stop", "enough for tonight")
    assert stopped.returncode == 0, stopped.stderr
    answer = hooks.stop({"stop_hook_active": True}, state)
    assert "decision" not in answer and "enough for tonight" in answer["systemMessage"]


def test_stop_gives_up_when_the_agent_is_stuck(run):
    _, state = run
    answers = [
        hooks.stop({"stop_hook_active": True}, state) for _ in range(hooks.STOP_BLOCKS_WITHOUT_PROGRESS + 1)
    ]
    assert all(a.get("decision") == "block" for a in answers[:-1])
    assert "decision" not in answers[-1] and "without a new iteration" in answers[-1]["systemMessage"]


def test_session_start_injects_the_digest_without_heldout(run):
    project, state = run
    heldout = [json.loads(line) for line in (state.folder / "heldout.jsonl").read_text().splitlines()]
    out = call_shim("session-start", {"source": "compact", "cwd": str(project.path)}, project.path)
    context = json.loads(out.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "autoresearch/t1" in context and "program.md" in context
    assert "next: iter 1" in context and "best: iter 0" in context and "cap 3 iterations" in context
    assert "heldout" not in context and f"{heldout[0]['heldout_auc']:.4f}" not in context


def test_shim_denies_as_claude_code_expects(run):
    project, _ = run
    event = {
        "tool_name": "Edit",
        "tool_input": {"file_path": str(project.path / "prepare.py")},
        "cwd": str(project.path),
    }
    out = call_shim("pre-tool-use", event, project.path)
    decision = json.loads(out.stdout)["hookSpecificOutput"]
    assert decision["hookEventName"] == "PreToolUse" and decision["permissionDecision"] == "deny"
    allowed = call_shim("pre-tool-use", {**event, "tool_input": {"file_path": "train.py"}}, project.path)
    assert (allowed.returncode, allowed.stdout) == (0, "")
