"""The Claude Code hooks' rules, one test per rule, on real repositories (no client needed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from autoresearch import data, hooks
from conftest import FIXTURE_DATA, Project, copy_run, started_project

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "scripts" / "hook.py"


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_mirror) -> Project:
    """One run t1 on the fixture task, started once and copied per test."""
    return started_project(tmp_path_factory.mktemp("started"), data_mirror, "t1", "--max-iters", "3")


@pytest.fixture
def run(started, tmp_path):
    """A copy of the started run; yields (project, RunState)."""
    project = copy_run(started, tmp_path / "repo")
    state = hooks.run_state(project.path)
    assert state is not None and state.tag == "t1" and state.task == "."
    return project, state


def pre(state, tool, **tool_input):
    return hooks.pre_tool_use({"tool_name": tool, "tool_input": tool_input, "cwd": str(state.root)}, state)


def bash(state, command, **tool_input):
    return pre(state, "Bash", command=command, **tool_input)


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
        ("pre-tool-use", {"tool_name": "Bash", "tool_input": {"command": "git reset --hard && rm -rf x"}}),
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


def prescribed_commands() -> list[str]:
    """Every shell command program.md and the slash command tell the agent to run, placeholders filled in."""
    fill = {
        "[": "",
        "]": "",
        "$ARGUMENTS": "t1 --max-iters 3",
        "ISO-TIME": "2026-11-23T07:00",
        "TAG": "t1",
        "NNNN": "0003",
        "DIR": ".",
        " N": " 3",
        "…": "status",
        "HYPOTHESIS": "one-hot encode cp",
    }
    commands = []
    for name in ("program.md", ".claude/commands/autoresearch.md"):
        for span in re.findall(r"`([^`]+)`", (ROOT / name).read_text()):
            if span.startswith(("uv run ", "tail ", "git show ", "grep ")):
                for placeholder, value in fill.items():
                    span = span.replace(placeholder, value)
                commands.append(span)
    return commands


def test_every_prescribed_shape_is_allowed(run):
    project, state = run
    commands = prescribed_commands()
    assert len(commands) >= 6 and any("--extra lm" in c for c in commands), commands
    for command in [
        *commands,
        'uv run scripts/ratchet.py try "a > b; c && d || e"',  # operators inside quotes are text
        "uv run scripts/ratchet.py try 'costs $5 in `time`'",
        'uv run scripts/ratchet.py try "don\'t scale ages"',
        'uv run scripts/ratchet.py try "heldout-style early stopping"',  # a hypothesis is not read as a path
        'uv run scripts/ratchet.py try "mimic .git/autoresearch layout"',
        "uv run scripts/ratchet.py start t1 --task . --deadline 2026-11-23T07:00 --max-iters 50 --resume",
        "uv run scripts/ratchet.py status --json",
        "uv run --extra=lm scripts/ratchet.py status",
        f"uv run {state.root}/scripts/ratchet.py status",
        f"cd {state.root} && uv run scripts/ratchet.py status",
        "uv run train.py",
        "uv run train.py 2>&1 | tail -n 20",
        "uv run train.py 2>&1 | grep -n auc | head -n 5",
        "tail -n 50 run.log",
        "tail -50 run.log",
        "head -n 20 run.log",
        "tail --lines=100 run.log",
        "grep -n Error run.log",
        "wc -l run.log",
        "git log --oneline -5",
        "git log autoresearch/t1",
        "git --no-pager log --grep heldout",
        "git show refs/autoresearch/t1/0000:train.py",
        "git diff HEAD~1 -- train.py",
        "git status",
        "git branch",
        "git branch --show-current",
        "git for-each-ref refs/autoresearch/t1",
        "git rev-parse HEAD",
        "git grep -n auc",
        "git log --oneline | head -20",
        "cat prepare.py",
        "cat program.md README.md",
        "head -n 40 train.py",
        "grep -n TIME_BUDGET prepare.py",
        "grep -rn auc --exclude-dir=.git .",
        "grep -rn auc scripts/ train.py",
        "grep -r -e auc -e loss scripts",
        "ls",
        "ls -la .git",
        "git log -- '*.py'",
        "grep -rn auc --include='*.py' --exclude-dir=.git .",
        "cd /tmp && pwd",
        "wc -l train.py prepare.py",
        "find . -name '*.py' -not -path './.git/*'",
        "find . -maxdepth 1 -type f",
        "pwd",
    ]:
        assert bash(state, command) is None, command
    assert bash(state, "uv run scripts/ratchet.py try x", timeout=3_600_000) is None
    root = project.path
    for tool, tool_input in [
        ("Edit", {"file_path": str(root / "train.py")}),
        ("Write", {"file_path": "train.py"}),
        ("Read", {"file_path": str(root / "program.md")}),
        ("Read", {"file_path": str(root / "prepare.py")}),
        ("Read", {"file_path": str(root / "run.log"), "offset": 1, "limit": 100}),
        ("Grep", {"pattern": "auc", "path": str(root)}),
        ("Grep", {"pattern": "auc"}),
        ("Glob", {"pattern": "**/*.py"}),
        ("LS", {"path": str(root)}),
        ("TodoWrite", {"todos": []}),
    ]:
        assert pre(state, tool, **tool_input) is None, (tool, tool_input)


# (command, words the reason must contain): the attacks of issue 9 item 7, and their cousins
SHELL_ATTACKS = [
    ("uv run train.py | tee prepare.py", "`| tee`"),
    ("git log | sh", "`| sh`"),
    ("git ls-files | xargs rm", "`| xargs`"),
    ("uv run scripts/ratchet.py status; git reset --hard HEAD~1", "`;`"),
    ("uv run scripts/ratchet.py status && rm prepare.py", "`&&`"),
    ("ls && wc -l train.py", "`&&`"),
    ("cd /tmp && cd - && cat x", "`&&`"),
    ("git status || rm prepare.py", "`||`"),
    ("git log $(rm prepare.py)", "`$(`"),
    ('git log "$(rm prepare.py)"', "inside double quotes"),
    ("git log `rm prepare.py`", "`"),
    ('uv run scripts/ratchet.py try "x `rm prepare.py`"', "inside double quotes"),
    ('git log a\\"; rm prepare.py; echo \\"', "`;`"),  # an escaped quote opens no string
    ("git log ${HOME}", "`$"),
    ("cat prepare.py > notes.txt", "`>`"),
    ("cat train.py >> prepare.py", "`>>`"),
    ("cat < .git/autoresearch/t1/heldout.jsonl", "`<`"),
    ("cat > train.py <<'EOF'\nx = 1\nEOF", "`>`"),
    ("uv run train.py &", "`&`"),
    ("uv run train.py 2>/tmp/x", "`>`"),
    ("(cd /tmp; ls)", "`(`"),
    ("cat .git/auto{research,}/t1/heldout.jsonl", "`{`"),
    ("uv run scripts/ratchet.py status\nrm prepare.py", "a second line"),
    ("git log 'unclosed", "unclosed quote"),
    ("cat .git/autoresearch/t1/heldout.jsonl\x00x", "control character"),
    ("cat .git/autoresearch\r/t1/heldout.jsonl", "control character"),
    ("cat .git/autoresearch\\\n/t1/heldout.jsonl", "line continuation"),  # bash joins what shlex would not
    ("cat .git/*/t1/*", "`*`"),  # a glob: what it expands to depends on the shell's options
    ("cat .git/**/heldout.jsonl", "`**`"),
    ("ls *.py", "`*`"),
    ("cat .git/autoresearch/t?/heldout.jsonl", "`?`"),
    ("cat ~-/.git/autoresearch/t1/heldout.jsonl", "`~-`"),  # $OLDPWD
    ("cd .git/auto* && cat t1/heldout.jsonl", "`*`"),
    ("cd nowhere && cat t1/heldout.jsonl", "existing folder"),  # $CDPATH could take it anywhere
    ("cd - && cat t1/heldout.jsonl", "existing folder"),
    ("find .git -print0 | wc --files0-from=- -c", "--files0-from"),
    ("a | b | c | d", "pipeline of 4"),
    ("python -c \"open('prepare.py', 'w')\"", "`python` is not one of the loop's commands"),
    ("python3 train.py", "`python3` is not"),
    ("uv run python -c 'import os'", "uv runs the ratchet or train.py"),
    ("uv run python scripts/ratchet.py status", "uv runs the ratchet"),
    ("sh -c 'echo > prepare.py'", "`sh` is not"),
    ("bash -c ls", "`bash` is not"),
    ("eval ls", "`eval` is not"),
    ("env X=1 uv run scripts/ratchet.py try x", "`env` is not"),
    ("X=1 uv run scripts/ratchet.py try x", "`X=1` is not"),
    ("timeout 60 uv run scripts/ratchet.py try x", "`timeout` is not"),
    ("sudo ls", "`sudo` is not"),
    ("git update-index --skip-worktree prepare.py", "`git update-index"),
    ("git config user.name x", "`git config"),
    ("git config --get user.name", "`git config"),
    ("git -c core.pager=sh log", "`git -c"),
    ("git -C /tmp log", "`git -C"),
    ("git commit -am x", "`git commit"),
    ("git reset --hard HEAD~1", "`git reset"),
    ("git checkout -- train.py", "`git checkout"),
    ("git restore train.py", "`git restore"),
    ("git stash", "`git stash"),
    ("git branch new-idea", "`git branch"),
    ("git branch -D main", "`git branch"),
    ("git tag -d v1", "`git tag"),
    ("git push --force origin x", "`git push"),
    ("git diff --output=prepare.py", "`git diff"),
    ("git log -p --output notes.txt", "`git log"),
    ("git grep -Osh auc", "`git grep"),
    ("sed -i s/60/600/ prepare.py", "`sed` is not"),
    ("sed -n 1,20p prepare.py", "`sed` is not"),  # sed has w and e commands
    ("awk '{print}' train.py", "`awk` is not"),
    ("cp /tmp/x.py prepare.py", "`cp` is not"),
    ("cp x prepare.py", "`cp` is not"),
    ("mv train.py prepare.py", "`mv` is not"),
    ("rm -rf scripts", "`rm` is not"),
    ("touch notes.txt", "`touch` is not"),
    ("ln -sf /tmp/x prepare.py", "`ln` is not"),
    ("dd if=/dev/zero of=prepare.py", "`dd` is not"),
    ("tee prepare.py", "`tee` is not"),
    ("echo hi", "`echo` is not"),
    ("find . -exec cat '{}' ';'", "`find -exec`"),
    ("find . -name '*.py' -delete", "`find -delete`"),
    ("find . -fprint prepare.py", "`find -fprint`"),
    ("uv pip install optuna", "`uv pip` would change the environment"),
    ("uv add catboost", "`uv add` would change"),
    ("uv sync --extra lm", "`uv sync` would change"),
    ("pip install xgboost", "`pip` would change"),
    ("uv run --with optuna train.py", "uv runs the ratchet"),
    ("uv run --extra-index-url http://x scripts/ratchet.py status", "uv runs the ratchet"),
    ("uv run scripts/headless.py t2", "uv runs the ratchet"),
    ("uv run scripts/ratchet.py try x | tail -1", "on its own"),
    ('uv run scripts/ratchet.py stop "done"', "the person's"),
    ("uv run --extra lm scripts/ratchet.py stop", "the person's"),
    ("uv run scripts/ratchet.py report --all", "held-out"),
    ("uv run scripts/ratchet.py new-task data.csv --target y", "not part of a run"),
    ("uv run scripts/ratchet.py watch --once", "never ends on its own"),
    ("uv run scripts/ratchet.py --help", "the agent's verbs"),
    ("cat run.log", "tail -n 50 run.log"),
    ("tail -n 5000 run.log", "tail -n 50 run.log"),
    ("tail -n +1 run.log", "tail -n 50 run.log"),
    ("tail +1 run.log", "tail -n 50 run.log"),
    ("head -n -1 run.log", "tail -n 50 run.log"),
    ("tail -c 10000000 run.log", "tail -n 50 run.log"),
    ("tail -f run.log", "never returns"),
    ("git log | cat run.log", "`| cat`"),
]
PRIVATE_READS = [
    "cat .git/autoresearch/t1/heldout.jsonl",
    "cat ./.git/autoresearch/../autoresearch/t1/heldout.jsonl",
    "cat scripts/../.git/autoresearch/t1/run.json",
    "head records/t1/heldout.jsonl",  # a symlink to .git/autoresearch (made by the test)
    "wc -l .git/autoresearch/t1/heldout.jsonl",
    "ls .git/autoresearch/t1",
    "find .git/autoresearch",
    "git diff --no-index /dev/null .git/autoresearch/t1/heldout.jsonl",
    "grep -f.git/autoresearch/t1/heldout.jsonl train.py",
    "git blame --contents=.git/autoresearch/t1/run.json train.py",
    "cd .git/autoresearch && cat t1/heldout.jsonl",
    "cd .git && git grep --no-index auc",
    "grep -r auc .",
    "grep -rn heldout_auc",
    "grep -r -A 3 heldout",  # no file named: grep searches .
    "grep -R 0.8 ..",
    "grep --recursive auc .git",
    "grep -d recurse auc .",
    "grep -rn auc --exclude-dir=.git .git",
    "git log | grep -r auc .",
]


def test_shell_attacks_are_denied(run):
    project, state = run
    (project.path / "records").symlink_to(state.folder.parent)
    for command, says in SHELL_ATTACKS:
        reason = bash(state, command)
        assert reason and says in reason, (command, reason)
    for command in PRIVATE_READS:
        reason = bash(state, command)
        assert reason and "private records" in reason, (command, reason)
    assert "private records" in bash(state, f"head {state.folder}/heldout.jsonl")
    assert "without a timeout" in bash(state, "uv run scripts/ratchet.py try x", timeout=120_000)
    background = pre(state, "Bash", command="uv run scripts/ratchet.py try x", run_in_background=True)
    assert "foreground" in background


def test_data_files_are_the_harness_s(run, monkeypatch, data_mirror, tmp_path):
    project, state = run
    cache = tmp_path / "cache"
    (cache / "fixture").mkdir(parents=True)
    monkeypatch.setenv(data.MIRROR_ENV, str(data_mirror))
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    table = f"fixture/{FIXTURE_DATA.name}"
    for command in [
        f"cat {data_mirror}/{table}",
        f"head -n 5 {cache}/{table}",
        f"grep -r 63 {data_mirror.parent}",
    ]:
        reason = bash(state, command)
        assert reason and "data file" in reason, command
    assert pre(state, "Read", file_path=str(data_mirror / table))
    assert pre(state, "Grep", pattern="63", path=str(data_mirror.parent))


def test_tools_reach_no_private_record(run):
    project, state = run
    (project.path / "records").symlink_to(state.folder.parent)
    private = state.folder / "heldout.jsonl"
    for tool, tool_input in [
        ("Read", {"file_path": str(private)}),
        ("Read", {"file_path": str(project.path / "records" / "t1" / "heldout.jsonl")}),
        ("Read", {"file_path": str(project.path / "scripts" / ".." / ".git" / "autoresearch" / "t1" / "run.json")}),
        ("NotebookRead", {"notebook_path": str(private)}),
        ("Grep", {"pattern": "auc", "path": str(private.parent)}),
        ("Grep", {"pattern": "auc", "path": str(project.path / ".git")}),
        ("Grep", {"pattern": "auc", "glob": ".git/**"}),
        ("Glob", {"pattern": ".git/autoresearch/**"}),
        ("LS", {"path": str(private.parent)}),
    ]:
        reason = pre(state, tool, **tool_input)
        assert reason and "private records" in reason, (tool, tool_input)
    assert "Read at most" in pre(state, "Read", file_path="run.log")
    assert "Read at most" in pre(state, "Read", file_path="run.log", limit=5000)
    for tool in ("WebFetch", "Task", "mcp__files__write", ""):
        assert "not part of the loop" in pre(state, tool, url="x"), tool
    for tool, path in [("Write", "program.md"), ("Edit", ".claude/settings.json"), ("Write", "records/x")]:
        assert "only train.py may change" in pre(state, tool, file_path=str(project.path / path))


def test_shell_stages_track_quotes_like_the_shell():
    assert hooks.shell_stages('uv run scripts/ratchet.py try "x > y && z"') == (
        [["uv", "run", "scripts/ratchet.py", "try", "x > y && z"]],
        [],
    )
    assert hooks.shell_stages("cd /r && git log 2>&1 | head -n 3") == (
        [["cd", "/r"], ["git", "log"], ["head", "-n", "3"]],
        ["&&", "|"],
    )
    assert hooks.shell_stages("git log \\; x") == ([["git", "log", ";", "x"]], [])  # an escaped ; is a word
    assert hooks.shell_stages("git log 'a;b' \"c|d\"") == ([["git", "log", "a;b", "c|d"]], [])
    for command in ["a\\", "a |", "| a", "a || b", "a |& b", "a 2>&1>x", "x2>&1"]:
        assert isinstance(hooks.shell_stages(command), str), command


def test_the_real_shim_denies_the_attacks(run):
    """JSON in, decision out, through scripts/hook.py as Claude Code runs it: the attacks named in issue 9."""
    project, _ = run
    (project.path / "records").symlink_to(project.path / ".git" / "autoresearch")
    for command in [
        "uv run train.py | tee prepare.py",
        "uv run scripts/ratchet.py status; rm prepare.py",
        "uv run scripts/ratchet.py status && rm prepare.py",
        "git log $(rm prepare.py)",
        "git log `rm prepare.py`",
        "python -c \"open('prepare.py', 'w')\"",
        "sh -c 'echo > prepare.py'",
        "env X=1 uv run scripts/ratchet.py try x",
        "git update-index --skip-worktree prepare.py",
        "git config user.name x",
        "sed -i s/60/600/ prepare.py",
        "cp x prepare.py",
        "uv pip install optuna",
        "cat records/t1/heldout.jsonl",
        "cat scripts/../.git/autoresearch/t1/heldout.jsonl",
        "tee prepare.py",
        "find . -exec rm '{}' +",
        "git ls-files | xargs cat",
    ]:
        event = {"tool_name": "Bash", "tool_input": {"command": command}, "cwd": str(project.path)}
        out = call_shim("pre-tool-use", event, project.path)
        decision = json.loads(out.stdout)["hookSpecificOutput"]
        assert (out.returncode, decision["permissionDecision"]) == (0, "deny"), (command, out.stderr)
        assert "\n" not in decision["permissionDecisionReason"]
    for command in prescribed_commands():
        event = {"tool_name": "Bash", "tool_input": {"command": command}, "cwd": str(project.path)}
        out = call_shim("pre-tool-use", event, project.path)
        assert (out.returncode, out.stdout) == (0, ""), (command, out.stdout, out.stderr)


def test_a_broken_event_is_denied_during_a_run(run):
    project, _ = run
    env = {"CLAUDE_PROJECT_DIR": str(project.path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, str(HOOK), "pre-tool-use"],
        input="{not json",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "hook pre-tool-use failed" in out.stderr


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


def queue(state, *names: str) -> None:
    """Queue files as `submit` and the scorer leave them (waves.py): NNNN.json, then NNNN.result.json."""
    folder = state.folder / hooks.QUEUE_FOLDER
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(json.dumps({"iter": int(name[:4]), "wave": 1, "hypothesis": "x"}))


def test_the_wave_verbs_are_the_agents(run):
    _, state = run
    for command in [
        'uv run scripts/ratchet.py submit "one-hot encode cp"',
        "uv run scripts/ratchet.py wait",
        "uv run scripts/ratchet.py wait --all",
        "uv run --extra lm scripts/ratchet.py submit 'a > b'",
    ]:
        assert bash(state, command) is None, command
    assert bash(state, "uv run scripts/ratchet.py wait", timeout=hooks.WAIT_MIN_TIMEOUT_MS) is None  # 10 min
    for command, timeout, says in [
        ("uv run scripts/ratchet.py wait", 300_000, "without a timeout shorter than 600000"),
        ("uv run scripts/ratchet.py wait --all", hooks.WAIT_MIN_TIMEOUT_MS, "shorter than 3600000"),  # no 9 min cap
        ('uv run scripts/ratchet.py submit "x"', 120_000, "shorter than 3600000"),
    ]:
        reason = bash(state, command, timeout=timeout)
        assert reason and says in reason, (command, reason)
    for command, says in [
        ('uv run scripts/ratchet.py submit "x" &', "`&`"),
        ('uv run scripts/ratchet.py submit "x" & uv run scripts/ratchet.py wait', "`&`"),
        ('uv run scripts/ratchet.py submit "x" && uv run scripts/ratchet.py submit "y"', "`&&`"),
        ('uv run scripts/ratchet.py submit "x"; uv run scripts/ratchet.py wait', "`;`"),
        ("uv run scripts/ratchet.py wait | tail -n 1", "on its own"),
        ("uv run scripts/ratchet.py", "try, submit, wait and status"),
    ]:
        reason = bash(state, command)
        assert reason and says in reason, (command, reason)
    for verb in ('submit "x"', "wait", "wait --all"):
        background = pre(state, "Bash", command=f"uv run scripts/ratchet.py {verb}", run_in_background=True)
        assert background and "foreground" in background, verb


def test_stop_waits_for_a_queued_wave(run):
    project, state = run
    assert hooks.queued_candidates(state.folder) == 0
    queue(state, "0001.json", "0002.json", "0002.result.json", "0003.json")  # iter 2 scored, none judged
    assert hooks.queued_candidates(state.folder) == 3
    out = call_shim("stop", {"stop_hook_active": False, "cwd": str(project.path)}, project.path)
    answer = json.loads(out.stdout)
    assert answer["decision"] == "block" and "run `wait` first (3 candidates are queued)" in answer["reason"]
    assert "uv run scripts/ratchet.py wait" in answer["reason"]
    for name in ("0001.json", "0003.json"):
        (state.folder / hooks.QUEUE_FOLDER / name).unlink()
    assert "(1 candidate is queued)" in hooks.stop({"stop_hook_active": True}, state)["reason"]  # a result


def test_stop_waits_for_a_queued_wave_even_when_the_run_is_over(run):
    """The person's stop, the deadline or the cap leave the queued candidates to `wait`, which records them."""
    project, state = run
    stopped = project.ratchet("stop", "enough for tonight")
    assert stopped.returncode == 0, stopped.stderr
    queue(state, "0001.json", "0002.json")
    answer = hooks.stop({"stop_hook_active": True}, state)
    assert answer["decision"] == "block" and "run `wait` first (2 candidates are queued)" in answer["reason"]
    shutil.rmtree(state.folder / hooks.QUEUE_FOLDER)  # wait judged the wave: nothing queued
    answer = hooks.stop({"stop_hook_active": True}, state)
    assert "decision" not in answer and "enough for tonight" in answer["systemMessage"]


def test_a_wave_that_never_clears_does_not_hold_the_session_all_night(run):
    _, state = run
    queue(state, "0001.json")
    answers = [hooks.stop({"stop_hook_active": True}, state) for _ in range(hooks.STOP_BLOCKS_WITHOUT_PROGRESS + 1)]
    assert all("run `wait` first" in a.get("reason", "") for a in answers[:-1])
    assert "decision" not in answers[-1] and "without a new iteration" in answers[-1]["systemMessage"]


def test_a_run_with_workers_is_told_to_write_waves(run):
    project, state = run
    record = json.loads((state.folder / "run.json").read_text())
    assert hooks.run_state(project.path).workers == 1 and "try" in state.score_step
    record["extra"]["workers"] = 2  # what `start --workers 2` freezes in the run record
    (state.folder / "run.json").write_text(json.dumps(record))
    waves = hooks.run_state(project.path)
    assert waves.workers == 2
    reason = hooks.stop({"stop_hook_active": True}, waves)["reason"]
    assert 'ratchet.py submit "HYPOTHESIS"` for each variant of a wave (workers: 2)' in reason
    assert "ratchet.py wait`" in reason and "Stop only when submit says the run is over" in reason
    out = call_shim("session-start", {"source": "startup", "cwd": str(project.path)}, project.path)
    context = json.loads(out.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "ratchet.py submit" in context and "ratchet.py wait" in context
    for junk in (True, "2", 0, -3):  # a record no `start` wrote: one worker, the sequential loop
        record["extra"]["workers"] = junk
        (state.folder / "run.json").write_text(json.dumps(record))
        assert hooks.run_state(project.path).workers == 1, junk


def test_stop_gives_up_when_the_agent_is_stuck(run):
    _, state = run
    answers = [hooks.stop({"stop_hook_active": True}, state) for _ in range(hooks.STOP_BLOCKS_WITHOUT_PROGRESS + 1)]
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


def test_session_start_of_a_new_session_leaves_the_digest_to_start(run):
    """A new session calls `start`, which prints the digest: the hook must not put it in the context twice."""
    project, _ = run
    out = call_shim("session-start", {"source": "startup", "cwd": str(project.path)}, project.path)
    context = json.loads(out.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "autoresearch/t1" in context and "ratchet.py start t1` goes on with it" in context
    assert "best: iter 0" not in context and "\n" not in context


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


def test_settings_run_the_hook_before_every_tool():
    settings = json.loads((ROOT / ".claude" / "settings.json").read_text())
    assert [group["matcher"] for group in settings["hooks"]["PreToolUse"]] == ["*"]  # an unknown tool is denied


def test_settings_let_a_ratchet_call_run_for_an_hour():
    settings = json.loads((ROOT / ".claude" / "settings.json").read_text())
    for name in ("BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS"):
        assert int(settings["env"][name]) >= 3_600_000, name  # a language-model try can take 40 min worst case
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
