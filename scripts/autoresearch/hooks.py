"""Claude Code hooks for an autoresearch run: rules as functions of the hook's input and the repository.

They act only while the checkout is on `autoresearch/<tag>` with a run record; on any other branch every
hook says nothing, so Claude Code works in this repository as usual. scripts/hook.py is the shim.

    PreToolUse    deny edits of anything but the task's train.py, shell commands that change frozen files,
                  install packages or rewrite git history, dumps of run.log, reads of .git/autoresearch
    Stop          block the agent's stop while no stop condition holds (stopping.stop_reason)
    SessionStart  put the status digest in the agent's context (startup, resume, compact, clear)

PreToolUse runs before every tool call, so it reads the branch and run.json as plain files and imports
nothing heavy (gitpython alone costs 0.4 s); Stop and SessionStart load the library.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

BRANCH_REF = "ref: refs/heads/autoresearch/"  # .git/HEAD of a checkout on a run branch (gitops.BRANCH_PREFIX)
RUNS_FOLDER = "autoresearch"  # under the git common dir: runs.run_dir
FILE_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
READ_TOOLS = ("Read", "Grep", "Glob", "LS")
MAX_LOG_LINES = 200  # more than this from run.log floods the context; the crash line shows the last 12
# An agent that keeps ending its turn with no new row is stuck (a refusal it cannot fix, a broken setup):
# after this many blocked stops in a row without progress, let it stop rather than spend tokens all night.
STOP_BLOCKS_WITHOUT_PROGRESS = 5
STOP_BLOCKS_FILE = "stop_hook.json"  # in the run folder: the rows count and the blocks since it changed

PACKAGE_INSTALLERS = {
    "pip": {"install", "uninstall", "download"}, "pip3": {"install", "uninstall", "download"},
    "uv": {"add", "remove", "sync", "lock", "pip", "tool", "venv", "python"},
    "npm": {"install", "i", "add", "ci", "uninstall", "update"}, "pnpm": {"add", "install", "i"},
    "yarn": {"add", "install"}, "conda": {"install", "create", "update"}, "mamba": {"install", "create"},
    "apt": {"install"}, "apt-get": {"install"}, "poetry": {"add", "install"}, "pipx": {"install", "run"},
    "brew": {"install"}, "easy_install": None, "npx": None,
}  # fmt: skip  # None: the program itself installs
GIT_WRITES = {
    "commit", "reset", "checkout", "restore", "switch", "rebase", "merge", "cherry-pick", "revert", "stash",
    "clean", "rm", "mv", "am", "apply", "filter-branch", "filter-repo", "update-ref", "replace", "pull",
    "worktree", "gc", "prune",
}  # fmt: skip  # every one moves the branch, the index or the tree behind the ratchet's back
GIT_OPTIONS_WITH_VALUE = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path"}
FILE_WRITERS = {
    "cp",
    "mv",
    "rm",
    "ln",
    "touch",
    "truncate",
    "install",
    "rsync",
    "chmod",
    "chown",
    "unlink",
    "shred",
}
IN_PLACE_EDITORS = {"sed": ("-i", "--in-place"), "perl": ("-i", "-pi"), "ruby": ("-i",)}
SHELLS = {"bash", "sh", "zsh", "dash", "eval"}
PAGERS = {"cat", "less", "more", "bat", "nl", "strings", "view", "vim", "vi", "tac"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "|&"}


@dataclass(frozen=True)
class RunState:
    """The active run as the hooks see it. Has `common_dir`, like gitops.Repo, for runs.run_dir."""

    root: Path  # the work tree
    common_dir: Path  # the git common dir (shared by worktrees): runs live under it
    tag: str
    task: str  # task folder relative to root, "." for the heart task

    @property
    def train(self) -> Path:
        return (self.root / self.task / "train.py").resolve()

    @property
    def train_rel(self) -> str:
        return "train.py" if self.task == "." else f"{self.task}/train.py"

    @property
    def folder(self) -> Path:
        return self.common_dir / RUNS_FOLDER / self.tag


def run_state(start: str | Path) -> RunState | None:
    """The run checked out in the repository holding `start`, or None (no repo, other branch, no record)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            git_dir = dot_git
        elif dot_git.is_file():  # a worktree: "gitdir: PATH"
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (folder / text.split(":", 1)[1].strip()).resolve()
        else:
            continue
        try:
            head = (git_dir / "HEAD").read_text().strip()
        except OSError:
            return None
        if not head.startswith(BRANCH_REF):
            return None
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        tag = head[len(BRANCH_REF) :]
        try:
            record = json.loads((common / RUNS_FOLDER / tag / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return RunState(folder, common, tag, record.get("task", "."))
    return None


# -- PreToolUse -----------------------------------------------------------------------------------------
def pre_tool_use(event: dict, state: RunState) -> str | None:
    """The reason to deny this tool call (one line, saying what to do instead), or None to let it through."""
    tool, args = event.get("tool_name", ""), event.get("tool_input") or {}
    cwd = Path(event.get("cwd") or state.root)
    if tool in FILE_TOOLS:
        return file_edit_rule(args.get("file_path") or args.get("notebook_path") or "", cwd, state)
    if tool in READ_TOOLS:
        return read_rule(tool, args, cwd, state)
    if tool == "Bash":
        return bash_rule(args.get("command", ""), cwd, state)
    return None


def _resolve(path: str, cwd: Path) -> Path:
    return (cwd / os.path.expanduser(path)).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def file_edit_rule(path: str, cwd: Path, state: RunState) -> str | None:
    if path and _resolve(path, cwd) == state.train:
        return None
    return (
        f"run {state.tag}: only {state.train_rel} may change; put the idea there and run "
        f'`uv run scripts/ratchet.py try "HYPOTHESIS"` (the harness, scripts, tests and config are frozen)'
    )


def _private(path: Path, state: RunState) -> bool:
    return _inside(path, state.common_dir / RUNS_FOLDER)


def read_rule(tool: str, args: dict, cwd: Path, state: RunState) -> str | None:
    for key in ("file_path", "path"):
        if args.get(key) and _private(_resolve(args[key], cwd), state):
            return _private_reason(state)
    if ".git/autoresearch" in str(args.get("pattern", "")):
        return _private_reason(state)
    if tool == "Read" and args.get("file_path", "").endswith("run.log") and not args.get("limit"):
        return f"run.log is long: Read at most {MAX_LOG_LINES} lines of it (limit), or `tail -n 50 run.log`"
    return None


def _private_reason(state: RunState) -> str:
    return "the run's private records are not for the agent; `uv run scripts/ratchet.py status` has the rest"


def split_command(command: str) -> list[list[str]]:
    """A shell command as simple commands (lists of words), split on ; && || | & ( ) and newlines."""
    command = command.replace(
        "\n", " ; "
    )  # a newline separates commands (in a quoted string it is harmless here)
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes (a heredoc with an apostrophe): fall back to plain words
        tokens = re.findall(r"[;&|()<>]+|[^\s;&|()<>]+", command)
    commands, current = [], []
    for token in tokens:
        if token in SEPARATORS or (set(token) <= set(";&|") and token):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


def _program(words: list[str]) -> tuple[str, list[str]]:
    """The program and its arguments, past `VAR=x`, `sudo`, `env`, `command`, `time`, `nohup`, `uv run`."""
    i = 0
    while i < len(words):
        word = words[i]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word) or word in (
            "sudo",
            "env",
            "command",
            "time",
            "nohup",
            "exec",
        ):
            i += 1
        elif word == "uv" and i + 1 < len(words) and words[i + 1] == "run":
            i += 2
            while i < len(words) and words[i].startswith("-"):
                i += 1
        else:
            break
    if i >= len(words):
        return "", []
    return os.path.basename(words[i]), words[i + 1 :]


def _targets(words: list[str]) -> list[str]:
    """Files this simple command writes through redirections (`> f`, `>> f`, `2> f`, `&> f`)."""
    out = []
    for i, word in enumerate(words[:-1]):
        if word in (">", ">>", ">|", "&>", "&>>") or re.fullmatch(r"\d?>>?", word):
            nxt = words[i + 1]
            if not nxt.startswith("&"):
                out.append(nxt)
    return out


def _frozen(path: str, cwd: Path, state: RunState) -> bool:
    """A path in the work tree other than the task's train.py (/dev/null and files outside are fine)."""
    target = _resolve(path, cwd)
    return _inside(target, state.root.resolve()) and target != state.train


def bash_rule(command: str, cwd: Path, state: RunState) -> str | None:
    """Why this shell command must not run during the run, or None."""
    if ".git/autoresearch" in command or "heldout" in command:
        return _private_reason(state)
    commands = split_command(command)
    for words in commands:
        reason = _simple_command_rule(words, cwd, state, commands)
        if reason:
            return reason
    return None


def _simple_command_rule(
    words: list[str], cwd: Path, state: RunState, pipeline: list[list[str]]
) -> str | None:
    for target in _targets(words):
        if _frozen(target, cwd, state):
            return _frozen_reason(target, state)
    words = [w for i, w in enumerate(words) if w not in (">", ">>", ">|", "&>", "&>>", "<") and
             not (i > 0 and words[i - 1] in (">", ">>", ">|", "&>", "&>>", "<"))]  # fmt: skip
    program, args = _program(words)
    if not program:
        return None
    if program in SHELLS:
        inner = (
            args[args.index("-c") + 1]
            if "-c" in args and args.index("-c") + 1 < len(args)
            else " ".join(args)
        )
        return bash_rule(inner, cwd, state) if program == "eval" or "-c" in args else None
    if program in ("python", "python3") and args[:2] == ["-m", "pip"]:
        program, args = "pip", args[2:]
    if program in PACKAGE_INSTALLERS:
        verbs = PACKAGE_INSTALLERS[program]
        if verbs is None or (args and args[0] in verbs):
            return (
                "installing or changing packages is out of scope: use what pyproject.toml declares "
                "(scikit-learn, LightGBM, XGBoost CPU, FLAML; torch for the language-model task)"
            )
    if program == "git":
        return _git_rule(args, state)
    if program == "headless.py":
        return (
            f"run {state.tag} is already going; a run does not start another (headless.py is for the person)"
        )
    if program in FILE_WRITERS:
        if program == "rm" and any(re.fullmatch(r"-[a-zA-Z]*[rR][a-zA-Z]*|--recursive", a) for a in args):
            return "rm -r is not allowed during a run; the ratchet cleans up after itself"
        files = [a for a in args if not a.startswith("-")]
        if program in ("cp", "install", "rsync", "ln"):
            files = files[-1:]  # only the destination is written
        for path in files:
            if _frozen(path, cwd, state):
                return _frozen_reason(path, state)
    if program in IN_PLACE_EDITORS and any(a.startswith(IN_PLACE_EDITORS[program]) for a in args):
        for path in args:
            if not path.startswith("-") and (cwd / path).exists() and _frozen(path, cwd, state):
                return _frozen_reason(path, state)
    if program == "tee":
        for path in args:
            if not path.startswith("-") and _frozen(path, cwd, state):
                return _frozen_reason(path, state)
    if program == "dd":
        for arg in args:
            if arg.startswith("of=") and _frozen(arg[3:], cwd, state):
                return _frozen_reason(arg[3:], state)
    if program == "find" and ("-delete" in args or "-exec" in args or "-execdir" in args):
        return "find -delete or -exec is not allowed during a run; list with find, read with grep or tail"
    return _log_rule(program, args, pipeline)


def _frozen_reason(path: str, state: RunState) -> str:
    return (
        f"run {state.tag}: {path} is frozen; only {state.train_rel} may change, with the Edit tool, "
        f'then `uv run scripts/ratchet.py try "HYPOTHESIS"`'
    )


def _git_rule(args: list[str], state: RunState) -> str | None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in GIT_OPTIONS_WITH_VALUE else 1
    if i >= len(args):
        return None
    verb, rest = args[i], args[i + 1 :]
    dangerous = verb in GIT_WRITES
    if verb == "branch":
        dangerous = any(
            a in ("-d", "-D", "-m", "-M", "-f", "-c", "-C", "--delete", "--force", "--move", "--copy")
            for a in rest
        )
        dangerous = dangerous or any(not a.startswith("-") for a in rest)  # creating a branch
    elif verb == "tag":
        dangerous = any(a in ("-d", "--delete", "-f", "--force") for a in rest)
    elif verb == "push":
        dangerous = any(a in ("-f", "--force", "--force-with-lease", "--delete", "-d", "--mirror") or
                        a.startswith(("+", "--force", ":")) for a in rest)  # fmt: skip
    elif verb == "reflog":
        dangerous = bool(rest) and rest[0] in ("expire", "delete")
    elif verb == "config":
        dangerous = any(not a.startswith("-") for a in rest[1:]) or "--unset" in rest
    if not dangerous:
        return None
    return (
        f"git {verb} is the ratchet's job during run {state.tag}: it commits, keeps or resets train.py; "
        f'edit {state.train_rel} and run `uv run scripts/ratchet.py try "HYPOTHESIS"`'
    )


def _log_rule(program: str, args: list[str], pipeline: list[list[str]]) -> str | None:
    reads_log = any(os.path.basename(a) == "run.log" for a in args if not a.startswith("-"))
    if not reads_log:
        return None
    filtered = any(_program(words)[0] in ("head", "tail", "grep", "rg", "wc", "awk", "sed") and
                   _program(words)[0] != program for words in pipeline)  # fmt: skip
    if program in PAGERS and not filtered:
        return "run.log can be long: read its end with `tail -n 50 run.log`, or `grep -n Error run.log`"
    if program in ("head", "tail"):
        counts = [a for i, a in enumerate(args) if i > 0 and args[i - 1] == "-n"] + [
            a[2:] if a.startswith("-n") else a[1:] for a in args if re.fullmatch(r"-n?\+?\d+", a)
        ]
        for count in counts:
            digits = count.lstrip("+")
            if digits.isdigit() and int(digits) > MAX_LOG_LINES:
                return f"at most {MAX_LOG_LINES} lines of run.log at a time: `tail -n 50 run.log`"
    return None


# -- Stop -----------------------------------------------------------------------------------------------
def _load(state: RunState):
    from autoresearch import ledger, runs  # the library imports gitpython: only where it is needed

    config = runs.load_config(state, state.tag)
    rows = ledger.read_rows(state.folder / "results.tsv") if (state.folder / "results.tsv").exists() else []
    return config, [r for r in rows if r.get("tag", state.tag) == state.tag]


def stop(event: dict, state: RunState) -> dict:
    """Block the stop while the run should go on; otherwise let it end and say why."""
    from autoresearch import digest, stopping
    from autoresearch.runs import read_json, write_json

    config, rows = _load(state)
    reason = stopping.stop_reason(config, rows, state.folder)
    if reason:
        return {"systemMessage": f"autoresearch run {state.tag} may stop: {reason}"}
    seen = read_json(state.folder / STOP_BLOCKS_FILE) or {}
    blocks = seen.get("blocks", 0) + 1 if seen.get("rows") == len(rows) else 1
    if blocks > STOP_BLOCKS_WITHOUT_PROGRESS:
        return {
            "systemMessage": f"autoresearch run {state.tag} may stop: the agent ended its turn "
            f"{STOP_BLOCKS_WITHOUT_PROGRESS} times without a new iteration; look at the session, then resume"
        }
    write_json(state.folder / STOP_BLOCKS_FILE, {"rows": len(rows), "blocks": blocks})
    d = digest.digest(config, rows, state)
    best = d["best"]
    shown = (
        f"best {d['metric']}={best[d['metric']]:.4f} at iter {best['iter']}" if best else "no kept row yet"
    )
    return {
        "decision": "block",
        "reason": (
            f"autoresearch run {state.tag} is not over (next: iter {d['next_iter']}, {shown}). "
            "Do not stop and do "
            f"not ask: edit {state.train_rel} with the next idea, then run "
            f'`uv run scripts/ratchet.py try "HYPOTHESIS"`. Stop only when try says the run is over.'
        ),
    }


# -- SessionStart ---------------------------------------------------------------------------------------
def session_start(event: dict, state: RunState) -> dict:
    """The digest as context: best, last rows, near misses, crashes, next iteration; no held-out figure."""
    from autoresearch import digest

    config, rows = _load(state)
    text = digest.render(digest.digest(config, rows, state))
    intro = (
        f"An autoresearch run is checked out (branch autoresearch/{state.tag}). Follow program.md: edit "
        f'{state.train_rel} with one idea, then `uv run scripts/ratchet.py try "HYPOTHESIS"`; '
        "never stop on your own."
    )
    return {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": f"{intro}\n{text}"}}


# -- entry point ----------------------------------------------------------------------------------------
EVENTS = {"pre-tool-use": "PreToolUse", "stop": "Stop", "session-start": "SessionStart"}


def handle(event_name: str, event: dict, project_dir: str | None) -> dict | None:
    """What the hook prints (as JSON) for this event, or None for nothing (no opinion)."""
    state = run_state(project_dir or event.get("cwd") or ".")
    if state is None:
        return None
    if event_name == "pre-tool-use":
        reason = pre_tool_use(event, state)
        if reason is None:
            return None
        return {"hookSpecificOutput": {
            "hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": reason,
        }}  # fmt: skip
    if event_name == "stop":
        return stop(event, state)
    if event_name == "session-start":
        return session_start(event, state)
    raise ValueError(f"unknown hook event {event_name!r}; use one of {', '.join(EVENTS)}")
