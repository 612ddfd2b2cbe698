"""What the ratchet writes for people and agents: the iteration's row and one line, commit messages with the
verdict, the tail of run.log on a crash, and train.py's declared HYPOTHESIS."""

from __future__ import annotations

import ast
import math

from autoresearch import stopping
from autoresearch.contract import Block
from autoresearch.decide import Decision
from autoresearch.runs import RunConfig
from autoresearch.summary import parse_float
from autoresearch.taskdir import Task

LOG_TAIL_LINES = 12  # what a crash shows of run.log: the traceback's end, not the whole log
LOG_TAIL_LINE_CHARS = 240
SUBJECT_CHARS = 100  # commit subjects longer than this are cut; the full hypothesis goes in the body
VERDICTS = {"keep": "KEPT", "discard": "DISCARDED", "crash": "CRASH", "interrupted": "INTERRUPTED"}


def fmt(value: float, digits: int = 4) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"


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


def make_row(
    config: RunConfig,
    block: Block,
    sha: str,
    n: int,
    status: str,
    description: str,
    seconds: float,
    lines: int,
    *,
    reason="",
    delta=math.nan,
    se=math.nan,
    p=math.nan,
) -> dict:
    """Iteration n's row of results.tsv (its columns: ledger.columns)."""
    memory_mb = block.peak_memory_mb
    scored = status != "crash"
    return {
        "commit": sha[:7],
        config.metric: block.value_text if scored else "",
        "memory_gb": round(memory_mb / 1024, 3) if math.isfinite(memory_mb) else math.nan,
        "status": status,
        "description": description,
        "iter": n,
        "tag": config.tag,
        "delta": delta,
        "delta_se": se,
        "p_value": p,
        "seconds": round(seconds, 1),
        "lines": lines,
        "timestamp": stopping.now().isoformat(timespec="seconds"),
        "reason": reason,
        "fold_scores": block.fold_scores_text if scored else "",
    }


def verdict_text(metric: str, before: float, after: float, decision: Decision) -> str:
    """The verdict a kept or discarded commit's message carries."""
    return (
        f"{metric} {fmt(before)} → {fmt(after)} ({decision.delta:+.4f} ± {fmt(decision.se)}): "
        f"{'KEPT' if decision.keep else 'DISCARDED'}, {decision.reason}"
    )


def line(config: RunConfig, row: dict, hypothesis: str) -> str:
    """The one line `try` prints: `iter N | metric=... (Δ ...) | VERDICT | seconds — hypothesis`."""
    shown = f"{config.metric}={fmt(parse_float(row.get(config.metric) or None))}"
    if row["status"] in ("keep", "discard") and math.isfinite(row["delta"]):
        shown += f" (Δ {row['delta']:+.4f} ± {fmt(row['delta_se'])})"
    extra = f" ({row['reason']})" if row["status"] in ("crash", "interrupted") else ""
    return f"iter {row['iter']} | {shown} | {VERDICTS[row['status']]}{extra} | {row['seconds']:.1f} s — {hypothesis}"


def subject(hypothesis: str) -> str:
    return hypothesis if len(hypothesis) <= SUBJECT_CHARS else hypothesis[: SUBJECT_CHARS - 1] + "…"


def commit_message(hypothesis: str) -> str:
    """A short subject, and the whole hypothesis in the body when the subject had to cut it."""
    return subject(hypothesis) + (f"\n\n{hypothesis}" if len(hypothesis) > SUBJECT_CHARS else "")


def trailers(config: RunConfig, n: int) -> str:
    return f"Autoresearch-Run: {config.tag}\nAutoresearch-Iter: {n}"


def list_paths(paths: list[str], most: int = 4) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")
