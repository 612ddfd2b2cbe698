"""The ratchet: start a run, try one edit of train.py, keep it or reset it. Library code behind scripts/ratchet.py.

One iteration (`try_edit`): lock the checkout, recover a previous iteration that died, check that only the
task's train.py changed, commit it, score it with the frozen harness in its own process group, decide
with the paired keep rule, append one row to results.tsv, then keep the commit or save it under a ref and
return train.py to the best. Each step is recorded in state.json first, so a ratchet killed at any point
is finished or rolled back by the next call, and no row is lost.
"""

from __future__ import annotations

import ast
import io
import math
import re
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoresearch import ledger, proc, sandbox, stopping, summary, trust
from autoresearch.decide import (
    CALIBRATION_RUNS,
    code_lines,
    decide,
    decide_reruns,
    pooled_sd,
    preload_t_distribution,
)
from autoresearch.gitops import BRANCH_PREFIX, REF_PREFIX, Repo
from autoresearch.runs import (
    CheckoutLock,
    RunConfig,
    RunError,
    check_tag,
    config_from,
    load_config,
    read_json,
    run_dir,
    save_config,
    tag_of_branch,
    write_json,
)

RESULTS_FILE = "results.tsv"  # in the task folder, untracked (karpathy's name and place)
LOG_FILE = "run.log"  # the latest iteration's full output, in the task folder, untracked
HARNESS_GRACE_SECONDS = 60  # interpreter start-up, data and scoring on top of the candidate's budget
BASELINE_TIMEOUT_SECONDS = 3600  # the budget is not known before the baseline reports it
LOG_TAIL_LINES = 12  # what a crash shows of run.log: the traceback's end, not the whole log
LOG_TAIL_LINE_CHARS = 240
STEERING_FILES = ("program.md",)  # the person's directions: may be edited during a run; the ratchet never commits it
SUBJECT_CHARS = 100  # commit subjects longer than this are cut; the full hypothesis goes in the body
STATE_FILE = "state.json"  # the iteration in flight, in the run's folder: what recovery finishes or rolls back
START_FILE = "start.json"  # a start in flight: its options, then its scored baseline, until the run exists
HARNESS_PGID_FILE = "harness.pgid"  # the harness's process group, apart from state.json: junk there cannot hide it
EDITED_WHILE_SCORED = "train.py was edited while it was being scored: the score would not be of the committed code"


@dataclass
class Task:
    dir: Path
    rel: str  # folder relative to the repository root, "." for the root
    prepare_rel: str
    train_rel: str

    @property
    def results(self) -> Path:
        return self.dir / RESULTS_FILE

    @property
    def log(self) -> Path:
        return self.dir / LOG_FILE


def find_task(repo: Repo, task: str) -> Task:
    folder = (repo.root / task).resolve()
    for name in ("prepare.py", "train.py"):
        if not (folder / name).is_file():
            raise RunError(f"{task}: no {name} there; --task names a folder with prepare.py and train.py")
    rel = repo.rel(folder)
    tracked = set(repo.git.ls_files("--", f"{rel}/prepare.py", f"{rel}/train.py").splitlines())
    prefix = "" if rel == "." else f"{rel}/"
    for name in ("prepare.py", "train.py"):
        if f"{prefix}{name}" not in tracked:
            raise RunError(f"{prefix}{name} is not committed; commit the task files before starting a run")
    return Task(folder, rel, f"{prefix}prepare.py", f"{prefix}train.py")


def active_run(repo: Repo) -> tuple[RunConfig, Task, list[str]]:
    """The checked-out run: its config (checked against its baseline ref), its task, and what was repaired."""
    branch = repo.branch()
    tag = tag_of_branch(branch)
    config, notes = open_config(repo, tag) if tag else (None, [])
    if config is None:
        raise RunError(
            f"not on an autoresearch run branch (on {branch or 'a detached HEAD'}); "
            "start one with: uv run scripts/ratchet.py start TAG"
        )
    return config, find_task(repo, config.task), notes


def ledger_for(repo: Repo, config: RunConfig, task: Task) -> ledger.Ledger:
    return ledger.Ledger(task.results, run_dir(repo, config.tag) / RESULTS_FILE, config.metric)


# -- the rows and the config the ratchet trusts: those in the run's refs -----------------------------------
ITER_REF = re.compile(r"^\d{4,}$")  # refs/autoresearch/<tag>/0007: four digits, more past 9999


def iter_ref(tag: str, n: int) -> str:
    return f"{REF_PREFIX}{tag}/{n:04d}"


@dataclass
class RunRefs:
    rows: list[dict]  # the rows the ratchet wrote, in iteration order
    config: RunConfig | None  # the run's config, from the baseline's ref
    targets: dict[int, str]  # iteration -> commit, for every ref of the run (with a row or not)
    legacy: bool  # refs without rows: a run started before rows were kept in refs
    notes: list[str] = field(default_factory=list)


def read_refs(repo: Repo, tag: str, metric: str | None = None) -> RunRefs:
    """The run's refs, one git call; a ref whose row the ratchet did not write is set aside with a note."""
    prefix = f"{REF_PREFIX}{tag}/"
    found = {}
    notes = []
    for record in repo.ref_records(prefix):
        suffix = record.name[len(prefix) :]
        if ITER_REF.match(suffix):
            found[int(suffix)] = record
        else:
            notes.append(f"{record.name} is not an iteration's ref; ignored")
    targets = {n: r.target for n, r in found.items()}
    if found and all(r.kind != "tag" for r in found.values()):
        return RunRefs([], None, targets, legacy=True)
    base_row, base_config = ledger.parse_row_message(found[0].message or "") if 0 in found else (None, None)
    config = config_from(base_config) if base_row is not None else None
    metric = metric or (config.metric if config else None)
    rows = []
    for n, record in sorted(found.items()):
        row, _ = ledger.parse_row_message(record.message or "")
        wanted = set(ledger.columns(metric)) if metric else None
        if (
            row is None or row.get("iter") != str(n) or row.get("tag") != tag
            or row.get("commit") != record.target[:7] or row.get("status") not in ledger.STATUSES
            or (wanted is not None and set(row) != wanted)
        ):  # fmt: skip
            notes.append(f"{record.name} holds no row the ratchet wrote; ignored")
            continue
        rows.append(row)
    return RunRefs(rows, config, targets, legacy=False, notes=notes)


def open_config(repo: Repo, tag: str) -> tuple[RunConfig | None, list[str]]:
    """The run's config from its baseline ref, with run.json rebuilt from it when missing, junk or changed."""
    path = run_dir(repo, tag) / "run.json"
    base = repo.ref_records(iter_ref(tag, 0))  # the baseline's ref alone: the common case, one cheap call
    if base and base[0].kind == "tag":
        row, recorded_config = ledger.parse_row_message(base[0].message or "")
        config = config_from(recorded_config) if row is not None else None
        if config is not None:
            return config, _rebuild_config_file(repo, tag, path, config)
    refs = read_refs(repo, tag)
    if refs.config is None:
        if refs.targets and not refs.legacy:
            raise RunError(
                f"run {tag}'s baseline ref {iter_ref(tag, 0)} is gone or damaged, so its rows cannot be checked; "
                "start a new tag"
            )
        config = load_config(repo, tag)  # a run from before configs were kept in refs, or no run at all
        if config is None and path.exists():
            raise RunError(f"{path} is unreadable and run {tag} keeps no copy of it in its refs; start a new tag")
        return config, []
    return refs.config, _rebuild_config_file(repo, tag, path, refs.config)


def _rebuild_config_file(repo: Repo, tag: str, path: Path, config: RunConfig) -> list[str]:
    """run.json made equal to the config in the baseline's ref; a note when it was not."""
    recorded = read_json(path)
    if _same_json(recorded, asdict(config)):
        return []
    how = "missing" if not path.exists() else "unreadable" if config_from(recorded) is None else "changed"
    save_config(repo, config)
    return [f"run.json was {how}; rebuilt from {iter_ref(tag, 0)}"]


def _same_json(a, b) -> bool:
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here, unlike in dicts


def verified_rows(
    repo: Repo, config: RunConfig, task: Task, refs: RunRefs | None = None, new: int | None = None
) -> tuple[list, list]:
    """(the run's rows as its refs hold them, notes); results.tsv and the mirror are made to agree with them.

    `new`: the iteration whose ref was just written, whose row the files are expected to lack.
    """
    book = ledger_for(repo, config, task)
    with book.lock():  # refs read under the lock: a `status` never syncs to rows older than a `try` wrote
        refs = refs or read_refs(repo, config.tag, config.metric)
        if not refs.legacy:
            return refs.rows, refs.notes + book.sync(config.tag, refs.rows, None if new is None else str(new))
    lost = book.repair()  # a run from before rows were in refs: nothing to check against until it is converted
    return book.rows(config.tag), [f"{repo.rel(task.results)} had lost rows; rebuilt from the run's copy"] * lost


def _record_row(repo: Repo, config: RunConfig, n: int, sha: str, row: dict[str, str], with_config=False) -> None:
    """Write iteration n's ref: a tag object on its commit that carries its row (the baseline's: the config too)."""
    message = ledger.row_message(config.tag, row, asdict(config) if with_config else None)
    repo.set_tag_ref(iter_ref(config.tag, n), sha, message)


def _convert_legacy(repo: Repo, config: RunConfig, task: Task) -> str:
    """Give a run from before rows were kept in refs its tag refs, from its mirror (trusted this once)."""
    refs = read_refs(repo, config.tag, config.metric)
    book = ledger_for(repo, config, task)
    book.repair()
    converted = 0
    for row in book.rows(config.tag):
        n = int(row["iter"])
        if refs.targets.get(n, "")[:7] == row.get("commit") and row.get("commit"):
            cells = ledger.cells(row, config.metric)
            _record_row(repo, config, n, refs.targets[n], cells, with_config=n == 0)
            converted += 1
    return f"converted {converted} rows of run {config.tag} into its refs (rows are now checked against them)"


# -- the harness ------------------------------------------------------------------------------------
@dataclass
class HarnessRun:
    block: dict
    seconds: float
    harness_error: str  # non-empty when the harness itself failed (no block): a cause outside train.py


def run_harness(
    repo: Repo, task: Task, folder: Path, timeout: float, on_start=None, extra_args: list[str] = ()
) -> HarnessRun:
    """Score the task's train.py: the harness's stdout is the block, everything else goes to run.log."""
    private, pgid_file = folder / "heldout.next.json", folder / "child.pgid"
    private.unlink(missing_ok=True)
    cmd = [
        *trust.harness_python(repo.common_dir / "autoresearch" / trust.PYCACHE_DIR), str(task.dir / "prepare.py"),
        "--train", str(task.dir / "train.py"), "--private-out", str(private), "--pgid-file", str(pgid_file),
        *extra_args,
    ]  # fmt: skip
    out = io.BytesIO()

    def started(pid: int) -> None:
        (folder / HARNESS_PGID_FILE).write_text(str(pid))  # recovery kills it even if state.json is junk
        if on_start is not None:
            on_start(pid)

    with open(task.log, "wb") as log:
        result = proc.run_in_group(cmd, timeout=timeout, stdout=out, stderr=log, cwd=task.dir, on_start=started)
        log.write(out.getvalue())
    kill_recorded_group(pgid_file)
    (folder / HARNESS_PGID_FILE).unlink(missing_ok=True)  # run_in_group killed its group on the way out
    block = summary.parse_block(out.getvalue().decode("utf-8", errors="replace"))
    error = ""
    if result.timed_out:
        error = f"the harness ran past {timeout:g} s and was killed"
    elif result.returncode is not None and result.returncode < 0:
        # Killed by a signal: by the candidate (it runs as the same user) or by the OOM killer for the
        # candidate's memory. The candidate's crash, not the environment's: it does not stop the run.
        # A block it printed first is not trusted (a forger writes one into the harness's stdout, then kills it).
        block = {"status": "crash", "error": f"the harness was killed by {_signal_name(-result.returncode)} "
                 "while it scored this train.py (the candidate, or the kernel for its memory)"}  # fmt: skip
    elif result.returncode != 0 and block:  # a block from a harness that did not finish is not the harness's
        error = f"the harness exited with code {result.returncode} after printing a block; not trusted"
        block = {}
    elif not block:
        why = proc.last_line(result.tail)
        error = f"the harness exited with code {result.returncode} and printed no summary block" + (
            f": {why}" if why else ""
        )
    return HarnessRun(block, result.seconds, error)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def kill_recorded_group(pgid_file: Path) -> None:
    try:
        pgid = int(pgid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    proc.kill_stale_group(pgid)
    pgid_file.unlink(missing_ok=True)


def log_tail(task: Task, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(task.log, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    body = text.rsplit("\n---\n", 1)[0] if "\n---\n" in text else text  # the block comes last, on its own
    tail = [line.rstrip() for line in body.splitlines() if line.strip()][-lines:]
    return [line if len(line) <= LOG_TAIL_LINE_CHARS else line[: LOG_TAIL_LINE_CHARS - 1] + "…" for line in tail]


def declared_hypothesis(source: str) -> str | None:
    """train.py's HYPOTHESIS constant, read without running the file."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HYPOTHESIS" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, str) else None
    return None


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"


# -- start ----------------------------------------------------------------------------------------------
START_OPTIONS = ("task", "deadline", "max_iters", "budget")


def start(
    repo: Repo, tag: str, task_arg: str = ".", *, resume: bool = False,
    deadline: str | None = None, max_iters: int | None = None, budget: float | None = None,
) -> str:  # fmt: skip
    """Create `autoresearch/TAG`, score the baseline and write its row; or resume an existing run.

    A start killed at any point is completed by the next `start TAG --resume` (or plain `start TAG` for the
    same task): start.json says how far it got, and the baseline's ref, once written, holds the rest.
    """
    check_tag(tag)
    branch = BRANCH_PREFIX + tag
    with CheckoutLock(repo):
        folder = run_dir(repo, tag)
        pending, notes = _pending_start(folder)
        if pending is not None and pending["phase"] == "scored":
            config = config_from(pending["config"])
            if not resume and config.task != _task_rel(repo, task_arg):
                raise RunError(
                    f"the start of run {tag} on task {config.task} was interrupted; "
                    f"`start {tag} --resume` completes it, or pick another tag"
                )
            notes.append("completed a start that was interrupted")
            return _complete_start(repo, config, pending["row"], notes)
        refs = read_refs(repo, tag)
        if pending is not None and resume:  # it died while scoring: nothing durable exists, score again
            task_arg, deadline, max_iters, budget = (pending["options"][k] for k in START_OPTIONS)
        elif repo.branch_exists(branch) or refs.config is not None:
            if not resume:
                raise RunError(f"run {tag} exists (branch {branch}); pass --resume to go on with it, or pick a new tag")
            if refs.config is not None and not repo.branch_exists(branch):
                return _complete_start(repo, refs.config, None, notes + [f"branch {branch} made again"])
            return _resume(repo, tag, branch, notes)
        elif resume:
            raise RunError(f"no run {tag} to resume (no branch {branch})")
        return _fresh_start(repo, tag, task_arg, deadline, max_iters, budget, notes)


def _fresh_start(repo, tag, task_arg, deadline, max_iters, budget, notes: list[str]) -> str:
    folder = run_dir(repo, tag)
    changes = repo.changes()
    if changes:
        raise RunError(f"uncommitted changes ({_list(changes)}); commit or stash them before starting a run")
    task = find_task(repo, task_arg)
    if deadline:
        try:
            deadline = stopping.parse_time(deadline).isoformat(timespec="seconds")
        except ValueError:
            raise RunError(f"--deadline {deadline!r}: use an ISO time such as 2026-11-23T07:00") from None
    if (folder / "run.json").exists():
        raise RunError(f"{folder} holds an old run {tag} whose branch is gone; pick a new tag or remove it")
    source = (task.dir / "train.py").read_text(errors="replace")
    hypothesis = declared_hypothesis(source) or ""
    problem = ledger.text_problem(hypothesis)
    if problem:
        raise RunError(f"HYPOTHESIS in {task.train_rel} has {problem}: use plain text, then start again")
    base = repo.head()
    trusted = trust.fingerprint(task.dir, repo.root)  # what every later scoring is checked against
    folder.mkdir(parents=True, exist_ok=True)
    journal = {"phase": "scoring", "tag": tag, "base": base,
               "options": dict(zip(START_OPTIONS, (task.rel, deadline, max_iters, budget), strict=True))}  # fmt: skip
    write_json(folder / START_FILE, journal)

    def record_harness(pid: int) -> None:
        write_json(folder / START_FILE, {**journal, "harness_pgid": pid})

    harness_args = ["--budget", f"{budget:g}"] if budget is not None else []  # frozen for the run
    harness = run_harness(repo, task, folder, BASELINE_TIMEOUT_SECONDS, record_harness, harness_args)
    block = harness.block
    for seed in range(1, CALIBRATION_RUNS if block.get("keep_rule") == RERUN_RULE else 1):
        if harness.harness_error or block.get("status") != "ok":
            break
        harness = _run_again(
            repo, task, folder, BASELINE_TIMEOUT_SECONDS, harness, [*harness_args, "--seed", str(seed)],
            record_harness,
        )  # fmt: skip
        block = harness.block
    if harness.harness_error or block.get("status") != "ok":
        (folder / START_FILE).unlink(missing_ok=True)
        why = harness.harness_error or block.get("error", block.get("status"))
        tail = "\n".join(line for line in log_tail(task, 3) if line not in why)  # not said twice
        raise RunError(f"the baseline did not score: {why}" + (f"\n{tail}" if tail else ""))
    metric = block["metric"]
    config = RunConfig(
        tag=tag, task=task.rel, base=base, metric=metric,
        higher_is_better=block.get("direction", "higher") == "higher",
        budget_seconds=summary.parse_float(block.get("budget_seconds")),
        created=stopping.now().isoformat(timespec="seconds"),
        deadline=deadline, max_iters=max_iters,
        extra={**{k: block[k] for k in ("device", "task", "keep_rule", "timeout_seconds") if k in block},
               **({"harness_args": harness_args} if harness_args else {}),
               "trusted": trusted, "sandbox": sandbox.detect().describe()},
    )  # fmt: skip
    try:
        ledger_for(repo, config, task).check()
    except ledger.LedgerError:
        (folder / START_FILE).unlink(missing_ok=True)
        raise
    description = hypothesis if hypothesis.lower().startswith("baseline") else f"baseline: {hypothesis}"
    row = _row(config, block, base, 0, "keep", ledger.clean_text(description),
               harness.seconds, code_lines(source), reason="baseline")  # fmt: skip
    cells = ledger.cells(row, metric)
    write_json(folder / START_FILE, {"phase": "scored", "tag": tag, "config": asdict(config), "row": cells})
    se = summary.parse_float(block.get(metric + "_se"))
    return _complete_start(repo, config, cells, notes, se=se, seconds=harness.seconds)


def _task_rel(repo: Repo, task_arg: str) -> str:
    try:
        return find_task(repo, task_arg).rel
    except RunError:
        return task_arg


def _pending_start(folder: Path) -> tuple[dict | None, list[str]]:
    """A start that was interrupted (its harness killed, if it was still scoring), or None; with a note."""
    path = folder / START_FILE
    if not path.exists():
        return None, []
    kill_recorded_group(folder / HARNESS_PGID_FILE)
    kill_recorded_group(folder / "child.pgid")
    pending = read_json(path)
    phase = (pending or {}).get("phase")
    options = (pending or {}).get("options")
    valid = (phase == "scoring" and isinstance(options, dict) and set(START_OPTIONS) <= options.keys()) or (
        phase == "scored" and config_from(pending.get("config")) is not None and isinstance(pending.get("row"), dict)
    )  # fmt: skip
    if not valid:
        path.unlink(missing_ok=True)
        return None, [f"{START_FILE} of an interrupted start was unreadable; removed it (the refs hold what was done)"]
    return pending, []


def _complete_start(repo: Repo, config: RunConfig, baseline: dict | None, notes: list[str],
                    se: float = math.nan, seconds: float | None = None) -> str:  # fmt: skip
    """Make the run exist from its scored baseline; each step is skipped when done: safe to call again.

    The baseline's ref is written first: from then on it holds the row and the config, and everything
    else (run.json, results.tsv, the branch) is rebuilt from it.
    """
    tag, folder = config.tag, run_dir(repo, config.tag)
    branch = BRANCH_PREFIX + tag
    refs = read_refs(repo, tag, config.metric)
    if refs.config is None and baseline is not None:
        _record_row(repo, config, 0, config.base, baseline, with_config=True)
        refs = read_refs(repo, tag, config.metric)
    config = refs.config or config
    save_config(repo, config)
    task = find_task(repo, config.task)
    rows, more = verified_rows(repo, config, task, refs, new=0)
    notes += more
    best = ledger.best(rows)
    if best is None:
        raise RunError(f"run {tag} has no baseline row in its refs; start a new tag")
    if repo.branch() != branch:
        changes = repo.changes()
        if changes:
            raise RunError(f"uncommitted changes ({_list(changes)}); commit or stash them, then `start {tag} --resume`")
        if repo.branch_exists(branch):
            repo.checkout(branch)
        else:
            repo.create_branch(branch, refs.targets[int(best["iter"])])
    _record_private(folder, 0, config.base)
    (folder / START_FILE).unlink(missing_ok=True)
    baseline = rows[0]
    shown = f"baseline {config.metric}={baseline.get(config.metric)}" + (f" ± {_fmt(se)}" if math.isfinite(se) else "")
    timing = f" | {seconds:.1f} s" if seconds is not None else ""
    boxed = config.extra.get("sandbox", "")
    warning = "" if boxed.startswith("bubblewrap") else f"\nwarning: {boxed or 'candidate not sandboxed'}"
    return (
        f"run {tag} started on {branch} | {shown}{timing} | results in {repo.rel(task.results)}"
        + "".join(f" | {n}" for n in notes)
        + warning
    )


def _resume(repo: Repo, tag: str, branch: str, notes: list[str]) -> str:
    config, more = open_config(repo, tag)
    if config is None:
        raise RunError(f"branch {branch} exists but its run record is gone; start a new tag")
    notes += more
    if repo.branch() != branch:
        changes = repo.changes()
        if changes:
            raise RunError(f"uncommitted changes ({_list(changes)}); commit or stash them before resuming {tag}")
        repo.checkout(branch)
    task = find_task(repo, config.task)
    notes.append(recover(repo, config, task) or "")
    refs = read_refs(repo, tag, config.metric)
    if refs.legacy:
        notes.append(_convert_legacy(repo, config, task))
    rows, more = verified_rows(repo, config, task)
    notes += more
    return f"run {tag} resumed on {branch} | {len(rows)} rows, next iter {next_iter(rows, refs)}" + "".join(
        f" | {n}" for n in notes if n
    )


# -- try --------------------------------------------------------------------------------------------
def next_iter(rows: list[dict], refs: RunRefs | None = None) -> int:
    """One past the highest iteration with a row, or with a ref (a ref is never overwritten by a new one)."""
    return max(ledger.next_iter(rows), max(refs.targets, default=-1) + 1 if refs else 0)


def best_row(rows: list[dict]) -> dict:
    row = ledger.best(rows)
    if row is None:
        raise RunError("the run has no kept row, not even a baseline; start a new run")
    return row


def check_hypothesis(text: str, where: str = "the hypothesis") -> None:
    problem = ledger.text_problem(text)
    if problem:
        raise RunError(f"{where} has {problem}; use plain text (tabs and newlines are fine). Nothing was touched")


def try_edit(repo: Repo, hypothesis: str | None) -> str:
    """Run one iteration on the current edit of train.py; return the one line the agent reads back."""
    check_hypothesis(hypothesis or "")  # before anything is touched
    with CheckoutLock(repo):
        config, task, notes = active_run(repo)
        folder = run_dir(repo, config.tag)
        notes.append(recover(repo, config, task))
        refs = read_refs(repo, config.tag, config.metric)
        if refs.legacy:
            raise RunError(
                f"run {config.tag} keeps its rows the old way (refs without rows); "
                f"`uv run scripts/ratchet.py start {config.tag} --resume` converts it, then try again"
            )
        rows, more = verified_rows(repo, config, task, refs)
        notes += more
        reason = stopping.stop_reason(config, rows, folder)
        if reason:
            raise RunError(f"the run is over: {reason}")
        best = best_row(rows)
        _check_tree(repo, config, task, best)
        _check_trusted(repo, config)
        _check_sandbox(config)
        source = (task.dir / "train.py").read_text(errors="replace")
        best_sha = repo.head()
        full = ledger.clean_text(hypothesis or "")
        if not full:
            declared = declared_hypothesis(source)
            if not declared or declared == declared_hypothesis(repo.show(best_sha, task.train_rel)):
                raise RunError(
                    'say what this edit tests: ratchet.py try "HYPOTHESIS" (or update HYPOTHESIS in train.py)'
                )
            check_hypothesis(declared, f"HYPOTHESIS in {task.train_rel}")
            full = ledger.clean_text(declared)
        hypothesis = ledger.cap_text(full)  # the row's and the line's; the commit body keeps it whole
        n = next_iter(rows, refs)
        state = {"phase": "running", "iter": n, "best": best_sha, "hypothesis": hypothesis, "started": time.time()}
        write_json(folder / STATE_FILE, state)  # before the commit: a kill right after it is still recovered
        state["candidate"] = repo.commit_file(task.train_rel, _message(full))
        write_json(folder / STATE_FILE, state)

        def record_harness(pid: int) -> None:
            write_json(folder / STATE_FILE, {**state, "harness_pgid": pid})

        timeout = (
            config.budget_seconds + HARNESS_GRACE_SECONDS
            if math.isfinite(config.budget_seconds)
            else BASELINE_TIMEOUT_SECONDS
        )
        timeout = float(config.extra.get("timeout_seconds", timeout))
        harness_args = list(config.extra.get("harness_args", []))
        preload_t_distribution()
        harness = run_harness(repo, task, folder, timeout, on_start=record_harness, extra_args=harness_args)
        best_lines = code_lines(repo.show(best_sha, task.train_rel))
        seed = 1
        while _wants_rerun(config, rows, harness, best, code_lines(source), best_lines):
            harness = _run_again(
                repo, task, folder, timeout, harness, [*harness_args, "--seed", str(seed)], record_harness
            )
            seed += 1
        if repo.tree_blob(task.train_rel) != repo.blob(state["candidate"], task.train_rel):
            harness = HarnessRun({"status": "crash", "error": EDITED_WHILE_SCORED}, harness.seconds, "")
        row, final = _judge(repo, config, task, harness, best, best_lines, source, n, full, rows)
        state.update(phase="decided", row=row, final=final, status=row["status"])
        write_json(folder / STATE_FILE, state)
        notes += _finish(repo, config, task, state)
        line = _line(config, row, hypothesis)
        if state["kept_later_edit"]:
            notes.append(f"{task.train_rel} was edited while this iteration ran: your edit is left in place, untried")
    tail = log_tail(task) if row["status"] == "crash" and row["reason"] != EDITED_WHILE_SCORED else []
    # The iteration's line comes first, so that an agent (or a grep) finds `iter N |` at the top.
    return "\n".join([line] + [note for note in notes if note] + [f"  | {t}" for t in tail])


def _check_tree(repo: Repo, config: RunConfig, task: Task, best: dict) -> None:
    """Refuse unless the one change is the task's train.py, on top of the commit the best row scored."""
    allowed = {task.train_rel, *STEERING_FILES}
    frozen = [p for p in repo.changed_between(config.base, "HEAD") if p not in allowed]
    if frozen:
        raise RunError(f"frozen files changed on this branch since the run started ({_list(frozen)}); revert them")
    others = [p for p in repo.changes() if p not in allowed]
    if others:
        raise RunError(
            f"only {task.train_rel} may change; also changed: {_list(others)} (nothing was touched; "
            "revert or commit those elsewhere)"
        )
    scored = repo.blob(f"{REF_PREFIX}{config.tag}/{int(best['iter']):04d}", task.train_rel)
    if scored != repo.blob("HEAD", task.train_rel):
        raise RunError(
            f"{task.train_rel} at HEAD is not the one scored as best (iter {best['iter']}, {best['commit']}): "
            "the branch was changed by hand; reset it to that commit"
        )
    if task.train_rel not in repo.changes():
        raise RunError(f"{task.train_rel} is the same as the best commit: edit it first")


def _check_trusted(repo: Repo, config: RunConfig) -> None:
    """Refuse to score when the harness or the library differ by a byte from what the run started with."""
    try:
        trust.verify(config.extra.get("trusted", {}), repo.root)
    except trust.TrustError as exc:
        raise RunError(str(exc)) from None


def _check_sandbox(config: RunConfig) -> None:
    """A run that started sandboxed is scored sandboxed to its end: no later call can switch it off."""
    recorded, now = config.extra.get("sandbox", ""), sandbox.detect()
    if recorded == "bubblewrap" and not now.active:
        raise RunError(f"the run started with the candidate sandboxed, and now: {now.describe()}; not scored")


def _judge(repo, config, task, harness: HarnessRun, best: dict, best_lines: int, source: str, n: int,
           hypothesis: str, rows: list[dict]):  # fmt: skip
    """Decide on the candidate and amend its commit message with the verdict; return (row, final sha)."""
    block, metric = harness.block, config.metric
    lines = code_lines(source)
    status_in_block = block.get("status", "")
    if harness.harness_error:
        status, reason = "crash", f"{stopping.HARNESS_FAILURE_PREFIX} {harness.harness_error}"
        verdict = f"CRASH ({harness.harness_error})"
        delta = se = p = math.nan
    elif status_in_block != "ok":
        reason = block.get("error", "no reason given")
        status = "crash"
        verdict = f"CRASH ({reason})"
        delta = se = p = math.nan
    else:
        if block.get("keep_rule") == RERUN_RULE:  # one score per run: judged against run-to-run noise
            decision = _decide_reruns(config, rows, block, best, lines, best_lines)
        else:
            decision = decide(
                summary.parse_floats(block.get("fold_scores")), summary.parse_floats(best.get("fold_scores")),
                config.higher_is_better, lines, best_lines,
            )  # fmt: skip
        status, reason, delta, se, p = (
            ("keep" if decision.keep else "discard"),
            decision.reason,
            decision.delta,
            decision.se,
            decision.p_value,
        )
        before, after = summary.parse_float(best.get(metric)), summary.parse_float(block.get(metric))
        verdict = (
            f"{metric} {_fmt(before)} → {_fmt(after)} ({delta:+.4f} ± {_fmt(se)}): "
            f"{'KEPT' if decision.keep else 'DISCARDED'}, {decision.reason}"
        )
    message = "\n\n".join([_message(hypothesis), verdict, f"Autoresearch-Run: {config.tag}\nAutoresearch-Iter: {n}"])
    final = repo.amend_message(message)
    row = _row(config, block, final, n, status, ledger.cap_text(hypothesis), harness.seconds, lines,
               reason=ledger.cap_text(ledger.clean_text(reason)), delta=delta, se=se, p=p)  # fmt: skip
    return row, final


# -- between-run noise (keep_rule: rerun, decide.decide_reruns) ---------------------------------------------
RERUN_RULE = "rerun"  # a block with this keep_rule scores one run per harness call; fold_scores collect runs


def _run_again(repo, task, folder: Path, timeout: float, first: HarnessRun, args: list[str], on_start=None):
    """Score the same code once more (another seed) and fold it into `first`, its held-out record too."""
    pending = folder / "heldout.next.json"
    earlier = read_json(pending)
    again = run_harness(repo, task, folder, timeout, on_start=on_start, extra_args=args)
    later = read_json(pending)
    if earlier and later:
        write_json(pending, _mean_record(earlier, later, len(summary.parse_floats(first.block.get("fold_scores")))))
    return _rerun(first, again)


def _mean_record(earlier: dict, later: dict, runs_before: int) -> dict:
    """A held-out record averaged over runs: `earlier` is already the mean of `runs_before` runs."""
    w = max(runs_before, 1)

    def mean(a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return (w * a + b) / (w + 1)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return [mean(x, y) for x, y in zip(a, b, strict=True)]
        return b

    return {k: mean(earlier[k], v) if k in earlier else v for k, v in later.items()}


def _rerun(first: HarnessRun, again: HarnessRun) -> HarnessRun:
    """Fold a rerun into the first run: its score joins fold_scores, the metric is their mean."""
    if first.harness_error or first.block.get("status") != "ok":
        return first
    if again.harness_error or again.block.get("status") != "ok":
        return HarnessRun(again.block, first.seconds + again.seconds, again.harness_error)
    metric = first.block["metric"]
    scores = [s for run in (first, again) for s in summary.parse_floats(run.block.get("fold_scores"))]
    block = {
        **again.block,
        metric: f"{sum(scores) / len(scores):.6f}",
        "fold_scores": ",".join(f"{s:.6f}" for s in scores),
    }
    return HarnessRun(block, first.seconds + again.seconds, "")


def _noise(rows: list[dict]) -> tuple[float, int]:
    scored = [r for r in rows if r.get("status") in ("keep", "discard")]
    groups = [summary.parse_floats(r.get("fold_scores")) for r in scored]
    return pooled_sd(groups)


def _decide_reruns(config: RunConfig, rows: list[dict], block: dict, best: dict, lines: int, best_lines: int):
    sd, df = _noise(rows)
    return decide_reruns(
        summary.parse_floats(block.get("fold_scores")), summary.parse_floats(best.get("fold_scores")),
        config.higher_is_better, sd, df, lines, best_lines,
    )  # fmt: skip


def _wants_rerun(config: RunConfig, rows: list[dict], harness: HarnessRun, best: dict, lines: int,
                 best_lines: int) -> bool:  # fmt: skip
    block = harness.block
    if harness.harness_error or block.get("status") != "ok" or block.get("keep_rule") != RERUN_RULE:
        return False
    return _decide_reruns(config, rows, block, best, lines, best_lines).rerun


def _finish(repo: Repo, config: RunConfig, task: Task, state: dict) -> list[str]:
    """Record the decided row, then apply the decision. Idempotent: recovery calls it again after a kill.

    The row's ref is written first: it is the record; results.tsv and the mirror are then synced from the refs.
    """
    folder = run_dir(repo, config.tag)
    if state["phase"] == "decided":
        _record_row(repo, config, state["iter"], state["final"], ledger.cells(state["row"], config.metric))
        _record_private(folder, state["iter"], state["final"])
        state["phase"] = "recorded"
        write_json(folder / STATE_FILE, state)
    _, notes = verified_rows(repo, config, task, new=state["iter"])
    target = state["final"] if state["status"] == "keep" else state["best"]
    rel = task.train_rel
    # An edit made after this iteration's commit (while it ran, or after its ratchet died) is the agent's next
    # idea, not this iteration's: move the branch, but leave that file as it is.
    later_edit = repo.tree_blob(rel) not in (repo.blob(state["final"], rel), repo.blob(target, rel))
    if repo.head() != target or later_edit:
        repo.reset_file_to(target, rel, keep_tree_file=later_edit)
    (folder / STATE_FILE).unlink(missing_ok=True)
    state["kept_later_edit"] = later_edit
    return notes


STATE_PHASES = ("running", "decided", "recorded")
SHA = re.compile(r"^[0-9a-f]{40}$")


def _valid_state(state: dict | None) -> bool:
    """Whether state.json holds what the ratchet wrote there (junk is recovered from git instead)."""
    if not state or state.get("phase") not in STATE_PHASES:
        return False
    ok = (
        isinstance(state.get("iter"), int) and state["iter"] >= 1 and SHA.match(str(state.get("best", "")))
        and isinstance(state.get("hypothesis"), str) and isinstance(state.get("started"), (int, float))
        and (state.get("candidate") is None or SHA.match(str(state["candidate"])))
        and isinstance(state.get("harness_pgid", 0), int)
    )  # fmt: skip
    if ok and state["phase"] != "running":
        ok = (
            isinstance(state.get("row"), dict) and SHA.match(str(state.get("final", "")))
            and state.get("status") in ledger.STATUSES
        )  # fmt: skip
    return bool(ok)


def recover(repo: Repo, config: RunConfig, task: Task) -> str | None:
    """Finish or roll back an iteration whose ratchet died; say what was done (None if nothing was needed)."""
    folder = run_dir(repo, config.tag)
    kill_recorded_group(folder / HARNESS_PGID_FILE)
    if (folder / START_FILE).exists():  # its ratchet died after the branch was made: the rest is cheap
        _record_private(folder, 0, config.base)
        (folder / START_FILE).unlink(missing_ok=True)
    path = folder / STATE_FILE
    if not path.exists():
        return None
    state = read_json(path)
    if _valid_state(state):
        proc.kill_stale_group(state.get("harness_pgid", 0))
    kill_recorded_group(folder / "child.pgid")
    repo.remove_stale_index_lock()
    if not _valid_state(state):
        return _recover_without_state(repo, config, task)
    if state["phase"] == "running":
        if "candidate" not in state:
            head = repo.head()
            if head == state["best"]:  # died before committing: the edit is still in the tree, untouched
                path.unlink()
                return None
            state["candidate"] = head
        _interrupted(repo, config, folder, state)
    _finish(repo, config, task, state)
    kept = f"; the later edit of {task.train_rel} is left in place" if state["kept_later_edit"] else ""
    return f"recovered iter {state['iter']} ({state['status']}) left by a ratchet that died{kept}"


def _interrupted(repo: Repo, config: RunConfig, folder: Path, state: dict) -> None:
    """Decide a running iteration as interrupted: its commit is recorded, unscored."""
    row = {
        "commit": repo.short(state["candidate"]), "status": "interrupted", "iter": state["iter"],
        "tag": config.tag, "description": state["hypothesis"],
        "timestamp": stopping.now().isoformat(timespec="seconds"),
        "reason": "the ratchet was killed during this iteration; it was not scored",
        "seconds": round(time.time() - state["started"], 1),
    }  # fmt: skip
    state.update(phase="decided", row=row, final=state["candidate"], status="interrupted")
    (folder / "heldout.next.json").unlink(missing_ok=True)
    write_json(folder / STATE_FILE, state)


def _recover_without_state(repo: Repo, config: RunConfig, task: Task) -> str:
    """state.json is junk: work out from git what was in flight, finish it, and say so."""
    folder = run_dir(repo, config.tag)
    said = f"{STATE_FILE} was unreadable"
    refs = read_refs(repo, config.tag, config.metric)
    best = ledger.best(refs.rows)
    head = repo.head()
    best_sha = refs.targets.get(int(best["iter"])) if best else None
    parent = repo.parent(head)
    recorded = {sha: n for n, sha in refs.targets.items()}
    only_train = parent is not None and set(repo.changed_between(parent, head)) <= {task.train_rel}
    if best_sha is None or head == best_sha or parent != best_sha or not only_train:
        (folder / STATE_FILE).unlink(missing_ok=True)
        if best_sha is not None and head != best_sha:
            return f"{said}; removed it (HEAD is not a commit of this run's; nothing else was changed)"
        return f"{said}; removed it (no iteration was in flight)"
    if head in recorded:  # its row is recorded: only the branch was left to move back to the best
        n = recorded[head]
        row = next((r for r in refs.rows if r["iter"] == str(n)), None)
        status = row["status"] if row else "interrupted"
        state = {"phase": "recorded", "iter": n, "best": best_sha, "final": head, "status": status}
        notes = _finish(repo, config, task, state)
        return f"{said}; iter {n} was recorded ({status}): the branch is back on the best" + "".join(
            f"; {note}" for note in notes
        )
    state = {"phase": "running", "iter": next_iter(refs.rows, refs), "best": best_sha, "candidate": head,
             "hypothesis": ledger.cap_text(ledger.clean_text(repo.message(head).split("\n", 1)[0])),
             "started": repo.repo.commit(head).committed_date}  # fmt: skip
    _interrupted(repo, config, folder, state)
    _finish(repo, config, task, state)
    return f"{said}; recovered iter {state['iter']} (interrupted) from the commit at HEAD"


def recover_if_idle(repo: Repo, config: RunConfig, task: Task) -> str | None:
    """For readers (`status`, hooks): recover a dead iteration if no ratchet is running, else say one is."""
    folder = run_dir(repo, config.tag)
    if not (folder / STATE_FILE).exists() and not (folder / START_FILE).exists():
        return None
    if repo.branch() != BRANCH_PREFIX + config.tag:
        return f"iter in flight or interrupted on {BRANCH_PREFIX + config.tag}; check it out to recover it"
    try:
        with CheckoutLock(repo):
            return recover(repo, config, task)
    except RunError:
        return "an iteration is in flight (a ratchet is running)"


def _record_private(folder: Path, n: int, sha: str) -> None:
    """Move the harness's held-out figures, if any, into the run's private record (never results.tsv)."""
    import json

    pending = folder / "heldout.next.json"
    record = read_json(pending)
    if record is None:
        return
    with open(folder / "heldout.jsonl", "a") as fh:
        fh.write(json.dumps({"iter": n, "commit": sha, **record}) + "\n")
    pending.unlink(missing_ok=True)


def _row(
    config, block, sha, n, status, description, seconds, lines, *, reason="", delta=math.nan, se=math.nan, p=math.nan
) -> dict:
    memory_mb = summary.parse_float(block.get("peak_memory_mb"))
    return {
        "commit": sha[:7], config.metric: block.get(config.metric, "") if status != "crash" else "",
        "memory_gb": round(memory_mb / 1024, 3) if math.isfinite(memory_mb) else math.nan,
        "status": status, "description": description, "iter": n, "tag": config.tag,
        "delta": delta, "delta_se": se, "p_value": p, "seconds": round(seconds, 1), "lines": lines,
        "timestamp": stopping.now().isoformat(timespec="seconds"), "reason": reason,
        "fold_scores": block.get("fold_scores", "") if status != "crash" else "",
    }  # fmt: skip


def _line(config: RunConfig, row: dict, hypothesis: str) -> str:
    shown = f"{config.metric}={_fmt(summary.parse_float(row.get(config.metric) or None))}"
    if row["status"] in ("keep", "discard") and math.isfinite(row["delta"]):
        shown += f" (Δ {row['delta']:+.4f} ± {_fmt(row['delta_se'])})"
    verdict = {"keep": "KEPT", "discard": "DISCARDED", "crash": "CRASH"}[row["status"]]
    extra = f" ({row['reason']})" if row["status"] == "crash" else ""
    return f"iter {row['iter']} | {shown} | {verdict}{extra} | {row['seconds']:.1f} s — {hypothesis}"


def _subject(hypothesis: str) -> str:
    return hypothesis if len(hypothesis) <= SUBJECT_CHARS else hypothesis[: SUBJECT_CHARS - 1] + "…"


def _message(hypothesis: str) -> str:
    """A short subject, and the whole hypothesis in the body when the subject had to cut it."""
    return _subject(hypothesis) + (f"\n\n{hypothesis}" if len(hypothesis) > SUBJECT_CHARS else "")


def _list(paths: list[str], most: int = 4) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")
