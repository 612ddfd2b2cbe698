"""Crash safety: each step of an iteration is recorded in state.json before it is taken, and an iteration whose
ratchet died (even by SIGKILL) is finished or rolled back here by the next `try`, `status` or `start --resume`.

`finish` is the iteration's last step (write the row's ref, sync the views, move the branch): idempotent, so
recovery can take it again.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from autoresearch import ledger, proc, stopping
from autoresearch.gitops import BRANCH_PREFIX, Repo
from autoresearch.harness import (
    CHILD_PGID_FILE,
    CONFIRM_DIR,
    HARNESS_PGID_FILE,
    PENDING_HELDOUT,
    kill_recorded_group,
)
from autoresearch.refs import next_iter, read_refs, record_row, verified_rows
from autoresearch.runs import CheckoutLock, RunConfig, RunError, read_json, run_dir, write_json
from autoresearch.taskdir import Task

STATE_FILE = "state.json"  # the iteration in flight, in the run's folder: what recovery finishes or rolls back
START_FILE = "start.json"  # a start in flight: its options, then its scored baseline, until the run exists
STATE_PHASES = ("running", "decided", "recorded")
CONFIRM_RECORD = "confirm"  # state.json's key for a decided iteration's confirm step (loop.Confirmation.record)
CONFIRM_FILE = "confirm.jsonl"  # in the run's folder: one line per confirmed iteration (seed, both fresh scores)
SHA = re.compile(r"^[0-9a-f]{40}$")


def finish(repo: Repo, config: RunConfig, task: Task, state: dict) -> list[str]:
    """Record the decided row, then apply the decision. Idempotent: recovery calls it again after a kill.

    The row's ref is written first: it is the record; results.tsv and the mirror are then synced from the refs.
    """
    folder = run_dir(repo, config.tag)
    if state["phase"] == "decided":
        record_row(repo, config, state["iter"], state["final"], ledger.cells(state["row"], config.metric))
        record_private(folder, state["iter"], state["final"])
        if isinstance(state.get(CONFIRM_RECORD), dict):
            record_confirm(folder, state["iter"], state["final"], state[CONFIRM_RECORD])
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
    shutil.rmtree(folder / CONFIRM_DIR, ignore_errors=True)  # the confirm step's copies and logs: done with
    state["kept_later_edit"] = later_edit
    return notes


def record_private(folder: Path, n: int, sha: str) -> None:
    """Move the harness's held-out figures, if any, into the run's private record (never results.tsv)."""
    pending = folder / PENDING_HELDOUT
    record = read_json(pending)
    if record is None:
        return
    with open(folder / "heldout.jsonl", "a") as fh:
        fh.write(json.dumps({"iter": n, "commit": sha, **record}) + "\n")
    pending.unlink(missing_ok=True)


def record_confirm(folder: Path, n: int, sha: str, record: dict) -> None:
    """Append iteration n's confirm step to the run's confirm record; once, even when recovery calls it again."""
    append_once(folder / CONFIRM_FILE, n, sha, record)


def append_once(path: Path, n: int, sha: str, record: dict) -> None:
    """Append `record` of iteration n (commit `sha`) to a JSON-lines record, unless a line of it is there."""
    try:
        done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        done = []
    if any(isinstance(r, dict) and r.get("iter") == n and r.get("commit") == sha for r in done):
        return
    with open(path, "a") as fh:
        fh.write(json.dumps({"iter": n, "commit": sha, **record}) + "\n")


def read_confirms(folder: Path) -> list[dict]:
    """The run's confirm record: one dict per confirmed iteration (iter, commit, cv_seed, candidate, best, ...)."""
    try:
        lines = (folder / CONFIRM_FILE).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def valid_state(state: dict | None) -> bool:
    """Whether state.json holds what the ratchet wrote there (junk is recovered from git instead)."""
    if not state or state.get("phase") not in STATE_PHASES:
        return False
    ok = (
        isinstance(state.get("iter"), int)
        and state["iter"] >= 1
        and SHA.match(str(state.get("best", "")))
        and isinstance(state.get("hypothesis"), str)
        and isinstance(state.get("started"), (int, float))
        and (state.get("candidate") is None or SHA.match(str(state["candidate"])))
        and isinstance(state.get("harness_pgid", 0), int)
    )
    if ok and state["phase"] != "running":
        ok = (
            isinstance(state.get("row"), dict)
            and SHA.match(str(state.get("final", "")))
            and state.get("status") in ledger.STATUSES
        )
    return bool(ok)


def recover(repo: Repo, config: RunConfig, task: Task) -> str | None:
    """Finish or roll back an iteration whose ratchet died; say what was done (None if nothing was needed)."""
    folder = run_dir(repo, config.tag)
    kill_recorded_group(folder / HARNESS_PGID_FILE)
    if (folder / START_FILE).exists():  # its ratchet died after the branch was made: the rest is cheap
        record_private(folder, 0, config.base)
        (folder / START_FILE).unlink(missing_ok=True)
    path = folder / STATE_FILE
    if not path.exists():
        return None
    state = read_json(path)
    if valid_state(state):
        proc.kill_stale_group(state.get("harness_pgid", 0))
    kill_recorded_group(folder / CHILD_PGID_FILE)
    repo.remove_stale_index_lock()
    if not valid_state(state):
        return _recover_without_state(repo, config, task)
    if state["phase"] == "running":
        if "candidate" not in state:
            head = repo.head()
            if head == state["best"]:  # died before committing: the edit is still in the tree, untouched
                path.unlink()
                return None
            state["candidate"] = head
        _interrupted(repo, config, folder, state)
    finish(repo, config, task, state)
    kept = f"; the later edit of {task.train_rel} is left in place" if state["kept_later_edit"] else ""
    return f"recovered iter {state['iter']} ({state['status']}) left by a ratchet that died{kept}"


def _interrupted(repo: Repo, config: RunConfig, folder: Path, state: dict) -> None:
    """Decide a running iteration as interrupted: its commit is recorded, unscored."""
    row = {
        "commit": repo.short(state["candidate"]),
        "status": "interrupted",
        "iter": state["iter"],
        "tag": config.tag,
        "description": state["hypothesis"],
        "timestamp": stopping.now().isoformat(timespec="seconds"),
        "reason": _interrupted_reason(state),
        "seconds": round(time.time() - state["started"], 1),
    }
    state.update(phase="decided", row=row, final=state["candidate"], status="interrupted")
    state.pop(CONFIRM_RECORD, None)
    (folder / PENDING_HELDOUT).unlink(missing_ok=True)
    write_json(folder / STATE_FILE, state)


def _interrupted_reason(state: dict) -> str:
    seed = state.get("confirm_seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return f"the ratchet was killed while it confirmed this iteration on fresh folds (seed {seed}): not kept"
    return "the ratchet was killed during this iteration; it was not scored"


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
        notes = finish(repo, config, task, state)
        return f"{said}; iter {n} was recorded ({status}): the branch is back on the best" + "".join(
            f"; {note}" for note in notes
        )
    state = {
        "phase": "running",
        "iter": next_iter(refs.rows, refs),
        "best": best_sha,
        "candidate": head,
        "hypothesis": ledger.cap_text(ledger.clean_text(repo.message(head).split("\n", 1)[0])),
        "started": repo.repo.commit(head).committed_date,
    }
    _interrupted(repo, config, folder, state)
    finish(repo, config, task, state)
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
