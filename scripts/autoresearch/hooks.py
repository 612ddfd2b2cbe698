"""Claude Code hooks for an autoresearch run: rules as functions of the hook's input and the repository.

They act only while the checkout is on `autoresearch/<tag>` with a run record; on any other branch every
hook says nothing, so Claude Code works in this repository as usual. scripts/hook.py is the shim.

    PreToolUse    deny edits of anything but the task's train.py, shell commands that change frozen files,
                  install packages or rewrite git history, dumps of run.log, reads of .git/autoresearch
                  (paths, globs, recursive grep), and the ratchet verbs that are the person's
    Stop          block the agent's stop while no stop condition holds (stopping.stop_reason)
    SessionStart  put the status digest in the agent's context (startup, resume, compact, clear)

PreToolUse runs before every tool call, so it reads the branch and run.json as plain files and imports
nothing heavy (gitpython alone costs 0.4 s); Stop and SessionStart load the library.
"""

from __future__ import annotations

import fnmatch
import glob
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
MAX_LOG_BYTES = 200 * MAX_LOG_LINES  # `tail -c`: 200 lines of up to ~200 characters
# An agent that keeps ending its turn with no new row is stuck (a refusal it cannot fix, a broken setup):
# after this many blocked stops in a row without progress, let it stop rather than spend tokens all night.
STOP_BLOCKS_WITHOUT_PROGRESS = 5
RESULTS_FILE = "results.tsv"  # the run's mirror of the ledger, in the run folder (loop.RESULTS_FILE)
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
GIT_READ_ONLY_FORMS = {"stash": {"list", "show"}, "worktree": {"list"}}  # first word after the verb
GIT_BRANCH_WRITES = {
    "-d", "-D", "-m", "-M", "-f", "-c", "-C", "-u", "-t", "--delete", "--force", "--move", "--copy",
    "--track",
    "--set-upstream-to", "--unset-upstream", "--edit-description",
}  # fmt: skip
GIT_BRANCH_LIST_MODE = {
    "--list", "-l", "-v", "-vv", "--verbose", "--contains", "--no-contains", "--merged", "--no-merged",
    "--points-at",
}  # fmt: skip  # git branch lists (not creates) when one of these is given: builtin/branch.c
GIT_CONFIG_READS = {"--get", "--get-all", "--get-regexp", "--get-urlmatch", "--get-color", "--list", "-l"}
GIT_CONFIG_WRITES = {"--unset", "--unset-all", "--add", "--replace-all", "--rename-section",
                     "--remove-section",
                     "--edit", "-e", "set", "unset", "rename-section", "remove-section", "edit"}  # fmt: skip
GIT_CONFIG_OPTIONS_WITH_VALUE = {"-f", "--file", "--blob", "--type", "--default", "--comment"}
UV_RUN_OPTIONS_WITH_VALUE = {
    "--extra", "--no-extra", "--group", "--no-group", "--only-group", "--with", "--with-editable",
    "--with-requirements", "--python", "-p", "--project", "--directory", "--package", "--env-file", "--index",
    "--default-index", "--index-url", "--extra-index-url", "--find-links", "-f", "--cache-dir",
    "--config-file",
}  # fmt: skip  # `uv run --extra lm train.py`: the value is not the program
RATCHET_VERBS_FOR_THE_PERSON = {
    "stop": "stopping the run is the person's call; go on with the next idea: the run ends by itself at the "
    "deadline, the iteration cap or when `try` says it is over",
    "report": "the report holds the held-out figures, kept for the person's morning review; "
    "`uv run scripts/ratchet.py status` has what the agent needs",
    "new-task": "new tasks are not part of a run; the task was fixed at `start`",
}
GREP_OPTIONS_WITH_VALUE = set("efmABCdD")  # short options of grep whose value may be the next word
RG_OPTIONS_WITH_VALUE = set("efgtTmABCMjErd") | {
    "--regexp", "--file", "--glob", "--iglob", "--type", "--type-not", "--max-count", "--after-context",
    "--before-context", "--context", "--max-columns", "--threads", "--encoding", "--replace", "--max-depth",
    "--sort", "--sortr", "--pre", "--pre-glob", "--type-add", "--type-clear", "--colors", "--ignore-file",
    "--path-separator", "--max-filesize", "--engine", "--context-separator", "--field-match-separator",
}  # fmt: skip
GREP_LONG_WITH_VALUE = {
    "--regexp", "--file", "--include", "--exclude", "--exclude-dir", "--exclude-from", "--directories",
    "--devices", "--max-count", "--context", "--after-context", "--before-context", "--label",
    "--binary-files",
}  # fmt: skip
GREPS = {"grep", "egrep", "fgrep", "rgrep", "rg"}
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
                i += 2 if words[i] in UV_RUN_OPTIONS_WITH_VALUE else 1
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
    if _private(cwd.resolve(), state):
        return _private_reason(state)
    commands = split_command(command)
    for words in commands:
        reason = _simple_command_rule(words, cwd, state, commands)
        if reason:
            return reason
        program, args = _program(words)
        if program == "cd":  # `cd .git && cat autoresearch/…`: later commands run there
            cwd = _resolve(args[-1] if args else "~", cwd)
    return None


def _reads_private(word: str, cwd: Path, state: RunState) -> bool:
    """Whether this argument names the run's private records: a path or glob into the run folder, or a
    held-out file's name (also inside `python -c` code). A plain word such as a hypothesis is not a path."""
    if ".git/autoresearch" in word:
        return True
    value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
    if any(
        "heldout" in token and re.search(r"[/.*?\[]", token) for token in re.split(r"[\s'\"(),;=]+", value)
    ):
        return True
    if not value or "\n" in value:
        return False
    try:
        if re.search(r"[*?\[]", value):  # what the shell would expand it to; the run folder itself is no
            # file to read, so a quoted pattern such as `find -not -path './.git/*'` passes
            inside = [_resolve(match, cwd) for match in _expand(value, cwd)]
            return any(_private(path, state) and path != state.common_dir / RUNS_FOLDER for path in inside)
        return _private(_resolve(value, cwd), state)
    except (OSError, ValueError):  # a word no file system could hold is no path
        return False


def _expand(word: str, cwd: Path) -> list[str]:
    """A glob as the shell expands it (the word itself when nothing matches)."""
    if not re.search(r"[*?\[]", word):
        return [word]
    return glob.glob(os.path.expanduser(word), root_dir=cwd) or [word]


def _simple_command_rule(
    words: list[str], cwd: Path, state: RunState, pipeline: list[list[str]]
) -> str | None:
    for target in _targets(words):
        if _frozen(target, cwd, state):
            return _frozen_reason(target, state)
    every_word = words  # with `< FILE`, and a heredoc's lines, where a path can be the first word
    words = [w for i, w in enumerate(words) if w not in (">", ">>", ">|", "&>", "&>>", "<") and
             not (i > 0 and words[i - 1] in (">", ">>", ">|", "&>", "&>>", "<"))]  # fmt: skip
    program, args = _program(words)
    if not program:
        return None
    if program in ("python", "python3") and args and os.path.basename(args[0]) == "ratchet.py":
        program, args = "ratchet.py", args[1:]
    if program == "ratchet.py":  # its words are a verb and a hypothesis, not files to read
        verb = next((a for a in args if not a.startswith("-")), "")
        if verb in RATCHET_VERBS_FOR_THE_PERSON:
            return (
                f"`ratchet.py {verb}` is not the agent's during run {state.tag}: "
                + RATCHET_VERBS_FOR_THE_PERSON[verb]
            )
        return None
    if any(_reads_private(word, cwd, state) for word in every_word):
        return _private_reason(state)
    if program in GREPS:
        reason = _recursive_search_rule(program, args, cwd, state)
        if reason:
            return reason
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


def _search_words(program: str, args: list[str]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """grep/rg arguments as (short flags, options with their values, the paths searched)."""
    with_value = RG_OPTIONS_WITH_VALUE if program == "rg" else GREP_OPTIONS_WITH_VALUE | GREP_LONG_WITH_VALUE
    flags, options, positional = [], [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional += args[i + 1 :]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if not eq and name in with_value and i + 1 < len(args):
                i, value = i + 1, args[i + 1]
            options.append((name, value))
        elif arg.startswith("-") and len(arg) > 1:
            for j, letter in enumerate(arg[1:], start=1):  # a cluster: -rn, -A3, -e PATTERN
                if letter in with_value:
                    value = arg[j + 1 :]
                    if not value and i + 1 < len(args):
                        i, value = i + 1, args[i + 1]
                    options.append(("-" + letter, value))
                    break
                flags.append(letter)
        else:
            positional.append(arg)
        i += 1
    patterns_given = any(name in ("-e", "-f", "--regexp", "--file") for name, _ in options)
    return flags, options, positional if patterns_given else positional[1:]


def _recursive_search_rule(program: str, args: list[str], cwd: Path, state: RunState) -> str | None:
    """A recursive grep, or rg, whose search reaches .git, where the run keeps its held-out records."""
    flags, options, paths = _search_words(program, args)
    names = [name for name, _ in options]
    if program == "rg":  # always recursive; skips hidden folders such as .git unless told not to
        skips_git = not ("." in flags or flags.count("u") >= 2 or "--hidden" in names or
                         names.count("--unrestricted") >= 2) or any(
            value.startswith("!") and fnmatch.fnmatch(".git", value[1:].strip("/").split("/")[0])
            for name, value in options if name in ("-g", "--glob", "--iglob"))  # fmt: skip
    else:
        recursive = program == "rgrep" or "r" in flags or "R" in flags or any(
            name in ("--recursive", "--dereference-recursive") or
            (name in ("-d", "--directories") and value == "recurse") for name, value in options)  # fmt: skip
        if not recursive:
            return None
        skips_git = any(name == "--exclude-dir" and fnmatch.fnmatch(".git", value.rstrip("/"))
                        for name, value in options)  # fmt: skip
    private = state.common_dir / RUNS_FOLDER
    for root in [path for word in paths for path in _expand(word, cwd)] or ["."]:
        folder = _resolve(root, cwd)
        if not _inside(private, folder):
            continue
        if not skips_git or _inside(folder, state.common_dir):
            return (
                f"a recursive {program} from {root} reaches .git, where the run keeps its held-out records: "
                f"add --exclude-dir=.git (rg: leave out --hidden, or add -g '!.git'), or name the files and "
                f"folders to search (`grep -rn PATTERN {state.train_rel} scripts/`)"
            )
    return None


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
    if any(a.partition("=")[0] in ("--output", "--output-directory") for a in rest):
        return (
            f"git {verb} --output writes a file, and only {state.train_rel} may change during run "
            f"{state.tag}: "
            "read git's output in the terminal (pipe it to head or tail)"
        )
    dangerous = verb in GIT_WRITES and not (rest and rest[0] in GIT_READ_ONLY_FORMS.get(verb, ()))
    if verb == "branch":
        options = {a.partition("=")[0] for a in rest if a.startswith("-")}
        listing = bool(options & GIT_BRANCH_LIST_MODE)
        dangerous = bool(options & GIT_BRANCH_WRITES) or (
            not listing and any(not a.startswith("-") for a in rest)
        )  # a name without a listing option creates a branch
    elif verb == "tag":
        dangerous = any(a in ("-d", "--delete", "-f", "--force") for a in rest)
    elif verb == "push":
        dangerous = any(a in ("-f", "--force", "--force-with-lease", "--delete", "-d", "--mirror") or
                        a.startswith(("+", "--force", ":")) for a in rest)  # fmt: skip
    elif verb == "reflog":
        dangerous = bool(rest) and rest[0] in ("expire", "delete")
    elif verb == "config":
        words = {a.partition("=")[0] for a in rest}
        names = [a for k, a in enumerate(rest) if not a.startswith("-") and
                 not (k > 0 and rest[k - 1] in GIT_CONFIG_OPTIONS_WITH_VALUE)]  # fmt: skip
        reads = bool(words & GIT_CONFIG_READS) or (bool(rest) and rest[0] in ("get", "list"))
        dangerous = bool(words & GIT_CONFIG_WRITES) or (not reads and len(names) >= 2)  # `config KEY VALUE`
    if not dangerous:
        return None
    return (
        f"git {verb} is the ratchet's job during run {state.tag}: it commits, keeps or resets train.py; "
        f'edit {state.train_rel} and run `uv run scripts/ratchet.py try "HYPOTHESIS"`'
    )


def _log_rule(program: str, args: list[str], pipeline: list[list[str]]) -> str | None:
    if program == "tail" and any(re.fullmatch(r"-[a-zA-Z]*[fF][a-zA-Z]*|--follow(=.*)?", a) for a in args):
        return "tail -f never returns (the shell waits up to an hour): read the end with `tail -n 50 run.log`"
    reads_log = any(os.path.basename(a) == "run.log" for a in args if not a.startswith("-"))
    if not reads_log:
        return None
    filtered = any(_program(words)[0] in ("head", "tail", "grep", "rg", "wc", "awk", "sed") and
                   _program(words)[0] != program for words in pipeline)  # fmt: skip
    if program in PAGERS and not filtered:
        return "run.log can be long: read its end with `tail -n 50 run.log`, or `grep -n Error run.log`"
    if program in ("head", "tail"):
        too_much = f"at most {MAX_LOG_LINES} lines of run.log at a time: `tail -n 50 run.log`"
        for unit, count in _counts(args):
            # tail +N prints from line N to the end, head -N all but the last N: the whole log either way
            if count.startswith("+" if program == "tail" else "-"):
                return too_much
            digits = count.lstrip("+-")
            limit = MAX_LOG_LINES if unit == "lines" else MAX_LOG_BYTES
            if digits.isdigit() and int(digits) > limit:
                return too_much
    return None


def _counts(args: list[str]) -> list[tuple[str, str]]:
    """head/tail counts as (lines|bytes, count as written): -n N, -nN, --lines=N, --lines N, -N, +N."""
    counts = []
    for i, arg in enumerate(args):
        option, eq, value = arg.partition("=")
        unit = "bytes" if option in ("-c", "--bytes") or arg.startswith("-c") else "lines"
        if option in ("--lines", "--bytes") and eq:
            counts.append((unit, value))
        elif arg in ("-n", "-c", "--lines", "--bytes") and i + 1 < len(args):
            counts.append((unit, args[i + 1]))
        elif re.fullmatch(r"-[nc][+-]?\d+[kKmMbB]?", arg):
            counts.append((unit, arg[2:]))
        elif re.fullmatch(r"[+-]\d+", arg):  # the obsolete forms: -20 is 20 lines, tail +20 from line 20
            counts.append(("lines", arg.lstrip("-")))
    return counts


# -- Stop -----------------------------------------------------------------------------------------------
def _load(state: RunState):
    from autoresearch import ledger, runs  # the library imports gitpython: only where it is needed

    return runs.load_config(state, state.tag), ledger.run_rows(state.folder / RESULTS_FILE, state.tag)


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
