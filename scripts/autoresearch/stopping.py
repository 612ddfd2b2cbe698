"""When a run must stop. `try` refuses to start an iteration past any of these, the Stop hook lets the agent
stop on any of them, and `status` reports them: one definition for all three.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from autoresearch.summary import parse_float

STOP_FILE = "STOP"  # in the run's folder; `ratchet.py stop` writes it, with the person's reason
# A kept score that climbs to these from a baseline below them means a leak (target in a feature, labels read
# from disk), not a model: the best published Cleveland AUCs are about 0.90-0.93. A task whose baseline is
# already above its ceiling (breast cancer: 0.995 AUC) is easy, not leaky, and is not stopped.
LEAKAGE_CEILINGS = {"val_auc": 0.99, "val_balanced_accuracy": 0.995, "val_r2": 0.995}
HARNESS_FAILURES_IN_A_ROW = 3  # crashes whose cause is outside train.py (data, environment) before giving up
HARNESS_FAILURE_PREFIX = "harness:"  # how the ratchet marks such a crash in the ledger's reason column
STOP_REASON_BYTES = 1024  # of the STOP file shown: the same cap as a hypothesis (ledger.HYPOTHESIS_MAX_BYTES)


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.astimezone()


def stop_reason(config, rows: list[dict], run_folder: Path) -> str | None:
    """The reason this run must stop now, or None to go on."""
    stop_file = run_folder / STOP_FILE
    if stop_file.exists():
        try:  # the person's words, or whatever a stray write left there: one short line either way
            why = " ".join(stop_file.read_bytes()[:STOP_REASON_BYTES].decode("utf-8", errors="replace").split())
        except OSError:
            why = ""
        return "stop requested by the person" + (f": {why}" if why else "")
    if config.deadline and now() >= parse_time(config.deadline):
        return f"deadline {config.deadline} reached"
    iterations = sum(1 for r in rows if r.get("iter") not in ("0", 0))
    if config.max_iters is not None and iterations >= config.max_iters:
        return f"iteration cap reached ({iterations} of {config.max_iters})"
    ceiling = LEAKAGE_CEILINGS.get(config.metric)
    baseline = next((parse_float(r.get(config.metric)) for r in rows if r.get("iter") == "0"), math.nan)
    if ceiling is not None and not baseline >= ceiling:  # a task whose baseline is already there is just easy
        for row in rows:
            value = parse_float(row.get(config.metric))
            if row.get("status") == "keep" and math.isfinite(value) and value >= ceiling:
                return (
                    f"{config.metric} {value:.4f} at iter {row.get('iter')} is at or above {ceiling}: "
                    "that smells of leakage, not progress; a person should look before going on"
                )
    recent = rows[-HARNESS_FAILURES_IN_A_ROW:]
    if len(recent) == HARNESS_FAILURES_IN_A_ROW and all(
        r.get("reason", "").startswith(HARNESS_FAILURE_PREFIX) for r in recent
    ):
        return f"the harness failed {HARNESS_FAILURES_IN_A_ROW} times in a row for reasons outside train.py"
    return None
