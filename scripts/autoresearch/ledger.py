"""results.tsv: one row per iteration, append-only, written durably. The one reader and writer of it.

karpathy's columns come first (commit, metric, memory_gb, status, description) so his analysis reads the
file; ours follow. Each row is also appended to a copy in the run's folder under .git, so a results.tsv
that was deleted or truncated by hand is rebuilt instead of lost.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

EXTRA_COLUMNS = [
    "iter", "tag", "delta", "delta_se", "p_value", "seconds", "lines", "timestamp", "reason", "fold_scores",
]  # fmt: skip
STATUSES = ("keep", "discard", "crash", "interrupted")


class LedgerError(Exception):
    pass


def columns(metric: str) -> list[str]:
    return ["commit", metric, "memory_gb", "status", "description", *EXTRA_COLUMNS]


def clean_text(text: str) -> str:
    """One line, no tabs: what a TSV cell and a commit subject can hold."""
    return " ".join(str(text).split())


@dataclass
class Ledger:
    path: Path  # the task's results.tsv in the work tree
    mirror: Path  # the run's copy under .git/autoresearch/<tag>/
    metric: str

    def _ensure_header(self, path: Path) -> None:
        header = columns(self.metric)
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="") as fh:
                found = next(csv.reader(fh, delimiter="\t"), [])
            if found != header:
                raise LedgerError(
                    f"{path} has other columns ({', '.join(found[:5])}…); move it away or pick another task"
                )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _append_line(path, header)

    def check(self) -> None:
        """Refuse a results.tsv of another layout before anything is run."""
        self._ensure_header(self.path)

    def append(self, row: dict) -> None:
        """Append `row` to the mirror and to results.tsv, each flushed and fsynced before returning."""
        values = [clean_text(_format(row.get(c, ""))) for c in columns(self.metric)]
        self._ensure_header(self.mirror)
        _append_line(self.mirror, values)
        self.repair()  # copies the new row, and any row a person's edit lost, into results.tsv

    def repair(self) -> bool:
        """Rebuild results.tsv from the mirror when rows of this run are missing from it. True if it did."""
        if not self.mirror.exists():
            return False
        mine = read_rows(self.mirror)
        present = {(r["tag"], r["iter"]) for r in read_rows(self.path)} if self.path.exists() else set()
        missing = [r for r in mine if (r["tag"], r["iter"]) not in present]
        if not missing:
            return False
        self._ensure_header(self.path)
        for row in missing:
            _append_line(self.path, [row.get(c, "") for c in columns(self.metric)])
        return True

    def rows(self, tag: str | None = None) -> list[dict]:
        """This run's rows (from the mirror, which a person's edits to results.tsv cannot lose)."""
        return run_rows(self.mirror if self.mirror.exists() else self.path, tag)


def run_rows(path: Path, tag: str | None = None) -> list[dict]:
    """The rows of `path` (none when it does not exist yet), only run `tag`'s when given."""
    rows = read_rows(path) if path.exists() else []
    return [r for r in rows if tag is None or r.get("tag") == tag]


def next_iter(rows: list[dict]) -> int:
    """The number the next iteration gets: one past the highest recorded."""
    return max((int(r["iter"]) for r in rows if str(r.get("iter", "")).isdigit()), default=-1) + 1


def best(rows: list[dict]) -> dict | None:
    """The row of the current best: the last one kept (the baseline counts as kept)."""
    kept = [r for r in rows if r.get("status") == "keep"]
    return kept[-1] if kept else None


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def _format(value) -> str:
    if isinstance(value, float):  # NaN is an empty cell; 6 significant digits is finer than any noise here
        return "" if value != value else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    return "" if value is None else str(value)


def _append_line(path: Path, values: list[str]) -> None:
    line = "\t".join(values) + "\n"
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # a line cut short by a crash must not swallow the next row
                line = "\n" + line
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
