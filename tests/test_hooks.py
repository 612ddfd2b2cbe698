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


# -- review fixes: each test failed before its fix --------------------------------------------------------
def test_the_agent_cannot_end_its_run_or_read_the_report(run):
    _, state = run
    for command, says in [
        ('uv run scripts/ratchet.py stop "done"', "the person's"),
        ("uv run --extra lm scripts/ratchet.py stop", "the person's"),
        ("python scripts/ratchet.py stop", "the person's"),
        ("cd /tmp && uv run --project /x scripts/ratchet.py report --no-remeasure", "held-out"),
        ("uv run scripts/ratchet.py report --all", "held-out"),
        ("uv run scripts/ratchet.py new-task data.csv --target y", "not part of a run"),
    ]:
        reason = bash(state, command)
        assert reason and says in reason, command
    for command in [
        'uv run scripts/ratchet.py try "stop early when the loss plateaus"',
        "uv run scripts/ratchet.py status",
        "uv run scripts/ratchet.py start t1 --resume",
    ]:
        assert bash(state, command) is None, command


def test_git_output_option_is_a_write(run):
    _, state = run
    for command in [
        "git diff --output=prepare.py",
        "git log -p --output notes.txt",
        "git show HEAD --output=x",
    ]:
        reason = bash(state, command)
        assert reason and "--output" in reason, command


def test_private_check_looks_at_paths_not_words(run):
    project, state = run
    for command in [
        'uv run scripts/ratchet.py try "heldout-style early stopping"',
        'uv run scripts/ratchet.py try "mimic .git/autoresearch layout"',  # the hypothesis is not read
        "git log --grep heldout",
        "git show refs/autoresearch/t1/0000:train.py",
    ]:
        assert bash(state, command) is None, command
    for command in [
        "cat .git/autoresearch/t1/heldout.jsonl",
        "zcat .git/autoresearch/t1/heldout.jsonl.gz",
        "cat .git/*/t1/*",  # a glob that reaches the records
        "cd .git/autoresearch && cat t1/heldout.jsonl",
        f"head {state.folder}/heldout.jsonl",
        "python3 -c \"print(open('.git/autoresearch/t1/heldout.jsonl').read())\"",
        "cat heldout.jsonl",
        "wc < .git/autoresearch/t1/heldout.jsonl",
        "python3 - <<'EOF'\nprint(open('.git/autoresearch/t1/heldout.jsonl').read())\nEOF",
    ]:
        assert bash(state, command), command
    inside = {"tool_name": "Bash", "tool_input": {"command": "cat heldout.jsonl"}, "cwd": str(state.folder)}
    assert hooks.pre_tool_use(inside, state)


def test_read_only_git_subcommands_are_allowed(run):
    _, state = run
    for command in [
        "git stash list",
        "git stash show -p",
        "git worktree list",
        "git branch --list 'auto*'",
        "git branch -v",
        "git branch --contains HEAD",
        "git config --get user.name",
        "git config --get-regexp '^user'",
        "git config --list",
        "git config get user.name",
    ]:
        assert bash(state, command) is None, command
    for command in [
        "git stash push",
        "git stash pop",
        "git worktree add /tmp/w",
        "git branch new-idea",
        "git branch --set-upstream-to=origin/main",
        "git config --unset user.name",
        "git config --add user.name x",
        "git config set user.name x",
    ]:
        assert bash(state, command), command


def test_run_log_from_a_line_on_is_a_dump(run):
    _, state = run
    for command in [
        "tail -n +1 run.log",
        "tail -n+1 run.log",
        "tail +1 run.log",
        "tail --lines=+1 run.log",
        "tail --lines +1 run.log",
        "head -n -1 run.log",
        "head --lines=-5 run.log",
        "tail -c 10000000 run.log",
    ]:
        reason = bash(state, command)
        assert reason and "tail -n 50 run.log" in reason, command
    assert "never returns" in bash(state, "tail -f run.log")
    for command in [
        "tail -n 50 run.log",
        "tail -50 run.log",
        "head -n 20 run.log",
        "tail --lines=100 run.log",
    ]:
        assert bash(state, command) is None, command


def test_recursive_grep_stays_out_of_git(run, tmp_path):
    _, state = run
    for command in [
        "grep -r auc .",
        "grep -rn heldout_auc",
        "grep -R 0.8 ..",
        "grep --recursive auc /tmp/../" + str(state.root),
        "grep -d recurse auc .",
        "rgrep auc .",
        "egrep -rl auc .",
        "rg auc .git",
        "rg --hidden auc",
        "rg -uu auc .",
        "grep -r auc .git",
        "grep -r auc .git/*",
    ]:
        reason = bash(state, command)
        assert reason and "--exclude-dir=.git" in reason, command
    for command in [
        "grep -rn auc --exclude-dir=.git .",
        "grep -rn auc scripts/ train.py",
        "grep -n auc train.py prepare.py",
        "grep -r auc " + str(tmp_path / "elsewhere"),
        "rg auc",  # ripgrep skips hidden folders such as .git
        "rg -n auc scripts",
        "rg --hidden -g '!.git' auc",
        "git grep auc",
        "find . -name '*.py' -not -path './.git/*'",
    ]:
        assert bash(state, command) is None, command


def test_the_normal_loop_goes_through(run):
    project, state = run
    for command in [
        'uv run scripts/ratchet.py try "deeper trees"',
        'uv run --extra lm scripts/ratchet.py try "wider embedding"',
        "tail -n 50 run.log",
        "git show refs/autoresearch/t1/0003:train.py",
        "uv run scripts/ratchet.py status",
    ]:
        assert bash(state, command) is None, command
    assert pre(state, "Edit", file_path=str(project.path / "train.py")) is None


def test_settings_let_a_ratchet_call_run_for_an_hour():
    settings = json.loads((ROOT / ".claude" / "settings.json").read_text())
    for name in ("BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS"):
        assert int(settings["env"][name]) >= 3_600_000, (
            name
        )  # a language-model try can take 40 min worst case
    allowed = settings["permissions"]["allow"]
    assert "Bash(uv run --extra lm scripts/ratchet.py:*)" in allowed


def test_run_rows_reads_one_runs_rows(tmp_path):
    from autoresearch import ledger

    assert ledger.run_rows(tmp_path / "missing.tsv", "t1") == []
    book = ledger.Ledger(tmp_path / "results.tsv", tmp_path / "mirror.tsv", "val_auc")
    for tag, it in [("t1", 0), ("t2", 0), ("t1", 1)]:
        book.append({"commit": "abc1234", "val_auc": 0.8, "status": "keep", "iter": it, "tag": tag})
    assert [r["iter"] for r in ledger.run_rows(book.mirror, "t1")] == ["0", "1"]
    assert len(ledger.run_rows(book.mirror)) == 3 and book.rows("t2") == ledger.run_rows(book.path, "t2")
