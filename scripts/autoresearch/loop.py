"""The ratchet's iteration, `try`: a state machine whose every step is recorded before it is taken.

    lock the checkout -> recover an iteration that died (recovery) -> refuse unless only train.py changed
    -> commit it ("running") -> score it with the frozen harness (harness), again while the run's keep rule
    says "run again" -> judge it with that rule (keeprules) -> in a run that confirms, score a gain and the best
    again on fresh folds and keep it only if the rule's test passes there too (still "running")
    -> amend the commit with the verdict ("decided")
    -> write the row's ref, sync results.tsv, keep the commit or reset train.py to the best ("recorded")
    -> print one line (messages)

A ratchet killed at any point is finished or rolled back by the next call (recovery.recover). This module
knows no keep rule and no block key: the rule is the one `start` recorded (starting.py), the block is read
through contract.Block.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch import keeprules, ledger, sandbox, stopping, trust, watch
from autoresearch.contract import Block
from autoresearch.decide import Decision, code_lines, code_size, preload_t_distribution
from autoresearch.gitops import REF_PREFIX, Repo
from autoresearch.harness import HarnessRun, confirm_seed, run_again, run_confirm, run_harness, timeout_for
from autoresearch.messages import (
    commit_message,
    declared_hypothesis,
    fmt,
    line,
    list_paths,
    log_tail,
    make_row,
    trailers,
    verdict_text,
)
from autoresearch.recovery import CONFIRM_RECORD, STATE_FILE, finish, recover
from autoresearch.refs import RunRefs, active_run, best_row, next_iter, read_refs, verified_rows
from autoresearch.runs import CheckoutLock, RunConfig, RunError, queued, run_dir, write_json
from autoresearch.summary import parse_float, parse_floats
from autoresearch.taskdir import Task

STEERING_FILES = ("program.md",)  # the person's directions: may be edited during a run; the ratchet never commits it
EDITED_WHILE_SCORED = "train.py was edited while it was being scored: the score would not be of the committed code"


def check_hypothesis(text: str, where: str = "the hypothesis") -> None:
    problem = ledger.text_problem(text)
    if problem:
        raise RunError(f"{where} has {problem}; use plain text (tabs and newlines are fine). Nothing was touched")


def try_edit(repo: Repo, hypothesis: str | None) -> str:
    """Run one iteration on the current edit of train.py; return the one line the agent reads back."""
    check_hypothesis(hypothesis or "")  # before anything is touched
    with CheckoutLock(repo):
        ready = open_iteration(repo)
        config, task, folder, refs, rows, best, notes = (
            ready.config,
            ready.task,
            ready.folder,
            ready.refs,
            ready.rows,
            ready.best,
            ready.notes,
        )
        rule = _rule_of(config)
        _check_no_wave(folder)
        source = task.train.read_text(errors="replace")
        best_sha = repo.head()
        full = resolve_hypothesis(repo, task, source, best_sha, hypothesis)
        hypothesis = ledger.cap_text(full)  # the row's and the line's; the commit body keeps it whole
        n = next_iter(rows, refs)
        state = {"phase": "running", "iter": n, "best": best_sha, "hypothesis": hypothesis, "started": time.time()}
        write_json(folder / STATE_FILE, state)  # before the commit: a kill right after it is still recovered
        state["candidate"] = repo.commit_file(task.train_rel, commit_message(full))
        write_json(folder / STATE_FILE, state)

        def record_harness(pid: int) -> None:
            write_json(folder / STATE_FILE, {**state, "harness_pgid": pid})

        timeout = timeout_for(config)
        harness_args = list(config.extra.get("harness_args", []))
        preload_t_distribution()
        harness = run_harness(repo, task, folder, timeout, on_start=record_harness, extra_args=harness_args)
        best_source = repo.show(best_sha, task.train_rel)
        sizes = code_size(source), code_size(best_source)
        seed = 1
        while _wants_another_run(rule, config, harness, best, sizes, rows):
            harness = run_again(
                repo, task, folder, timeout, harness, [*harness_args, "--seed", str(seed)], record_harness
            )
            seed += 1
        if repo.tree_blob(task.train_rel) != repo.blob(state["candidate"], task.train_rel):
            harness = HarnessRun(Block.crash(EDITED_WHILE_SCORED), harness.seconds, "")
        decision = _judge(rule, config, harness.block, best, sizes, rows)[1] if harness.scored else None
        confirmation = None
        if config.confirm and decision is not None and decision.keep and not decision.simpler:
            state["confirm_seed"] = confirm_seed(n)  # recorded before its scorings: recovery says what was killed
            write_json(folder / STATE_FILE, state)
            sources = {"candidate": repo.show(state["candidate"], task.train_rel), "best": best_source}
            confirmation = _confirm(
                repo, config, task, folder, rule, sources, state["confirm_seed"], timeout, harness_args, record_harness
            )
            harness = HarnessRun(harness.block, harness.seconds + confirmation.seconds, harness.harness_error)
        row, final = _decide(repo, config, harness, decision, confirmation, best, code_lines(source), n, full)
        state.update(phase="decided", row=row, final=final, status=row["status"])
        if confirmation is not None:
            state[CONFIRM_RECORD] = confirmation.record(config.metric)
        write_json(folder / STATE_FILE, state)
        notes += finish(repo, config, task, state)
        shown = line(config, row, hypothesis)
        if state["kept_later_edit"]:
            notes.append(f"{task.train_rel} was edited while this iteration ran: your edit is left in place, untried")
    watch.refresh(repo, config.tag)  # the live page, for a person watching; never raises
    tail = log_tail(task) if row["status"] == "crash" and row["reason"] != EDITED_WHILE_SCORED else []
    # The iteration's line comes first, so that an agent (or a grep) finds `iter N |` at the top.
    return "\n".join([shown] + [note for note in notes if note] + [f"  | {t}" for t in tail])


@dataclass
class Ready:
    """A run ready for its next candidate: recovered, its rows checked against its refs, the edit checked."""

    config: RunConfig
    task: Task
    folder: Path
    refs: RunRefs
    rows: list[dict]
    best: dict
    notes: list[str]


def open_iteration(repo: Repo, recover_more=None) -> Ready:
    """Under the checkout lock, what `try` and `submit` both do before a candidate is taken: recover what a dead
    ratchet left (and `recover_more(repo, config, task)`'s notes), check the rows, refuse a run that is over and
    an edit that is not only train.py on the best, or a harness, library or sandbox not the run's."""
    config, task, notes = active_run(repo)
    folder = run_dir(repo, config.tag)
    if recover_more is not None:
        notes += recover_more(repo, config, task)
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
    return Ready(config, task, folder, refs, rows, best, notes)


def resolve_hypothesis(repo: Repo, task: Task, source: str, best_sha: str, hypothesis: str | None, verb="try") -> str:
    """The hypothesis given, else HYPOTHESIS in train.py when the edit changed it; else one line."""
    full = ledger.clean_text(hypothesis or "")
    if full:
        return full
    declared = declared_hypothesis(source)
    if not declared or declared == declared_hypothesis(repo.show(best_sha, task.train_rel)):
        raise RunError(f'say what this edit tests: ratchet.py {verb} "HYPOTHESIS" (or update HYPOTHESIS in train.py)')
    check_hypothesis(declared, f"HYPOTHESIS in {task.train_rel}")
    return ledger.clean_text(declared)


def _check_no_wave(folder) -> None:
    """`try` judges against the best; a queued wave is judged against it too: one at a time."""
    pending = queued(folder)
    if pending:
        raise RunError(f"wave {pending[0]['wave']} has {len(pending)} candidate(s) queued: `wait` for it before `try`")


def _rule_of(config: RunConfig) -> keeprules.KeepRule:
    try:
        return keeprules.rule_named(config.keep_rule, cv_folds=config.cv_folds)
    except keeprules.UnknownRule as exc:
        raise RunError(f"run {config.tag}'s record names {exc}; this library cannot judge it") from None


def _judge(
    rule: keeprules.KeepRule, config: RunConfig, block: Block, best: dict, sizes: tuple[int, int], rows: list[dict]
) -> tuple[str, Decision]:
    """(keep | discard | run again, the decision) of the run's rule on a scored candidate; `sizes`: the
    candidate's and the best's decide.code_size."""
    decision = rule.judge(
        block.fold_scores,
        parse_floats(best.get("fold_scores")),
        higher_is_better=config.higher_is_better,
        history=rows,
        candidate_size=sizes[0],
        best_size=sizes[1],
    )
    return keeprules.verdict_of(decision), decision


def _wants_another_run(
    rule: keeprules.KeepRule,
    config: RunConfig,
    harness: HarnessRun,
    best: dict,
    sizes: tuple[int, int],
    rows: list[dict],
) -> bool:
    """Whether the rule asks for another scoring of the same code (only a rule that reruns with seeds can)."""
    if not (rule.needs_seeds and harness.scored):
        return False
    return _judge(rule, config, harness.block, best, sizes, rows)[0] == keeprules.RUN_AGAIN


@dataclass
class Confirmation:
    """The confirm step of one iteration: the candidate and the best scored on the folds of a fresh CV seed."""

    seed: int
    candidate: HarnessRun
    best: HarnessRun | None  # None when the candidate did not score there (the best was not run)
    decision: Decision | None  # the rule's test on those folds; None unless both scored

    @property
    def seconds(self) -> float:
        return self.candidate.seconds + (self.best.seconds if self.best else 0.0)

    @property
    def harness_error(self) -> str:
        """A failure outside the candidate's code: the harness failed, or the best (which scored before) did not."""
        if self.candidate.harness_error:
            return self.candidate.harness_error
        if self.best is not None and self.best.harness_error:
            return self.best.harness_error
        if self.best is not None and not self.best.block.ok:
            return f"the best's train.py did not score on them: {self.best.block.error or self.best.block.status}"
        return ""

    def record(self, metric: str) -> dict:
        """What the run's confirm record keeps of it (beside the verdict in the commit message)."""
        runs = {"candidate": self.candidate, "best": self.best}
        out: dict = {"cv_seed": self.seed}
        for name, run in runs.items():
            if run is not None and run.scored:
                out[name] = {metric: run.block.value, "fold_scores": run.block.fold_scores}
            elif run is not None:
                out[name] = {"error": run.harness_error or run.block.error or run.block.status}
        if self.decision is not None:
            d = self.decision
            out.update(keep=d.keep, delta=d.delta, se=d.se, p_value=d.p_value)
        return out

    def trailers(self) -> str:
        """Lines for the commit message's trailers: the seed and both scores on the fresh folds."""
        lines = [f"Autoresearch-Confirm-Seed: {self.seed}"]
        for name, run in (("Candidate", self.candidate), ("Best", self.best)):
            if run is not None and run.scored:
                lines.append(f"Autoresearch-Confirm-{name}: {run.block.value_text}")
        return "\n".join(lines)


def _confirm(
    repo: Repo,
    config: RunConfig,
    task: Task,
    folder,
    rule: keeprules.KeepRule,
    sources: dict[str, str],
    seed: int,
    timeout: float,
    harness_args: list[str],
    on_start,
) -> Confirmation:
    """Score the candidate, then (if it scored) the best, on the folds of CV seed `seed`; judge by the rule."""
    args = (repo, task, folder, timeout)
    fresh = run_confirm(*args, "candidate", sources["candidate"], seed, harness_args, on_start)
    if not fresh.scored:
        return Confirmation(seed, fresh, None, None)
    best = run_confirm(*args, "best", sources["best"], seed, harness_args, on_start)
    if not best.scored:
        return Confirmation(seed, fresh, best, None)
    decision = rule.confirm(fresh.block.fold_scores, best.block.fold_scores, higher_is_better=config.higher_is_better)
    return Confirmation(seed, fresh, best, decision)


def _confirmed(screen: Decision, confirmation: Confirmation) -> tuple[str, str]:
    """(status, reason) of a screened gain after its confirm step (not a harness failure: see _decide)."""
    on_screen = f"beyond noise on the ratchet's folds (p={screen.p_value:.3f})"
    where = f"fresh folds (seed {confirmation.seed}"
    fresh = confirmation.decision
    if fresh is None:  # the candidate itself failed there: its own fault, not the harness's
        why = confirmation.candidate.block.error or confirmation.candidate.block.status
        return "discard", f"{on_screen} but it failed on {where}): {why}"
    if fresh.keep:
        return "keep", f"{screen.reason}, confirmed on {where}, p={fresh.p_value:.3f})"
    return "discard", f"{on_screen} but not on {where}, p={fresh.p_value:.3f})"


def _decide(
    repo: Repo,
    config: RunConfig,
    harness: HarnessRun,
    decision: Decision | None,
    confirmation: Confirmation | None,
    best: dict,
    lines: int,
    n: int,
    hypothesis: str,
) -> tuple[dict, str]:
    """The candidate's row, and its commit amended with the verdict; return (row, final sha)."""
    block = harness.block
    delta = se = p = math.nan
    notes = []
    if harness.harness_error:
        status, reason = "crash", f"{stopping.HARNESS_FAILURE_PREFIX} {harness.harness_error}"
        verdict = f"CRASH ({harness.harness_error})"
    elif not block.ok or decision is None:
        status, reason = "crash", block.error or "no reason given"
        verdict = f"CRASH ({reason})"
    elif confirmation is not None and confirmation.harness_error:
        why = f"on fresh folds (seed {confirmation.seed}): {confirmation.harness_error}"
        status, reason = "crash", f"{stopping.HARNESS_FAILURE_PREFIX} {why}"
        verdict = f"CRASH (the harness failed {why})"
    else:
        status = "keep" if decision.keep else "discard"
        reason, delta, se, p = decision.reason, decision.delta, decision.se, decision.p_value
        if confirmation is not None:
            status, reason = _confirmed(decision, confirmation)
            notes.append(_fresh_line(config, confirmation))
        shown = Decision(status == "keep", delta, se, p, reason)
        verdict = verdict_text(config.metric, parse_float(best.get(config.metric)), block.value, shown)
    tail = trailers(config, n) + (f"\n{confirmation.trailers()}" if confirmation is not None else "")
    final = repo.amend_message("\n\n".join([commit_message(hypothesis), verdict, *notes, tail]))
    row = make_row(
        config,
        block,
        final,
        n,
        status,
        ledger.cap_text(hypothesis),
        harness.seconds,
        lines,
        reason=ledger.cap_text(ledger.clean_text(reason)),
        delta=delta,
        se=se,
        p=p,
    )
    return row, final


def _fresh_line(config: RunConfig, confirmation: Confirmation) -> str:
    """The confirm step's figures, for the commit message."""
    fresh, best, d = confirmation.candidate, confirmation.best, confirmation.decision
    where = f"on fresh folds (cv seed {confirmation.seed})"
    if d is None or best is None:
        return f"{where}: the candidate did not score"
    return (
        f"{where}: {config.metric} {fmt(best.block.value)} → {fmt(fresh.block.value)} "
        f"({d.delta:+.4f} ± {fmt(d.se)}, p={d.p_value:.3f})"
    )


def _check_tree(repo: Repo, config: RunConfig, task: Task, best: dict) -> None:
    """Refuse unless the one change is the task's train.py, on top of the commit the best row scored."""
    allowed = {task.train_rel, *STEERING_FILES}
    frozen = [p for p in repo.changed_between(config.base, "HEAD") if p not in allowed]
    if frozen:
        raise RunError(f"frozen files changed on this branch since the run started ({list_paths(frozen)}); revert them")
    others = [p for p in repo.changes() if p not in allowed]
    if others:
        raise RunError(
            f"only {task.train_rel} may change; also changed: {list_paths(others)} (nothing was touched; "
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
