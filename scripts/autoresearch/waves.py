"""Waves: many candidates scored at once (`submit`), judged together (`wait`).

    submit: snapshot train.py as a candidate commit on the best (its ref `refs/autoresearch/TAG/NNNN`, a plain
            commit until judged), put train.py back to the best, queue its scoring for the scorer; one line
    wait:   block until the wave's candidates are scored -> screen each against the best with the paired rule on
            the ratchet's folds -> confirm the best that passes on fresh folds (CV seed 1000+iter, scored by the
            scorer too) -> record every row (wave.json first, so that a killed `wait` is finished by the next
            call) -> move the branch to the kept one, if any; one line per candidate, then the wave's

A wave is every candidate submitted since the last wave was judged. The head is the single writer of git, the
ledger and the held-out records; the scorer (scorer.py) and its executor only score.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from autoresearch import digest, keeprules, ledger, loop, recovery, scorer, stopping, watch
from autoresearch.contract import Block
from autoresearch.decide import Decision, code_lines, code_size
from autoresearch.executors import Job, Outcome, source_text
from autoresearch.gitops import BRANCH_PREFIX, Repo
from autoresearch.harness import HarnessRun, confirm_seed
from autoresearch.messages import commit_message, line, make_row, trailers, verdict_text
from autoresearch.recovery import append_once
from autoresearch.refs import active_run, best_row, iter_ref, next_iter, read_refs, record_row, verified_rows
from autoresearch.runs import CheckoutLock, RunConfig, RunError, queue_dir, queued, read_json, run_dir, write_json
from autoresearch.summary import parse_float, parse_floats
from autoresearch.taskdir import Task

WAVE_STATE = "wave.json"  # a judged wave being recorded: what the next call finishes if `wait` dies
WAVES_FILE = digest.WAVES_FILE  # one line per recorded wave, written here, read by digest.read_waves
WAIT_MAX_SECONDS = 540  # `wait` returns by then (the agent's shell allows 10 min); `wait --all` has no cap
WAIT_POLL_SECONDS = 0.25  # how often `wait` looks at the jobs
SCORER_CHECK_SECONDS = 3.0  # how often `wait` makes sure the scorer lives (it starts in about a second)
# How often the confirm step is scored when its scorer dies under it (an interrupted confirm says nothing of the
# candidate); after that, the winner is discarded as not scored on fresh folds
CONFIRM_ATTEMPTS = 3
SCREEN_RULE = keeprules.WAVE_SCREEN_RULE  # whatever the run's `try` rule; the confirm step always follows
JOB_PARTS = ("", "confirm-candidate", "confirm-best")  # a candidate's jobs: its screen, its confirm's two
NEAR_MISS = "near miss: "  # how a discarded row that passed the screen says so, for the next wave to combine


def in_flight(folder: Path) -> dict | None:
    """The open wave's counts, or None when no candidate is queued."""
    candidates = queued(folder)
    if not candidates:
        return None
    states = [scorer.job_state(folder, job_key(c["iter"])) for c in candidates]
    return {
        "wave": candidates[0]["wave"],
        "queued": states.count("waiting"),
        "running": states.count("running"),
        "done": states.count("done"),
    }


def job_key(n: int, part: str = "") -> str:
    return f"{n:04d}" + (f"-{part}" if part else "")


def can_run_waves(config: RunConfig) -> str:
    """Why this run cannot score waves ("" when it can): the screen compares folds and confirms on fresh ones."""
    caps = config.capabilities
    if caps is None or caps.family != "tabular" or not caps.fresh_folds:
        return (
            "waves are screened fold by fold and confirmed on fresh folds, and this run's harness scores no "
            "folds it can redraw; use `try`"
        )
    return ""


# -- submit ---------------------------------------------------------------------------------------------------
def submit(repo: Repo, hypothesis: str | None) -> str:
    """Queue the current edit of train.py as a candidate of the open wave; return the one line the agent reads."""
    loop.check_hypothesis(hypothesis or "")
    with CheckoutLock(repo):
        config, task, _ = active_run(repo)
        why = can_run_waves(config)
        if why:
            raise RunError(why)
        ready = loop.open_iteration(repo, recover_waves)
        folder, refs, rows, notes = ready.folder, ready.refs, ready.rows, ready.notes
        waiting = queued(folder)
        done = sum(1 for r in rows if r.get("iter") != "0")
        if config.max_iters is not None and done + len(waiting) >= config.max_iters:
            raise RunError(
                f"the run's {config.max_iters} iterations are taken by its rows and the {len(waiting)} queued; "
                "`wait` for the wave"
            )
        data = task.train.read_bytes()  # read once: the commit and the scored copy are these bytes
        source = source_text(data)
        best_sha = repo.head()
        full = loop.resolve_hypothesis(repo, task, source, best_sha, hypothesis, "submit")
        n = next_iter(rows, refs)
        wave = waiting[0]["wave"] if waiting else last_wave(folder) + 1
        sha = repo.snapshot_commit(task.train_rel, data, best_sha, commit_message(full))
        record = {
            "iter": n,
            "wave": wave,
            "commit": sha,
            "best": best_sha,
            "hypothesis": full,
            "submitted": time.time(),
        }
        # The queue record before the job: a submit killed between them leaves a record whose job
        # recover_waves queues, never a job nobody judges. Files of N a killed submit left are not this one's.
        write_json(queue_dir(folder) / f"{job_key(n)}.json", record)
        for part in JOB_PARTS:
            scorer.forget(folder, job_key(n, part))
        scorer.enqueue(folder, Job(job_key(n), source))
        repo.set_ref(iter_ref(config.tag, n), sha)
        if repo.tree_blob(task.train_rel) == repo.blob(sha, task.train_rel):
            repo.git.checkout(best_sha, "--", task.train_rel)  # back to the best, for the next candidate
        else:  # saved again since it was read: that newer edit is not the candidate, and is not ours to undo
            notes.append(f"{task.train_rel} changed while it was submitted: the newer edit is left in place, unqueued")
    scorer.ensure_running(repo, config.tag)
    counts = in_flight(folder) or {"running": 0, "queued": 0}
    shown = f"queued iter {n} (wave {wave}; {counts['running']} running, {counts['queued']} waiting)"
    return "\n".join([shown] + [note for note in notes if note])


def source_at(repo: Repo, sha: str, rel: str) -> str:
    """`rel` at `sha` as a Job's source, byte for byte (Repo.show drops the last newline): what is scored is
    what the commit holds."""
    return repo.git.show(f"{sha}:{rel}", strip_newline_in_stdout=False)


def last_wave(folder: Path) -> int:
    return max(digest.read_waves(folder), default=0)


# -- wait -----------------------------------------------------------------------------------------------------
def wait(repo: Repo, *, wait_all: bool = False, max_seconds: float = WAIT_MAX_SECONDS) -> str:
    """Block until the open wave is scored, judge and record it; one line per candidate, then the wave's."""
    config, task, notes = active_run(repo)
    folder = run_dir(repo, config.tag)
    loop._check_sandbox(config)  # the scorer it starts inherits this environment, and scores sandboxed or not at all
    with CheckoutLock(repo):
        notes += recover_waves(repo, config, task)
    candidates = queued(folder)
    if not candidates:
        said = [n for n in notes if n]
        if said:  # a wave a dead `wait` had judged was just recorded: its lines are in the notes
            return "\n".join(said)
        raise RunError("nothing is queued; submit candidates first")
    give_up = math.inf if wait_all else time.monotonic() + max_seconds
    keys = [job_key(c["iter"]) for c in candidates]
    if not _wait_for(repo, config.tag, folder, keys, give_up):
        return _still_scoring(folder, candidates, "scoring")
    with CheckoutLock(repo):
        _check_branch(repo, config)
        if _recorded_meanwhile(folder, candidates):
            return _recorded_line(candidates)
        plan = _judge(repo, config, task, folder, candidates, confirmed=False)
    winner = plan.get("winner")
    if winner is not None:
        keys = [job_key(winner, "confirm-candidate"), job_key(winner, "confirm-best")]
        for attempt in range(CONFIRM_ATTEMPTS):
            if not _wait_for(repo, config.tag, folder, keys, give_up):
                return _still_scoring(folder, candidates, f"confirming iter {winner} on fresh folds")
            lost = [k for k in keys if _outcome_of(folder, k).worker == scorer.INTERRUPTED]
            if not lost or attempt == CONFIRM_ATTEMPTS - 1:
                break
            for key in lost:  # the scorer died under them: nothing the candidate did, so they are scored again
                scorer.forget(folder, key)
            with CheckoutLock(repo):
                _check_branch(repo, config)
                if _recorded_meanwhile(folder, candidates):
                    return _recorded_line(candidates)
                _judge(repo, config, task, folder, candidates, confirmed=False)  # queues the missing ones
    with CheckoutLock(repo):
        _check_branch(repo, config)
        if _recorded_meanwhile(folder, candidates):
            return _recorded_line(candidates)
        plan = _judge(repo, config, task, folder, candidates, confirmed=True)
        write_json(folder / WAVE_STATE, plan["state"])
        lines = finish_wave(repo, config, task, plan["state"])
    watch.refresh(repo, config.tag)
    return "\n".join(lines + [note for note in notes if note])


def _check_branch(repo: Repo, config: RunConfig) -> None:
    """`wait` holds no lock while it waits, and a person's `git checkout` takes none: the run's branch must still
    be the one checked out before the wave moves HEAD's branch to its kept candidate."""
    branch = repo.branch()
    if branch != BRANCH_PREFIX + config.tag:
        raise RunError(
            f"not on an autoresearch run branch (on {branch or 'a detached HEAD'}) since the wait began; "
            f"`git checkout {BRANCH_PREFIX + config.tag}`, then wait again: the wave stays queued"
        )


def _recorded_meanwhile(folder: Path, candidates: list[dict]) -> bool:
    """Whether another `wait` recorded these candidates while this one waited (their queue records are gone):
    judged again, their jobs gone and the best moved, they would be recorded again over their rows."""
    return any(not (queue_dir(folder) / f"{job_key(c['iter'])}.json").exists() for c in candidates)


def _recorded_line(candidates: list[dict]) -> str:
    return f"wave {candidates[0]['wave']} | judged and recorded by another wait meanwhile; status shows its rows"


def _wait_for(repo: Repo, tag: str, folder: Path, keys: list[str], give_up: float) -> bool:
    """Poll until every job of `keys` is done (True) or time is up (False); keep a scorer alive meanwhile."""
    checked = 0.0
    while True:
        if all(scorer.job_state(folder, k) == "done" for k in keys):
            return True
        missing = [k for k in keys if scorer.job_state(folder, k) == "missing"]
        if missing:
            raise RunError(f"the jobs of {', '.join(missing)} are gone from {folder / scorer.JOBS_DIR}; submit again")
        if time.monotonic() - checked > SCORER_CHECK_SECONDS:
            scorer.ensure_running(repo, tag)
            checked = time.monotonic()
        if time.monotonic() > give_up:
            return False
        time.sleep(WAIT_POLL_SECONDS)


def _still_scoring(folder: Path, candidates: list[dict], what: str) -> str:
    counts = in_flight(folder) or {"done": 0, "running": 0, "queued": 0}
    return (
        f"wave {candidates[0]['wave']} | still {what}: {counts['done']} of {len(candidates)} done, "
        f"{counts['running']} running; run wait again"
    )


def _judge(repo: Repo, config: RunConfig, task: Task, folder: Path, candidates: list[dict], *, confirmed: bool):
    """The wave's verdict. Before confirmation: {"winner": iter or None}, and the winner's confirm jobs queued.
    After: {"state": what finish_wave records}."""
    loop._check_trusted(repo, config)  # the judgment depends on the harness and library the run started with
    refs = read_refs(repo, config.tag, config.metric)
    rows, _ = verified_rows(repo, config, task, refs)
    best = best_row(rows)
    best_sha = refs.targets[int(best["iter"])]
    best_source = source_at(repo, best_sha, task.train_rel)
    outcomes = {c["iter"]: _outcome_of(folder, job_key(c["iter"])) for c in candidates}
    sources = {c["iter"]: source_at(repo, c["commit"], task.train_rel) for c in candidates}
    stale = {c["iter"] for c in candidates if c["best"] != best_sha}  # a later keep moved the best under it
    usable = [c for c in candidates if c["iter"] not in stale and outcomes[c["iter"]].worker != scorer.INTERRUPTED]
    wave_candidates = [
        keeprules.WaveCandidate(
            str(c["iter"]),
            outcomes[c["iter"]].run.block.fold_scores if outcomes[c["iter"]].run.scored else [],
            code_size(sources[c["iter"]]),
        )
        for c in usable
    ]
    rule = keeprules.rule_named(SCREEN_RULE, cv_folds=config.cv_folds)
    common = dict(
        higher_is_better=config.higher_is_better,
        history=rows,
        best_size=code_size(best_source),
    )
    best_scores = parse_floats(best.get("fold_scores"))
    first = keeprules.judge_wave(rule, wave_candidates, best_scores, confirm=None, **common)
    winner = int(first.winner) if first.winner is not None else None
    if not confirmed:
        if winner is not None:
            seed = confirm_seed(winner)
            for part, source in (("confirm-candidate", sources[winner]), ("confirm-best", best_source)):
                key = job_key(winner, part)
                if scorer.job_state(folder, key) == "missing":
                    scorer.enqueue(folder, Job(key, source, ("--cv-seed", str(seed))))
        return {"winner": winner}
    fresh: dict[str, Outcome | None] = {}
    if winner is not None:
        fresh = {part: _outcome_of(folder, job_key(winner, part)) for part in ("confirm-candidate", "confirm-best")}

    def confirm(_: keeprules.WaveCandidate) -> tuple[list[float], list[float]]:
        scored = [o.run.block.fold_scores if o is not None and o.run.scored else [] for o in fresh.values()]
        return scored[0], scored[1]

    seed = confirm_seed(winner) if winner is not None else None
    verdict = keeprules.judge_wave(
        rule, wave_candidates, best_scores, confirm=confirm, where=f"fresh folds (seed {seed})", **common
    )
    judged = {int(j.id): j for j in verdict.judged}
    entries = []
    for c in candidates:
        n, result = c["iter"], outcomes[c["iter"]]
        entry = _entry(repo, config, task, c, result, judged.get(n), best, best_sha, sources[n], stale)
        if n == winner:
            entry["confirm"] = _confirm_record(config, seed, fresh, verdict.confirmation)
            entry["row"]["seconds"] = round(
                float(entry["row"]["seconds"]) + sum(o.run.seconds for o in fresh.values() if o is not None), 1
            )
        entries.append(entry)
    kept = verdict.kept
    state = {
        "phase": "decided",
        "wave": candidates[0]["wave"],
        "best": best_sha,
        "entries": entries,
        "kept": int(kept) if kept is not None else None,
        "summary": _summary(config, candidates, outcomes, fresh, int(kept) if kept else None, seed),
    }
    return {"state": state}


def _outcome_of(folder: Path, key: str) -> Outcome:
    """A scored job's outcome; an unreadable record is the harness's failure, never the candidate's."""
    found = scorer.outcome(folder, key)
    if found is None:
        return Outcome(HarnessRun(Block(), 0.0, f"the record of scoring {key} is unreadable"), None, "")
    return found


def _entry(repo, config, task, c, result: Outcome, judgement, best, best_sha, source, stale) -> dict:
    """One candidate's row, and its commit made again with the verdict in its message."""
    n, block = c["iter"], result.run.block
    delta = se = p = math.nan
    if n in stale:
        status = "discard"
        reason = f"submitted on {c['best'][:7]}, which is no longer the best ({best_sha[:7]} is); resubmit it"
        verdict = "DISCARDED (its parent is no longer the best)"
    elif result.worker == scorer.INTERRUPTED:
        status, reason = "interrupted", "the scorer was killed while it scored this candidate; it was not scored"
        verdict = "INTERRUPTED"
    elif judgement is None or judgement.status == keeprules.CRASH:
        status = "crash"
        if result.run.harness_error:
            reason = f"{stopping.HARNESS_FAILURE_PREFIX} {result.run.harness_error}"
        else:
            reason = block.error or (judgement.reason if judgement else "") or block.status or "no reason given"
        verdict = f"CRASH ({reason})"
    else:
        d: Decision = judgement.decision
        status = "keep" if judgement.status == keeprules.KEEP else "discard"
        reason = (NEAR_MISS if judgement.status == keeprules.NEAR_MISS else "") + judgement.reason
        delta, se, p = d.delta, d.se, d.p_value
        shown = Decision(status == "keep", delta, se, p, reason)
        verdict = verdict_text(config.metric, parse_float(best.get(config.metric)), block.value, shown)
    tail = trailers(config, n) + f"\nAutoresearch-Wave: {c['wave']}\nAutoresearch-Worker: {result.worker}"
    final = repo.recommit(c["commit"], "\n\n".join([commit_message(c["hypothesis"]), verdict, tail]))
    shown_block = block if status != "interrupted" else Block()
    row = make_row(
        config,
        shown_block,
        final,
        n,
        status,
        ledger.cap_text(ledger.clean_text(c["hypothesis"])),
        result.run.seconds,
        code_lines(source),
        reason=ledger.cap_text(ledger.clean_text(reason)),
        delta=delta,
        se=se,
        p=p,
    )
    row.update(wave=c["wave"], worker=result.worker if result.worker != scorer.INTERRUPTED else "")
    return {
        "iter": n,
        "final": final,
        "row": row,
        "heldout": result.heldout,
        "line": line(config, row, ledger.cap_text(ledger.clean_text(c["hypothesis"]))),
    }


def _confirm_record(config: RunConfig, seed, fresh: dict, decision: Decision | None) -> dict:
    out: dict = {"cv_seed": seed}
    for part, name in (("confirm-candidate", "candidate"), ("confirm-best", "best")):
        o = fresh.get(part)
        if o is not None and o.run.scored:
            out[name] = {config.metric: o.run.block.value, "fold_scores": o.run.block.fold_scores}
        elif o is not None:
            out[name] = {"error": o.run.harness_error or o.run.block.error or o.run.block.status}
    if decision is not None:
        out.update(keep=decision.keep, delta=decision.delta, se=decision.se, p_value=decision.p_value)
    return out


def _summary(config: RunConfig, candidates, outcomes, fresh, kept, seed) -> dict:
    busy: dict[str, float] = {}
    for o in [*outcomes.values(), *fresh.values()]:
        if o is not None and o.worker and o.worker != scorer.INTERRUPTED:
            busy[o.worker] = round(busy.get(o.worker, 0.0) + o.run.seconds, 1)
    return {
        "wave": candidates[0]["wave"],
        "workers": int(config.extra.get("workers", 1)),
        "executor": config.extra.get("executor", "local"),
        "iters": [c["iter"] for c in candidates],
        "submitted": min(c["submitted"] for c in candidates),
        "judged": time.time(),
        "busy_seconds": busy,
        "kept": kept,
        "confirm_seed": seed,
    }


def finish_wave(repo: Repo, config: RunConfig, task: Task, state: dict) -> list[str]:
    """Record a judged wave: every row's ref, the held-out and confirm records, the views, the branch, the
    wave's line. Idempotent: the next call finishes it after a kill."""
    folder = run_dir(repo, config.tag)
    entries = state["entries"]
    if state["phase"] == "decided":
        for e in entries:
            record_row(repo, config, e["iter"], e["final"], ledger.cells(e["row"], config.metric))
            if isinstance(e.get("heldout"), dict):
                append_once(folder / "heldout.jsonl", e["iter"], e["final"], e["heldout"])
            if isinstance(e.get("confirm"), dict):
                append_once(folder / recovery.CONFIRM_FILE, e["iter"], e["final"], e["confirm"])
        state["phase"] = "recorded"
        write_json(folder / WAVE_STATE, state)
    _, notes = verified_rows(repo, config, task, new=[e["iter"] for e in entries])
    kept = next((e for e in entries if e["iter"] == state["kept"]), None)
    rel = task.train_rel
    if kept is not None and repo.head() != kept["final"]:
        later_edit = repo.tree_blob(rel) not in (repo.blob(state["best"], rel), repo.blob(kept["final"], rel))
        repo.reset_file_to(kept["final"], rel, keep_tree_file=later_edit)
        if later_edit:
            notes.append(f"{rel} was edited while the wave was judged: your edit is left in place, untried")
    if state["wave"] not in digest.read_waves(folder):
        with open(folder / WAVES_FILE, "a") as fh:
            fh.write(json.dumps(state["summary"]) + "\n")
    for e in entries:
        for part in JOB_PARTS:
            scorer.forget(folder, job_key(e["iter"], part))
        (queue_dir(folder) / f"{job_key(e['iter'])}.json").unlink(missing_ok=True)
    for late in queued(folder):  # submitted while this wave was judged, so judged by the next wait: its wave
        if late["wave"] == state["wave"]:
            write_json(queue_dir(folder) / f"{job_key(late['iter'])}.json", {**late, "wave": state["wave"] + 1})
    (folder / WAVE_STATE).unlink(missing_ok=True)
    summary = state["summary"]
    took = summary["judged"] - summary["submitted"]
    kept_text = f"kept iter {state['kept']}" if state["kept"] is not None else "nothing kept"
    near = [str(e["iter"]) for e in entries if str(e["row"].get("reason", "")).startswith(NEAR_MISS)]
    near_text = f" | near misses: iter {', '.join(near)}" if near else ""
    last = (
        f"wave {state['wave']} | {len(entries)} candidate{'s' if len(entries) != 1 else ''} on "
        f"{summary['workers']} worker{'s' if summary['workers'] != 1 else ''} in {took:.0f} s | {kept_text}{near_text}"
    )
    return [e["line"] for e in entries] + [last] + notes


def recover_waves_if_idle(repo: Repo, config: RunConfig, task: Task) -> list[str]:
    """For readers (`status`): finish recording a wave a dead `wait` had judged, unless a ratchet holds the lock.
    The queue and the scorer are left to the next `submit` or `wait` (the agent's calls)."""
    folder = run_dir(repo, config.tag)
    if not (folder / WAVE_STATE).exists() or repo.branch() != BRANCH_PREFIX + config.tag:
        return []
    try:
        with CheckoutLock(repo):
            return _finish_judged(repo, config, task, folder)
    except RunError:
        return []


def _finish_judged(repo: Repo, config: RunConfig, task: Task, folder: Path) -> list[str]:
    state = read_json(folder / WAVE_STATE)
    if state is not None and state.get("phase") in ("decided", "recorded") and isinstance(state.get("entries"), list):
        return finish_wave(repo, config, task, state)
    (folder / WAVE_STATE).unlink(missing_ok=True)
    return []


def recover_waves(repo: Repo, config: RunConfig, task: Task) -> list[str]:
    """Under the checkout lock: finish a wave a dead `wait` had judged; complete a submit that died half-way;
    record scorings a dead scorer left running as interrupted (the next `wait` records their rows)."""
    folder = run_dir(repo, config.tag)
    notes = _finish_judged(repo, config, task, folder) if (folder / WAVE_STATE).exists() else []
    for c in queued(folder):
        key = job_key(c["iter"])
        if scorer.job_state(folder, key) == "missing":  # the submit died before queueing its scoring
            scorer.enqueue(folder, Job(key, source_at(repo, c["commit"], task.train_rel)))
        if repo.refs(iter_ref(config.tag, c["iter"])).get(iter_ref(config.tag, c["iter"])) is None:
            repo.set_ref(iter_ref(config.tag, c["iter"]), c["commit"])
        if repo.tree_blob(task.train_rel) == repo.blob(c["commit"], task.train_rel) and repo.head() == c["best"]:
            repo.git.checkout(c["best"], "--", task.train_rel)  # it died before putting train.py back
    dead = scorer.interrupt_orphans(folder) if queued(folder) else []
    if dead:
        notes.append(f"the scorer died while it scored {', '.join(dead)}: recorded as interrupted by the next wait")
    return notes
