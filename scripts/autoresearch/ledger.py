"""results.tsv: one row per iteration, append-only, written durably. The one reader and writer of it.

karpathy's columns come first (commit, metric, memory_gb, status, description) so his analysis reads the
file; ours follow. The rows the ratchet trusts live in git: each iteration's ref is a tag object whose
message holds its row (`row_message`), written by the ratchet alone. results.tsv and its copy in the run's
folder under .git are views of those rows: `sync` rebuilds a deleted, truncated or forged one from them.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

EXTRA_COLUMNS = [
    "iter",
    "tag",
    "delta",
    "delta_se",
    "p_value",
    "seconds",
    "lines",
    "timestamp",
    "reason",
    "fold_scores",
]
STATUSES = ("keep", "discard", "crash", "interrupted")
# A hypothesis (and a crash reason) in a row, the ratchet's line and a ref's row: 1 KB says any idea in a
# paragraph, and keeps a row far below the csv module's 128 KB field limit. The commit body keeps it whole.
HYPOTHESIS_MAX_BYTES = 1024
TEXT_COLUMNS = ("description", "reason")  # the free-text cells, capped at HYPOTHESIS_MAX_BYTES
FOLDED_CONTROLS = "\t\n\r"  # whitespace a person types in a shell argument: folded to spaces, not refused


class LedgerError(Exception):
    pass


def columns(metric: str) -> list[str]:
    return ["commit", metric, "memory_gb", "status", "description", *EXTRA_COLUMNS]


def clean_text(text: str) -> str:
    """One line, no tabs: what a TSV cell and a commit subject can hold."""
    return " ".join(str(text).split())


def cap_text(text: str, max_bytes: int = HYPOTHESIS_MAX_BYTES) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (never inside a character), marked with an ellipsis."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", errors="ignore") + "…"


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a hypothesis (a control character, bytes that are not UTF-8), or None."""
    for i, char in enumerate(text):
        if "\udc80" <= char <= "\udcff":  # how Python carries argv bytes that were not UTF-8
            return f"bytes that are not UTF-8 at character {i + 1}"
        if unicodedata.category(char) == "Cc" and char not in FOLDED_CONTROLS:
            name = "NUL" if char == "\0" else f"U+{ord(char):04X}"
            return f"a control character ({name}) at character {i + 1}"
    return None


def cells(row: dict, metric: str) -> dict[str, str]:
    """The row as the strings a results.tsv line holds: what the refs store and the files are checked against."""
    out = {}
    for column in columns(metric):
        text = clean_text(_format(row.get(column, "")))
        out[column] = cap_text(text) if column in TEXT_COLUMNS else text
    return out


# -- rows in refs ---------------------------------------------------------------------------------------
def row_message(tag: str, row: dict[str, str], config: dict | None = None) -> str:
    """The message of an iteration's tag object: a line for people, then the row (and the run's config)."""
    payload = {"row": row, **({"config": config} if config is not None else {})}
    return f"autoresearch {tag} iter {row.get('iter')}: {row.get('status')}\n\n{json.dumps(payload)}\n"


def parse_row_message(message: str) -> tuple[dict | None, dict | None]:
    """(row, config) from a tag message written by `row_message`; (None, None) for anything else."""
    _, _, rest = message.partition("\n\n")
    try:
        payload = json.loads(rest)
    except ValueError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    row, config = payload.get("row"), payload.get("config")
    if not isinstance(row, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in row.items()):
        return None, None
    return row, config if isinstance(config, dict) else None


# -- the files --------------------------------------------------------------------------------------------
@dataclass
class Ledger:
    path: Path  # the task's results.tsv in the work tree
    mirror: Path  # the run's copy under .git/autoresearch/<tag>/
    metric: str

    def _ensure_header(self, path: Path) -> None:
        header = columns(self.metric)
        if path.exists() and path.stat().st_size > 0:
            found = _header(path)
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
        values = list(cells(row, self.metric).values())
        with self.lock():
            self._ensure_header(self.mirror)
            _append_line(self.mirror, values)
        self.repair()  # copies the new row, and any row a person's edit lost, into results.tsv

    def repair(self) -> bool:
        """Rebuild results.tsv from the mirror when rows of this run are missing from it. True if it did.

        For runs whose refs hold no rows (started before they did); `sync` is the check for the others.
        """
        if not self.mirror.exists():
            return False
        with self.lock():
            mine = read_rows(self.mirror)
            present = {(r["tag"], r["iter"]) for r in read_rows(self.path)} if self.path.exists() else set()
            missing = [r for r in mine if (r["tag"], r["iter"]) not in present]
            if not missing:
                return False
            self._ensure_header(self.path)
            for row in missing:
                _append_line(self.path, [row.get(c) or "" for c in columns(self.metric)])
        return True

    def sync(self, tag: str, truth: list[dict[str, str]], new: set[str] | str | None = None) -> list[str]:
        """Make the mirror and results.tsv hold run `tag`'s rows exactly as the refs do; say what was fixed.

        Rows of other runs are kept as they are. A row of this run that the refs do not hold (forged,
        edited, cut short, duplicated) is removed; a row the refs hold and the file lost is put back.
        `new` is the iteration (or iterations) just recorded in the refs: their rows are added without a word.
        The caller holds `lock()` and read `truth` under it, so that two syncs never undo each other.
        """
        notes = []
        fixed = _sync_file(self.mirror, tag, truth, columns(self.metric), new)
        if fixed:
            notes.append(f"the run's copy of its rows {fixed}; rebuilt from the refs")
        fixed = _sync_file(self.path, tag, truth, columns(self.metric), new)
        if fixed:
            notes.append(f"{self.path.name} {fixed}; rebuilt from the refs")
        return notes

    def rows(self, tag: str | None = None) -> list[dict]:
        """This run's rows as the mirror holds them (unchecked: `refs.verified_rows` checks them)."""
        return run_rows(self.mirror if self.mirror.exists() else self.path, tag)

    def lock(self) -> _FileLock:
        return _FileLock(self.mirror.with_name("ledger.lock"))


class _FileLock:
    """Writers of the two files (a `try`, a `status` repairing) take turns; held for milliseconds."""

    def __init__(self, path: Path):
        self.path, self.fh = path, None

    def __enter__(self) -> _FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def _sync_file(path: Path, tag: str, truth: list[dict[str, str]], header: list[str], new) -> str:
    """Fix run `tag`'s rows in one file; what was wrong, in words ("" when nothing was)."""
    new = {new} if isinstance(new, str) else set(new or ())
    if not path.exists() or path.stat().st_size == 0:
        if not truth:
            return ""
        _write_lines(path, [header] + [[r[c] for c in header] for r in truth])
        return "" if {r["iter"] for r in truth} <= new else "was missing"
    found = _header(path)
    if found != header:
        raise LedgerError(f"{path} has other columns ({', '.join(found[:5])}…); move it away or pick another task")
    wanted = {r["iter"]: r for r in truth}
    kept_lines, seen, dropped = [], set(), []
    raw = path.read_bytes().split(b"\n")
    for line in raw[1:]:
        if not line.strip():
            continue
        row = _as_row(header, line.decode("utf-8", errors="replace"))
        if row.get("tag") != tag:
            kept_lines.append(line)  # the bytes as they were, whatever their encoding
            continue
        it = row.get("iter")
        if it in wanted and it not in seen and all(row.get(c) == wanted[it][c] for c in header):
            seen.add(it)
            kept_lines.append(line)
        else:
            dropped.append(str(it))
    missing = [r for r in truth if r["iter"] not in seen]
    if not dropped and not missing:
        return ""
    if dropped:  # rewritten whole, atomically: every other line as it was
        added = ["\t".join(r[c] for c in header).encode() for r in missing]
        _replace(path, b"\n".join([raw[0], *kept_lines, *added]) + b"\n")
    else:
        for row in missing:
            _append_line(path, [row[c] for c in header])
    said = []
    missing = [r for r in missing if r["iter"] not in new]
    if dropped:
        said.append(f"had {len(dropped)} row(s) the ratchet did not write (iter {', '.join(dropped[:5])})")
    if missing:
        said.append(f"had lost {len(missing)} row(s) (iter {', '.join(r['iter'] for r in missing[:5])})")
    return " and ".join(said)


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
    """Every row of a TSV file as a dict, as csv.DictReader gives them, but with no limit on a field's size."""
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    header = lines[0].rstrip("\r").split("\t") if lines and lines[0] else []
    return [_as_row(header, line) for line in lines[1:] if line.strip()] if header else []


def _as_row(header: list[str], line: str) -> dict:
    values = line.rstrip("\r").split("\t")
    row = dict(zip(header, values, strict=False))  # lengths differ in a damaged row
    for column in header[len(values) :]:
        row[column] = None  # a row cut short: DictReader's restval
    if len(values) > len(header):
        row[None] = values[len(header) :]
    return row


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), [])


def _format(value) -> str:
    if isinstance(value, float):  # NaN is an empty cell; 6 significant digits is finer than any noise here
        return "" if value != value else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    return "" if value is None else str(value)


def _write_lines(path: Path, rows: list[list[str]]) -> None:
    _replace(path, "".join("\t".join(values) + "\n" for values in rows).encode())


def _replace(path: Path, data: bytes) -> None:
    """Write `path` whole, atomically and durably: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
