"""The rows and the config the ratchet trusts: those in the run's refs, `refs/autoresearch/<tag>/NNNN`.

Each iteration's ref is an annotated tag on its commit whose message holds the row (the baseline's also the
run's config). results.tsv, its mirror and run.json are views of them, rebuilt from them with a note.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoresearch import ledger
from autoresearch.gitops import REF_PREFIX, Repo
from autoresearch.runs import (
    RunConfig,
    RunError,
    config_from,
    load_config,
    read_json,
    run_dir,
    save_config,
    tag_of_branch,
)
from autoresearch.taskdir import RESULTS_FILE, Task, find_task

ITER_REF = re.compile(r"^\d{4,}$")  # refs/autoresearch/<tag>/0007: four digits, more past 9999


def iter_ref(tag: str, n: int) -> str:
    return f"{REF_PREFIX}{tag}/{n:04d}"


def ledger_for(repo: Repo, config: RunConfig, task: Task) -> ledger.Ledger:
    return ledger.Ledger(task.results, run_dir(repo, config.tag) / RESULTS_FILE, config.metric)


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


@dataclass
class RunRefs:
    rows: list[dict]  # the rows the ratchet wrote, in iteration order
    config: RunConfig | None  # the run's config, from the baseline's ref
    targets: dict[int, str]  # iteration -> commit, for every ref of the run (with a row or not, queued or not)
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
        if record.kind == "commit" and n > 0:  # a wave's candidate, queued and not judged yet: no row to read
            continue
        row, _ = ledger.parse_row_message(record.message or "")
        wanted = set(ledger.columns(metric)) if metric else None
        if (
            row is None
            or row.get("iter") != str(n)
            or row.get("tag") != tag
            or row.get("commit") != record.target[:7]
            or row.get("status") not in ledger.STATUSES
            or (wanted is not None and set(row) != wanted)
        ):
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
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here, unlike in dicts


def verified_rows(
    repo: Repo, config: RunConfig, task: Task, refs: RunRefs | None = None, new: int | list[int] | None = None
) -> tuple[list, list]:
    """(the run's rows as its refs hold them, notes); results.tsv and the mirror are made to agree with them.

    `new`: the iteration(s) whose ref was just written, whose rows the files are expected to lack.
    """
    book = ledger_for(repo, config, task)
    with book.lock():  # refs read under the lock: a `status` never syncs to rows older than a `try` wrote
        refs = refs or read_refs(repo, config.tag, config.metric)
        if not refs.legacy:
            fresh = {str(n) for n in ([] if new is None else [new] if isinstance(new, int) else new)}
            return refs.rows, refs.notes + book.sync(config.tag, refs.rows, fresh)
    lost = book.repair()  # a run from before rows were in refs: nothing to check against until it is converted
    return book.rows(config.tag), [f"{repo.rel(task.results)} had lost rows; rebuilt from the run's copy"] * lost


def record_row(repo: Repo, config: RunConfig, n: int, sha: str, row: dict[str, str], with_config=False) -> None:
    """Write iteration n's ref: a tag object on its commit that carries its row (the baseline's: the config too)."""
    message = ledger.row_message(config.tag, row, asdict(config) if with_config else None)
    repo.set_tag_ref(iter_ref(config.tag, n), sha, message)


def convert_legacy(repo: Repo, config: RunConfig, task: Task) -> str:
    """Give a run from before rows were kept in refs its tag refs, from its mirror (trusted this once)."""
    refs = read_refs(repo, config.tag, config.metric)
    book = ledger_for(repo, config, task)
    book.repair()
    converted = 0
    for row in book.rows(config.tag):
        n = int(row["iter"])
        if refs.targets.get(n, "")[:7] == row.get("commit") and row.get("commit"):
            cells = ledger.cells(row, config.metric)
            record_row(repo, config, n, refs.targets[n], cells, with_config=n == 0)
            converted += 1
    return f"converted {converted} rows of run {config.tag} into its refs (rows are now checked against them)"


def next_iter(rows: list[dict], refs: RunRefs | None = None) -> int:
    """One past the highest iteration with a row, or with a ref (a ref is never overwritten by a new one)."""
    return max(ledger.next_iter(rows), max(refs.targets, default=-1) + 1 if refs else 0)


def best_row(rows: list[dict]) -> dict:
    row = ledger.best(rows)
    if row is None:
        raise RunError("the run has no kept row, not even a baseline; start a new run")
    return row
