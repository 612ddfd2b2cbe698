"""Claude Code hooks for an autoresearch run: rules as functions of the hook's input and the repository.

They act only while the checkout is on `autoresearch/<tag>` with a run record; on any other branch every
hook says nothing, so Claude Code works in this repository as usual. scripts/hook.py is the shim.

    PreToolUse    allow what program.md prescribes and read-only inspection, deny the rest: edits of
                  anything but the task's train.py, shell commands that are not one of the loop's shapes
                  (one simple command, or a short pipeline into head/tail/grep/wc), reads of the run's
                  private records or of the task's data, the person's ratchet verbs, tools the loop does
                  not use. An allow-list fails safe: a command no rule foresaw is denied, not let through.
    Stop          block the agent's stop while a wave is queued and not judged (it would lose the wave's
                  rows), or while no stop condition holds (stopping.stop_reason)
    SessionStart  put the status digest in the agent's context (startup, resume, compact, clear)

PreToolUse runs before every tool call, so it reads the branch and run.json as plain files and imports
nothing heavy (gitpython alone costs 0.4 s); Stop and SessionStart load the library.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from autoresearch import (
    cost,  # standard library only: a transcript path is remembered on every call
    data,  # standard library only: the data folders' locations
)

BRANCH_REF = "ref: refs/heads/autoresearch/"  # .git/HEAD of a checkout on a run branch (gitops.BRANCH_PREFIX)
RUNS_FOLDER = "autoresearch"  # under the git common dir: runs.run_dir
FILE_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
READ_TOOLS = ("Read", "Grep", "Glob", "LS", "NotebookRead")
# Claude Code's own to-do list and its background-shell bookkeeping: they touch no file of the project
INERT_TOOLS = ("TodoWrite", "TaskCreate", "TaskGet", "TaskList", "TaskUpdate", "BashOutput", "KillShell", "KillBash")
MAX_LOG_LINES = 200  # more than this from run.log floods the context; the crash line shows the last 12
# An agent that keeps ending its turn with no new row is stuck (a refusal it cannot fix, a broken setup):
# after this many blocked stops in a row without progress, let it stop rather than spend tokens all night.
STOP_BLOCKS_WITHOUT_PROGRESS = 5
RESULTS_FILE = "results.tsv"  # the run's mirror of the ledger, in the run folder (taskdir.RESULTS_FILE)
STOP_BLOCKS_FILE = "stop_hook.json"  # in the run folder: the rows count and the blocks since it changed
LOG_FILE = "run.log"  # the latest iteration's output, in the task folder (taskdir.LOG_FILE)
RATCHET_MIN_TIMEOUT_MS = 3_600_000  # .claude/settings.json's BASH_MAX_TIMEOUT_MS: a try may take that long
# `wait` without --all returns within 9 minutes (waves.py), so the Bash tool's stock cap of 10 minutes is enough
WAIT_MIN_TIMEOUT_MS = 600_000
QUEUE_FOLDER = "queue"  # in the run folder: NNNN.json per candidate submitted and not yet judged (waves.py)
RESULT_SUFFIX = ".result.json"  # NNNN.result.json beside a candidate once it is scored

# -- the shapes of shell command a run allows (program.md, README "Claude Code, all night") ----------------
RATCHET = "scripts/ratchet.py"
# program.md's verbs: try scores one candidate; submit queues one and wait judges the queued wave (issue 10)
AGENT_VERBS = ("start", "try", "status", "submit", "wait")
PERSON_VERBS = {
    "stop": "stopping the run is the person's call; go on with the next idea: the run ends by itself at the "
    "deadline, the iteration cap or when `try` says it is over",
    "report": "the report holds the held-out figures, kept for the person's morning review; "
    "`uv run scripts/ratchet.py status` has what the agent needs",
    "new-task": "new tasks are not part of a run; the task was fixed at `start`",
    "watch": "it is the person's live view and never ends on its own; the line `try` prints is all the agent "
    "needs, and `uv run scripts/ratchet.py status` the rest",
}
READERS = ("cat", "head", "tail", "grep", "wc", "ls", "find", "pwd")  # print files or names, write nothing
PIPE_FILTERS = ("head", "tail", "grep", "wc")  # what may read the output of the command before it
MAX_PIPELINE = 3  # `uv run train.py 2>&1 | grep -n auc | head -n 20`; longer is a program, not inspection
GIT_READ_VERBS = (
    "log",
    "show",
    "diff",
    "status",
    "for-each-ref",
    "rev-parse",
    "grep",
    "blame",
    "shortlog",
    "ls-files",
    "ls-tree",
    "cat-file",
    "rev-list",
    "show-ref",
    "describe",
    "branch",
)
GIT_BRANCH_LISTING = ("--show-current", "-a", "--all", "-r", "--remotes", "-v", "-vv")  # no name: lists
# `git log --output=F` writes F; `git grep -O CMD` runs CMD as a pager (git-grep(1), git-diff(1))
GIT_WRITING_OPTIONS = ("--output", "-O", "--open-files-in-pager")
# grep's options whose value may be the next word (grep(1)): `-A 3`, `-rne PATTERN`, `--exclude-dir DIR`
GREP_VALUE_OPTION = (
    r"-[a-zA-Z]*[ABCDdefm]|--(regexp|file|max-count|context|after-context|before-context|include|exclude|"
    r"exclude-dir|exclude-from|label|binary-files|devices|directories|group-separator)"
)
FIND_PREDICATES = (
    "-name",
    "-iname",
    "-path",
    "-ipath",
    "-wholename",
    "-regex",
    "-iregex",
    "-type",
    "-maxdepth",
    "-mindepth",
    "-newer",
    "-size",
    "-mtime",
    "-mmin",
    "-empty",
    "-not",
    "!",
    "-a",
    "-and",
    "-o",
    "-or",
    "(",
    ")",
    "-prune",
    "-print",
    "-print0",
    "-ls",
    "-L",
    "-H",
    "-P",
)  # find's tests and printing actions; -exec, -delete, -fprint... are absent on purpose
INSTALLERS = (
    "pip",
    "pip3",
    "npm",
    "npx",
    "pnpm",
    "yarn",
    "conda",
    "mamba",
    "apt",
    "apt-get",
    "brew",
    "poetry",
    "pipx",
    "easy_install",
)
PRIVATE_REASON = "the run's private records are not for the agent; `uv run scripts/ratchet.py status` has the rest"
DATA_REASON = (
    "the task's data file is the frozen harness's to read (program.md: out of scope); the task card describes "
    "it, and train.py receives it"
)
# what the shell would do beyond running one program: chain, redirect, substitute, expand, background; a
# glob too, since the shell's options (globstar, dotglob, nocaseglob) decide what it expands to
SHELL_SYNTAX = ";&|<>(){}\n`$*?["


@dataclass(frozen=True)
class RunState:
    """The active run as the hooks see it. Has `common_dir`, like gitops.Repo, for runs.run_dir."""

    root: Path  # the work tree
    common_dir: Path  # the git common dir (shared by worktrees): runs live under it
    tag: str
    task: str  # task folder relative to root, "." for the heart task
    workers: int = 1  # run.json's extra["workers"] (start --workers): more than one, the agent writes waves

    @property
    def train(self) -> Path:
        return (self.root / self.task / "train.py").resolve()

    @property
    def train_rel(self) -> str:
        return "train.py" if self.task == "." else f"{self.task}/train.py"

    @property
    def folder(self) -> Path:
        return self.common_dir / RUNS_FOLDER / self.tag

    @property
    def score_step(self) -> str:
        """How program.md has the agent score its edits in this run: one `try`, or a wave of `submit`s."""
        if self.workers > 1:
            return (
                f'`uv run scripts/ratchet.py submit "HYPOTHESIS"` for each variant of a wave (workers: '
                f"{self.workers}), then `uv run scripts/ratchet.py wait`"
            )
        return '`uv run scripts/ratchet.py try "HYPOTHESIS"`'


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
        extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
        workers = extra.get("workers")
        workers = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 1 else 1
        return RunState(folder, common, tag, record.get("task", "."), workers)
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
        return bash_rule(args, cwd, state)
    if tool in INERT_TOOLS:
        return None
    return (
        f"run {state.tag}: the {tool or 'unnamed'} tool is not part of the loop; change {state.train_rel} with "
        f'the Edit tool, score it with `uv run scripts/ratchet.py try "HYPOTHESIS"`, read files with Read or Grep'
    )


def _resolve(path: str, cwd: Path) -> Path | None:
    """The path as the shell or a tool would open it, symlinks and `..` resolved; None if no path can be."""
    try:
        return (cwd / os.path.expanduser(path)).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop: nothing to open
        return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it: by name, or by identity on disk (on a case-insensitive
    file system `.GIT/AutoResearch` opens `.git/autoresearch`)."""
    text, name = str(path), str(folder)
    if text == name or text.startswith(name.rstrip(os.sep) + os.sep):
        return True
    if folder.name.lower() not in text.lower():  # strings are cheap; this runs for every word of a command
        return False
    for ancestor in (path, *path.parents):
        try:
            if ancestor.name.lower() == folder.name.lower() and os.path.samestat(ancestor.stat(), folder.stat()):
                return True
        except OSError:  # either is not there: a name, not a file
            continue
    return False


def file_edit_rule(path: str, cwd: Path, state: RunState) -> str | None:
    if path and _resolve(path, cwd) == state.train:
        return None
    return (
        f"run {state.tag}: only {state.train_rel} may change; put the idea there and run "
        f'`uv run scripts/ratchet.py try "HYPOTHESIS"` (the harness, scripts, tests and config are frozen)'
    )


def _guarded(state: RunState) -> dict[Path, str]:
    """The folders the agent may not read during a run, each with what it is told instead."""
    environment = os.environ.get(data.CACHE_ENV, ""), os.environ.get(data.MIRROR_ENV, "")
    return _guarded_folders(state.root, state.common_dir, *environment)


@functools.cache  # a command's every word is checked against them: resolve them once per environment
def _guarded_folders(root: Path, common_dir: Path, cache: str, mirror: str) -> dict[Path, str]:
    """`cache` and `mirror` are the environment's values (the key); data.cache_dir() applies the default."""
    folders = {common_dir / RUNS_FOLDER: PRIVATE_REASON, data.cache_dir(): DATA_REASON}
    if mirror:
        folders[Path(mirror)] = DATA_REASON
    return {resolved: reason for folder, reason in folders.items() if (resolved := _resolve(str(folder), root))}


def _guard_reason(path: Path | None, state: RunState, below: bool = False, skips_git: bool = False) -> str | None:
    """Why reading `path` is denied: it lies in a guarded folder, or (`below`: a recursive search from it)
    a guarded folder lies under it, unless inside the `.git` folder that the search skips from outside."""
    if path is None:
        return None
    git = state.common_dir if state.common_dir.name == ".git" else None  # what grep and rg call .git
    for folder, reason in _guarded(state).items():
        if _inside(path, folder):
            return reason
        skipped = skips_git and git and _inside(folder, git) and not _inside(path, git)
        if below and _inside(folder, path) and not skipped:
            return reason
    return None


def read_rule(tool: str, args: dict, cwd: Path, state: RunState) -> str | None:
    searches = tool in ("Grep", "Glob")  # ripgrep underneath: recursive, and it leaves .git out
    for key in ("file_path", "notebook_path", "path"):
        if args.get(key):
            reason = _guard_reason(_resolve(str(args[key]), cwd), state, below=searches, skips_git=True)
            if reason:
                return reason
    names = str(args.get("pattern", "")) if tool == "Glob" else str(args.get("glob", ""))
    if re.search(r"(^|/)\.git(/|$)", names):
        return PRIVATE_REASON
    if tool == "Read" and os.path.basename(str(args.get("file_path", ""))) == LOG_FILE:
        limit = str(args.get("limit") or "")
        if not (limit.isdigit() and 0 < int(limit) <= MAX_LOG_LINES):
            return f"run.log is long: Read at most {MAX_LOG_LINES} lines of it (limit), or `tail -n 50 run.log`"
    return None


def shell_stages(command: str) -> tuple[list[list[str]], list[str]] | str:
    """The command as the words of its stages and the operators between them (`|`, `&&`), or what in it is
    more than one simple command or a pipeline: anything the shell would chain, redirect, substitute,
    expand (a glob too: quote a pattern) or put in the background. Quotes are tracked here, because shlex
    gives the same word for `;` and `";"`; shlex then splits each stage into words. `2>&1` is the one
    redirection let through (it writes no file)."""
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", command):  # NUL, CR...: the shell and shlex split them apart
        return "a control character"
    text, cuts, operators, quote, i = list(command), [0], [], "", 0
    while i < len(command):
        c = command[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            if command[i + 1 : i + 2] == "\n":  # the shell joins the lines, shlex keeps the newline in the word
                return "a line continuation"
            i += 1  # the next character is literal (inside double quotes it keeps its backslash: still literal)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c in "$`":
                return f"`{c}` inside double quotes (the shell expands it there; single quotes keep text literal)"
        elif c in "'\"":
            quote = c
        elif re.match(r"2>&1(\s|\||$)", command[i:]) and (i == 0 or command[i - 1].isspace()):
            text[i : i + 4] = " " * 4
            i += 3
        elif c == "|" and command[i + 1 : i + 2] not in ("|", "&"):
            operators.append("|")
            cuts += [i, i + 1]
        elif command.startswith("&&", i):
            operators.append("&&")
            cuts += [i, i + 2]
            i += 1
        elif c in SHELL_SYNTAX or _tilde_prefix(command, i):
            token = re.match(r"\n|[;&|<>(){}`$*?\[]+|~.", command[i:]).group()
            return "a second line" if token == "\n" else f"`{token}`"
        i += 1
    if quote:
        return "an unclosed quote"
    cuts.append(len(command))
    try:
        stages = [shlex.split("".join(text[a:b])) for a, b in zip(cuts[::2], cuts[1::2], strict=True)]
    except ValueError:  # a backslash at the very end
        return "a trailing backslash"
    return (stages, operators) if all(stages) else "an empty command"


def _tilde_prefix(command: str, i: int) -> bool:
    """`~-`, `~+` or `~N` starting a word (or a value after = or :): the shell's $OLDPWD, $PWD or pushd's
    stack, not a path the hook can resolve; `HEAD~1` is no such word."""
    return bool(re.match(r"~[-+0-9]", command[i:])) and (i == 0 or command[i - 1] in " \t=:")


def bash_rule(tool_input: dict, cwd: Path, state: RunState) -> str | None:
    """Why this shell command must not run during the run, or None: it is one of the loop's shapes."""
    if tool_input.get("run_in_background"):
        return (
            f"run {state.tag}: run commands in the foreground and wait for their line (program.md); a ratchet "
            "call may take minutes, and the settings give it an hour"
        )
    parsed = shell_stages(str(tool_input.get("command", "")))
    if isinstance(parsed, str):
        return _not_simple(parsed, state)
    stages, operators = parsed
    if stages[0][0] == "cd" and len(stages[0]) <= 2 and operators[:1] in ([], ["&&"]):  # `cd DIR && CMD`
        cwd = _resolve(stages[0][1] if len(stages[0]) == 2 else "~", cwd) or cwd / "-"
        if not cwd.is_dir():  # bash would look along $CDPATH, or take $OLDPWD for `cd -`
            return _not_simple("`cd` to anything but an existing folder", state)
        stages, operators = stages[1:], operators[1:]
    # a folder from which git grep, find or ls -R reaches a guarded one (`cd .git && git grep --no-index x`)
    reason = _guard_reason(_resolve(".", cwd), state, below=True, skips_git=True)
    if reason or not stages:
        return reason
    if "&&" in operators:
        return _not_simple("`&&`", state)
    if len(stages) > MAX_PIPELINE:
        return _not_simple(f"a pipeline of {len(stages)} commands (at most {MAX_PIPELINE})", state)
    for position, words in enumerate(stages):
        reason = command_rule(words, cwd, state, position, len(stages), tool_input.get("timeout"))
        if reason:
            return reason
    return None


def _not_simple(what: str, state: RunState) -> str:
    return (
        f"run {state.tag}: one simple command at a time, or a pipeline into head/tail/grep/wc; {what} is not "
        f"(no ;, &&, ||, &, redirections, $(...), backticks, subshells or here-documents): change "
        f"{state.train_rel} with the Edit tool, read with Read, `tail -n 50 run.log` or `git show`"
    )


def command_rule(
    words: list[str], cwd: Path, state: RunState, position: int, stages: int, timeout_ms: object
) -> str | None:
    """Why this stage of a pipeline must not run, or None: it matches one of the loop's shapes and names
    no guarded folder."""
    program, args = words[0], words[1:]
    if position > 0 and program not in PIPE_FILTERS:
        return _not_simple(f"`| {program}`", state)
    if program == "uv":
        reason = _uv_rule(args, cwd, state, alone=stages == 1, timeout_ms=timeout_ms)
    elif program == "git":
        reason = _git_rule(args, state)
    elif program in READERS:
        reason = _reader_rule(program, args, cwd, state)
    elif program in INSTALLERS:
        reason = _install_reason(program)
    else:
        reason = (
            f"run {state.tag}: `{program}` is not one of the loop's commands (program.md); the shell runs "
            f"`uv run scripts/ratchet.py try|status|start`, `uv run {state.train_rel}`, read-only git (log, "
            f"show, diff, status) and cat/head/tail/grep/wc/ls/find; change {state.train_rel} with the Edit tool"
        )
    return reason or _guard_words(args, cwd, state)


def _install_reason(what: str) -> str:
    return (
        f"`{what}` would change the environment: installing or changing packages is out of scope; use what "
        "pyproject.toml declares (scikit-learn, LightGBM, XGBoost CPU, FLAML; torch for the language-model task)"
    )


def _uv_rule(args: list[str], cwd: Path, state: RunState, alone: bool, timeout_ms: object) -> str | None:
    """`uv run [--extra X] scripts/ratchet.py VERB …` (alone, no short timeout) or `uv run [--extra X] train.py`."""
    if not args or args[0] != "run":
        return _install_reason(f"uv {args[0] if args else ''}".strip())
    rest = args[1:]
    while rest[:1] == ["--extra"] or rest and rest[0].startswith("--extra="):  # a declared extra: `--extra lm`
        rest = rest[2:] if rest[0] == "--extra" else rest[1:]
    script = _resolve(rest[0], cwd) if rest else None
    if script == state.train:
        return None
    if script != (state.root / RATCHET).resolve():
        return (
            f"during run {state.tag}, uv runs the ratchet or {state.train_rel}, not `{' '.join(args)}`: "
            f"`uv run [--extra lm] scripts/ratchet.py try|status|start` or `uv run {state.train_rel}`"
        )
    verb = next((word for word in rest[1:] if not word.startswith("-")), "")
    if verb in PERSON_VERBS:
        return f"`ratchet.py {verb}` is not the agent's during run {state.tag}: " + PERSON_VERBS[verb]
    if verb not in AGENT_VERBS:
        return f"`ratchet.py {verb}`: the agent's verbs are start (--resume), try, submit, wait and status"
    if not alone:
        return f"run the ratchet on its own during run {state.tag}: it prints its lines, and a pipe can cut them off"
    waits_briefly = verb == "wait" and "--all" not in rest  # it returns within 9 minutes, scored or not
    shortest = WAIT_MIN_TIMEOUT_MS if waits_briefly else RATCHET_MIN_TIMEOUT_MS
    if isinstance(timeout_ms, int | float) and timeout_ms < shortest:
        return (
            f"run the ratchet without a timeout shorter than {shortest} ms (program.md): a call may take many "
            "minutes, the settings give it an hour, and the harness enforces its own budget"
        )
    return None


def _git_rule(args: list[str], state: RunState) -> str | None:
    verb, rest = (args[0], args[1:]) if args else ("", [])
    if verb == "--no-pager" and rest:
        verb, rest = rest[0], rest[1:]
    read_only = verb in GIT_READ_VERBS and not any(word.startswith(GIT_WRITING_OPTIONS) for word in rest)
    if verb == "branch":  # a name creates a branch; -d, -m, -f... change one
        read_only = set(rest) <= set(GIT_BRANCH_LISTING)
    if read_only:
        return None
    return (
        f"`git {' '.join(args[:2])}` is not read-only inspection, and git is the ratchet's job during run "
        f"{state.tag} (it commits, keeps and resets {state.train_rel}): read with git log, show, diff or status; "
        f'change {state.train_rel} with the Edit tool, then `uv run scripts/ratchet.py try "HYPOTHESIS"`'
    )


def _reader_rule(program: str, args: list[str], cwd: Path, state: RunState) -> str | None:
    if any(word.startswith("--files0-from") for word in args):  # files named by a file or stdin we do not see
        return f"`{program} --files0-from` is not allowed during run {state.tag}: name the files"
    if program == "find":
        action = next((word for word in args if word.startswith("-") and word not in FIND_PREDICATES), None)
        if action:
            return (
                f"`find {action}` is not allowed during run {state.tag}: find lists names (-name, -path, -type, "
                "-maxdepth...); read a file with Read, grep or tail"
            )
    if program == "tail" and any(re.fullmatch(r"-[a-zA-Z]*[fF][a-zA-Z]*|--follow(=.*)?|--retry", w) for w in args):
        return "tail -f never returns (the shell waits up to an hour): read the end with `tail -n 50 run.log`"
    if program == "grep":
        reason = _recursive_grep_rule(args, cwd, state)
        if reason:
            return reason
    if any(os.path.basename(word) == LOG_FILE for word in args):
        return _log_rule(program, args)
    return None


def _log_rule(program: str, args: list[str]) -> str | None:
    """run.log in pieces: grep, wc, or head and tail of at most MAX_LOG_LINES lines (`-n N`, `-nN`, `-N`);
    never cat, a byte count, `tail -n +N` (from line N to the end) or `head -n -N` (all but N lines)."""
    count = re.fullmatch(r"((-n ?|--lines=|-)(\d+))?", " ".join(w for w in args if os.path.basename(w) != LOG_FILE))
    if program == "cat" or program in ("head", "tail") and not (count and int(count[3] or 0) <= MAX_LOG_LINES):
        return (
            f"run.log can be long: read at most {MAX_LOG_LINES} lines, `tail -n 50 run.log` or `grep -n Error run.log`"
        )
    return None


def _recursive_grep_rule(args: list[str], cwd: Path, state: RunState) -> str | None:
    """A recursive grep that may reach a guarded folder: grep does not skip .git unless told to. With no
    file named it searches `.`."""
    recursive = any(re.fullmatch(r"-[a-zA-Z]*[rR].*|--(dereference-)?recursive", word) for word in args)
    recursive |= bool(re.search(r"(^| )(-d ?|--directories[= ])recurse( |$)", " ".join(args)))
    skips_git = any(re.fullmatch(r"--exclude-dir=\.git/?", word) for word in args)
    files, value_next = [], False  # the words grep searches: not options, their values or the pattern
    for word in args:
        if not value_next and not word.startswith("-"):
            files.append(word)
        value_next = not value_next and bool(re.fullmatch(GREP_VALUE_OPTION, word))
    given = any(re.fullmatch(r"-[a-zA-Z]*[ef].*|--(regexp|file)(=.*)?", word) for word in args)  # -e PATTERN
    for root in ((files if given else files[1:]) or ["."]) if recursive else []:  # no file: grep searches .
        reason = _guard_reason(_resolve(root, cwd), state, below=True, skips_git=skips_git)
        if reason:
            return (
                f"a recursive grep from {root} reaches a folder the agent may not read ({reason}): add "
                "--exclude-dir=.git, or use the Grep tool"
            )
    return None


def _guard_words(words: list[str], cwd: Path, state: RunState) -> str | None:
    """The reason if any word names a guarded path: an argument or an option's value (`--opt=PATH`,
    `-fPATH`). A word that is no path (a hypothesis) resolves to nothing guarded."""
    for word in words:
        candidates = {word, word.partition("=")[2] if word.startswith("-") else ""}
        candidates.add(word[2:] if re.match(r"-[^-]", word) else "")
        for candidate in candidates - {""}:
            reason = _guard_reason(_resolve(candidate, cwd), state)
            if reason:
                return reason
    return None


# -- Stop -----------------------------------------------------------------------------------------------
def _load(state: RunState):
    from autoresearch import ledger, runs  # the library imports gitpython: only where it is needed

    return runs.load_config(state, state.tag), ledger.run_rows(state.folder / RESULTS_FILE, state.tag)


def queued_candidates(folder: Path) -> int:
    """How many candidates of the run in `folder` are submitted and not yet judged: the queue's NNNN.json
    files (their NNNN.result.json beside them once scored). A file of the queue's is an unjudged wave."""
    queue = folder / QUEUE_FOLDER
    names = [p.name for p in queue.glob("*.json")] if queue.is_dir() else []
    return len({name.removesuffix(RESULT_SUFFIX).removesuffix(".json") for name in names})  # NNNN, once each


def stop(event: dict, state: RunState) -> dict:
    """Block the stop while a wave waits to be judged or the run should go on; otherwise let it end, saying why.
    A queued wave comes first: a stop condition (the deadline, the cap) still leaves its candidates to `wait`,
    which records their rows."""
    from autoresearch import digest, stopping
    from autoresearch.runs import read_json, write_json

    config, rows = _load(state)
    queued = queued_candidates(state.folder)
    reason = None if queued else stopping.stop_reason(config, rows, state.folder)
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
    if queued:
        return {
            "decision": "block",
            "reason": (
                f"autoresearch run {state.tag}: a wave is in flight: run `wait` first ({queued} "
                f"{'candidate is' if queued == 1 else 'candidates are'} queued): `uv run scripts/ratchet.py wait` "
                "records their rows; read its lines, then go on."
            ),
        }
    d = digest.digest(config, rows, state, cost=False)  # the agent needs the next step, not the bill
    best = d["best"]
    shown = f"best {d['metric']}={best[d['metric']]:.4f} at iter {best['iter']}" if best else "no kept row yet"
    verb = "submit" if state.workers > 1 else "try"
    return {
        "decision": "block",
        "reason": (
            f"autoresearch run {state.tag} is not over (next: iter {d['next_iter']}, {shown}). "
            f"Do not stop and do not ask: edit {state.train_rel} with the next idea, then run {state.score_step}. "
            f"Stop only when {verb} says the run is over."
        ),
    }


# -- SessionStart ---------------------------------------------------------------------------------------
def session_start(event: dict, state: RunState) -> dict:
    """Where the run stands, once per session. A new or resumed session will call `start`, which prints the
    digest itself: the hook then says one line, so the agent does not read the digest twice. After a compact
    or a clear the agent goes on without a `start`: the hook gives the digest (no held-out figure)."""
    intro = (
        f"An autoresearch run is checked out (branch autoresearch/{state.tag}). Follow program.md: edit "
        f"{state.train_rel} with one idea, then {state.score_step}; never stop on your own."
    )
    if event.get("source") in ("startup", "resume"):
        task = "" if state.task == "." else f" --task {state.task}"
        intro += f" `ratchet.py start {state.tag}{task}` goes on with it and prints where it stands."
        return {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": intro}}
    from autoresearch import digest

    config, rows = _load(state)
    text = digest.render(digest.digest(config, rows, state, cost=False))
    return {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": f"{intro}\n{text}"}}


# -- entry point ----------------------------------------------------------------------------------------
EVENTS = {"pre-tool-use": "PreToolUse", "stop": "Stop", "session-start": "SessionStart"}


def handle(event_name: str, event: dict, project_dir: str | None) -> dict | None:
    """What the hook prints (as JSON) for this event, or None for nothing (no opinion)."""
    state = run_state(project_dir or event.get("cwd") or ".")
    if state is None:
        return None
    cost.record_transcript(state.folder, event.get("transcript_path"))  # what the model cost, for interactive runs
    if event_name == "pre-tool-use":
        reason = pre_tool_use(event, state)
        if reason is None:
            return None
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }
    if event_name == "stop":
        return stop(event, state)
    if event_name == "session-start":
        return session_start(event, state)
    raise ValueError(f"unknown hook event {event_name!r}; use one of {', '.join(EVENTS)}")
