"""`start`: create `autoresearch/TAG`, ask the task's harness what it supports, score and calibrate the
baseline (as many scorings as the task's keep rule asks), and write the baseline's ref with the run record;
or resume an existing run. A start killed at any point is completed by the next `start TAG --resume`.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

from autoresearch import digest, keeprules, ledger, sandbox, stopping, trust
from autoresearch.contract import Capabilities
from autoresearch.decide import code_lines
from autoresearch.gitops import BRANCH_PREFIX, Repo
from autoresearch.harness import (
    BASELINE_TIMEOUT_SECONDS,
    CHILD_PGID_FILE,
    HARNESS_PGID_FILE,
    ask_capabilities,
    kill_recorded_group,
    run_again,
    run_harness,
)
from autoresearch.messages import declared_hypothesis, fmt, list_paths, log_tail, make_row
from autoresearch.recovery import START_FILE, record_private, recover
from autoresearch.refs import convert_legacy, ledger_for, next_iter, open_config, read_refs, record_row, verified_rows
from autoresearch.runs import (
    CheckoutLock,
    RunConfig,
    RunError,
    check_tag,
    config_from,
    read_json,
    run_dir,
    save_config,
    write_json,
)
from autoresearch.taskdir import Task, find_task, task_rel

START_OPTIONS = ("task", "deadline", "max_iters", "budget")  # what start.json of a start in flight must hold
LATER_START_OPTIONS = ("keep_rule", "confirm", "workers", "executor", "ray_address")  # added since: None = default


def start(
    repo: Repo,
    tag: str,
    task_arg: str = ".",
    *,
    resume: bool = False,
    deadline: str | None = None,
    max_iters: int | None = None,
    budget: float | None = None,
    keep_rule: str | None = None,
    confirm: bool | None = None,
    workers: int | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
) -> str:
    """Create `autoresearch/TAG`, score the baseline and write its row; or resume an existing run.

    `keep_rule`: a rule of keeprules.RULES instead of the one the task's harness names; `confirm`: whether a
    "better beyond noise" keep is confirmed on fresh folds (None: keeprules.DEFAULT_CONFIRM where the harness
    and the rule can). `workers`, `executor`, `ray_address`: where a wave's candidates are scored
    (executors.py). All are frozen in the run record; a resumed run keeps its own.

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
            if not resume and config.task != task_rel(repo, task_arg):
                raise RunError(
                    f"the start of run {tag} on task {config.task} was interrupted; "
                    f"`start {tag} --resume` completes it, or pick another tag"
                )
            notes.append("completed a start that was interrupted")
            return _complete_start(repo, config, pending["row"], notes)
        refs = read_refs(repo, tag)
        if pending is not None and resume:  # it died while scoring: nothing durable exists, score again
            options = pending["options"]
            task_arg, deadline, max_iters, budget = (options[k] for k in START_OPTIONS)
            keep_rule, confirm, workers, executor, ray_address = (options.get(k) for k in LATER_START_OPTIONS)
        elif repo.branch_exists(branch) or refs.config is not None:
            if not resume:  # the same tag and task: a session that starts again means to go on (one call)
                _check_same_task(repo, tag, refs.config, task_arg)
            notes += _frozen_options_notes(
                refs.config, deadline, max_iters, budget, keep_rule, confirm, workers, executor
            )
            if refs.config is not None and not repo.branch_exists(branch):
                return _complete_start(repo, refs.config, None, notes + [f"branch {branch} made again"])
            return _resume(repo, tag, branch, notes)
        elif resume:
            raise RunError(f"no run {tag} to resume (no branch {branch})")
        scoring = (workers, executor, ray_address)
        return _fresh_start(repo, tag, task_arg, deadline, max_iters, budget, keep_rule, confirm, scoring, notes)


def check_capabilities(
    task: Task, caps: Capabilities, budget: float | None, keep_rule: str | None = None, confirm: bool | None = None
) -> tuple[keeprules.KeepRule, bool]:
    """(the run's keep rule, whether it confirms), once the options asked of the harness are ones it declared;
    else one line. The rule is `keep_rule` if given, else the harness's."""
    try:
        rule = keeprules.rule_named(keep_rule or caps.keep_rule)
    except keeprules.UnknownRule as exc:
        raise RunError(f"--keep-rule: {exc}" if keep_rule else f"{task.prepare_rel} asks for {exc}") from None
    if rule.needs_folds and caps.family != "tabular":
        raise RunError(
            f"--keep-rule {rule.name} compares scores fold by fold, and this task's harness ({task.prepare_rel}) "
            f"scores no folds ({caps.family}); use --keep-rule {caps.keep_rule}"
        )
    if budget is not None and not caps.budget_arg:
        raise RunError(
            f"--budget: this task's harness ({task.prepare_rel}) takes no budget option; its budget is frozen "
            "in it. Start without --budget"
        )
    if rule.needs_seeds and not caps.seed_arg:
        raise RunError(
            f"keep rule {rule.name} reruns with --seed, but {task.prepare_rel} declares no --seed"
            + ("" if keep_rule else " (it asks for that rule itself)")
        )
    able = caps.fresh_folds and rule.can_confirm
    if confirm and not able:
        why = (
            f"this task's harness ({task.prepare_rel}) scores on no other folds (--cv-seed)"
            if not caps.fresh_folds
            else f"keep rule {rule.name} has no confirm step"
        )
        raise RunError(f"--confirm rescores a kept gain on fresh folds, and {why}; start without --confirm")
    return rule, (keeprules.DEFAULT_CONFIRM and able) if confirm is None else confirm


def _fresh_start(
    repo, tag, task_arg, deadline, max_iters, budget, keep_rule, confirm, scoring, notes: list[str]
) -> str:
    folder = run_dir(repo, tag)
    changes = repo.changes()
    if changes:
        raise RunError(f"uncommitted changes ({list_paths(changes)}); commit or stash them before starting a run")
    task = find_task(repo, task_arg)
    if deadline:
        try:
            deadline = stopping.parse_time(deadline).isoformat(timespec="seconds")
        except ValueError:
            raise RunError(f"--deadline {deadline!r}: use an ISO time such as 2026-11-23T07:00") from None
    if (folder / "run.json").exists():
        raise RunError(f"{folder} holds an old run {tag} whose branch is gone; pick a new tag or remove it")
    source = task.train.read_text(errors="replace")
    hypothesis = declared_hypothesis(source) or ""
    problem = ledger.text_problem(hypothesis)
    if problem:
        raise RunError(f"HYPOTHESIS in {task.train_rel} has {problem}: use plain text, then start again")
    capabilities = ask_capabilities(repo, task)
    rule, confirm = check_capabilities(task, capabilities, budget, keep_rule, confirm)
    workers, executor, ray_address = scoring
    where_scored = scoring_options(task, capabilities, workers, executor, ray_address)
    base = repo.head()
    trusted = trust.fingerprint(task.dir, repo.root)  # what every later scoring is checked against
    folder.mkdir(parents=True, exist_ok=True)
    journal = {
        "phase": "scoring",
        "tag": tag,
        "base": base,
        "options": dict(
            zip(
                START_OPTIONS + LATER_START_OPTIONS,
                (task.rel, deadline, max_iters, budget, keep_rule, confirm, workers, executor, ray_address),
                strict=True,
            )
        ),
    }
    write_json(folder / START_FILE, journal)

    def record_harness(pid: int) -> None:
        write_json(folder / START_FILE, {**journal, "harness_pgid": pid})

    harness_args = ["--budget", f"{budget:g}"] if budget is not None else []  # frozen for the run
    harness = run_harness(repo, task, folder, BASELINE_TIMEOUT_SECONDS, record_harness, harness_args)
    for seed in range(1, rule.calibration_runs):  # the rule's first estimate of the noise
        if not harness.scored:
            break
        print(
            f"start: baseline scored, {seed} of the {rule.calibration_runs} scorings the noise estimate needs",
            file=sys.stderr,
            flush=True,
        )
        harness = run_again(
            repo, task, folder, BASELINE_TIMEOUT_SECONDS, harness, [*harness_args, "--seed", str(seed)], record_harness
        )
    block = harness.block
    if not harness.scored:
        (folder / START_FILE).unlink(missing_ok=True)
        why = harness.harness_error or block.error or block.status
        tail = "\n".join(line for line in log_tail(task, 3) if line not in why)  # not said twice
        raise RunError(f"the baseline did not score: {why}" + (f"\n{tail}" if tail else ""))
    recorded = {
        "task": block.task,
        "device": block.device,
        "timeout_seconds": block.timeout_seconds if math.isfinite(block.timeout_seconds) else None,
    }
    config = RunConfig(
        tag=tag,
        task=task.rel,
        base=base,
        metric=block.metric_name,
        higher_is_better=block.higher_is_better,
        budget_seconds=block.budget_seconds,
        created=stopping.now().isoformat(timespec="seconds"),
        deadline=deadline,
        max_iters=max_iters,
        extra={
            **{k: v for k, v in recorded.items() if v is not None},
            "keep_rule": rule.name,
            "confirm": confirm,
            **({"cv_folds": block.cv_folds} if block.cv_folds is not None else {}),
            "capabilities": capabilities.to_json(),
            **({"harness_args": harness_args} if harness_args else {}),
            "trusted": trusted,
            "sandbox": sandbox.detect().describe(),
            **where_scored,
            **({"gpus_per_candidate": 1} if str(block.device or "").startswith("cuda") else {}),
        },
    )
    try:
        ledger_for(repo, config, task).check()
    except ledger.LedgerError:
        (folder / START_FILE).unlink(missing_ok=True)
        raise
    description = hypothesis if hypothesis.lower().startswith("baseline") else f"baseline: {hypothesis}"
    row = make_row(
        config,
        block,
        base,
        0,
        "keep",
        ledger.clean_text(description),
        harness.seconds,
        code_lines(source),
        reason="baseline",
    )
    cells = ledger.cells(row, config.metric)
    write_json(folder / START_FILE, {"phase": "scored", "tag": tag, "config": asdict(config), "row": cells})
    return _complete_start(repo, config, cells, notes, se=block.se, seconds=harness.seconds)


def scoring_options(
    task: Task, caps: Capabilities, workers: int | None, executor: str | None, ray_address: str | None
) -> dict:
    """Where the run's candidates are scored (the run record's `workers`, `executor`, `gpus`, `ray_address`);
    one line when the options cannot work."""
    from autoresearch import executors

    executor = executor or "local"
    if executor not in executors.EXECUTORS:
        raise RunError(f"--executor {executor}: use {' or '.join(executors.EXECUTORS)}")
    gpus = executors.detect_gpus() if executor == "local" else []
    workers = workers if workers is not None else max(len(gpus), 1)
    if workers < 1:
        raise RunError(f"--workers {workers}: at least 1")
    if (workers > 1 or executor == "ray") and (caps.family != "tabular" or not caps.fresh_folds):
        raise RunError(
            f"--workers/--executor score waves, which are screened fold by fold and confirmed on fresh folds, and "
            f"this task's harness ({task.prepare_rel}) scores no folds it can redraw; start without them and `try`"
        )
    out: dict = {"workers": workers, "executor": executor}
    if gpus:
        out["gpus"] = gpus
    if executor == "ray":
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise RunError("--executor ray: say which cluster with --ray-address HOST:PORT (or set RAY_ADDRESS)")
        out["ray_address"] = address
    elif ray_address:
        raise RunError("--ray-address is for --executor ray")
    return out


def _pending_start(folder: Path) -> tuple[dict | None, list[str]]:
    """A start that was interrupted (its harness killed, if it was still scoring), or None; with a note."""
    path = folder / START_FILE
    if not path.exists():
        return None, []
    kill_recorded_group(folder / HARNESS_PGID_FILE)
    kill_recorded_group(folder / CHILD_PGID_FILE)
    pending = read_json(path)
    phase = (pending or {}).get("phase")
    options = (pending or {}).get("options")
    valid = (phase == "scoring" and isinstance(options, dict) and set(START_OPTIONS) <= options.keys()) or (
        phase == "scored" and config_from(pending.get("config")) is not None and isinstance(pending.get("row"), dict)
    )
    if not valid:
        path.unlink(missing_ok=True)
        return None, [f"{START_FILE} of an interrupted start was unreadable; removed it (the refs hold what was done)"]
    return pending, []


def _complete_start(
    repo: Repo,
    config: RunConfig,
    baseline: dict | None,
    notes: list[str],
    se: float = math.nan,
    seconds: float | None = None,
) -> str:
    """Make the run exist from its scored baseline; each step is skipped when done: safe to call again.

    The baseline's ref is written first: from then on it holds the row and the config, and everything
    else (run.json, results.tsv, the branch) is rebuilt from it.
    """
    tag, folder = config.tag, run_dir(repo, config.tag)
    branch = BRANCH_PREFIX + tag
    refs = read_refs(repo, tag, config.metric)
    if refs.config is None and baseline is not None:
        record_row(repo, config, 0, config.base, baseline, with_config=True)
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
            raise RunError(
                f"uncommitted changes ({list_paths(changes)}); commit or stash them, then `start {tag} --resume`"
            )
        if repo.branch_exists(branch):
            repo.checkout(branch)
        else:
            repo.create_branch(branch, refs.targets[int(best["iter"])])
    record_private(folder, 0, config.base)
    (folder / START_FILE).unlink(missing_ok=True)
    baseline = rows[0]
    shown = f"baseline {config.metric}={baseline.get(config.metric)}" + (f" ± {fmt(se)}" if math.isfinite(se) else "")
    timing = f" | {seconds:.1f} s" if seconds is not None else ""
    workers = int(config.extra.get("workers", 1))
    if workers > 1 or config.extra.get("executor", "local") != "local":
        notes = [*notes, f"workers: {workers} ({config.extra.get('executor', 'local')}): waves with submit and wait"]
    boxed = config.extra.get("sandbox", "")
    warning = "" if boxed.startswith("bubblewrap") else f"\nwarning: {boxed or 'candidate not sandboxed'}"
    return (
        f"run {tag} started on {branch} | {shown}{timing} | results in {repo.rel(task.results)}"
        + "".join(f" | {n}" for n in notes)
        + warning
    )


def _check_same_task(repo: Repo, tag: str, config: RunConfig | None, task_arg: str) -> None:
    """Refuse to go on with run `tag` under a `start` that names another task: a tag reused by mistake."""
    config = config or open_config(repo, tag)[0]
    if config is not None and config.task != task_rel(repo, task_arg):
        raise RunError(
            f"run {tag} exists on task {config.task}, not {task_rel(repo, task_arg)}; pick a new tag, or go on "
            f"with it: `start {tag} --task {config.task}`"
        )


def _frozen_options_notes(
    config: RunConfig | None, deadline, max_iters, budget, keep_rule, confirm, workers=None, executor=None
) -> list[str]:
    """One note per start option given again with another value: a run's options are frozen at its start."""
    if config is None:
        return []
    if deadline:
        try:
            deadline = stopping.parse_time(deadline).isoformat(timespec="seconds")
        except ValueError:
            pass  # shown as given: the run's own deadline stands either way
    given = {
        "deadline": (deadline, config.deadline),
        "max-iters": (max_iters, config.max_iters),
        "budget": (budget, config.budget_seconds),
        "keep-rule": (keep_rule, config.keep_rule),
        "confirm": (confirm, config.confirm),
        "workers": (workers, config.extra.get("workers", 1)),
        "executor": (executor, config.extra.get("executor", "local")),
    }
    return [
        f"--{name} {value} ignored: the run keeps its own ({'none' if own is None else own}), frozen at its start"
        for name, (value, own) in given.items()
        if value is not None and value != own
    ]


def _resume(repo: Repo, tag: str, branch: str, notes: list[str]) -> str:
    config, more = open_config(repo, tag)
    if config is None:
        raise RunError(f"branch {branch} exists but its run record is gone; start a new tag")
    notes += more
    if repo.branch() != branch:
        changes = repo.changes()
        if changes:
            raise RunError(f"uncommitted changes ({list_paths(changes)}); commit or stash them before resuming {tag}")
        repo.checkout(branch)
    task = find_task(repo, config.task)
    notes.append(recover(repo, config, task) or "")
    refs = read_refs(repo, tag, config.metric)
    if refs.legacy:
        notes.append(convert_legacy(repo, config, task))
    rows, more = verified_rows(repo, config, task)
    notes += more
    counted = f"{len(rows)} row{'' if len(rows) == 1 else 's'}"
    line = f"run {tag} resumed on {branch} | {counted}, next iter {next_iter(rows, refs)}" + "".join(
        f" | {n}" for n in notes if n
    )
    return line + "\n" + digest.render(digest.digest(config, rows, repo))  # where it stands: no `status` needed
