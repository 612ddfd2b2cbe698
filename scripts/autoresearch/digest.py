"""The status digest: what an agent (or a person) needs to pick the next idea. `status`, `status --json`,
the SessionStart hook and the report all read it from here. Held-out figures are never part of it.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime

from autoresearch import keeprules, ledger, stopping
from autoresearch.gitops import REF_PREFIX
from autoresearch.runs import RunConfig, run_dir
from autoresearch.summary import parse_float

LAST_ROWS = 5  # the recent history an agent needs to avoid repeating itself
NEAR_MISSES = 5
NEAR_MISS_SE = 1.0  # a discard whose mean is within this many standard errors of a gain is worth combining


def _num(row: dict, key: str) -> float:
    return parse_float(row.get(key) or None)


def _gain(row: dict, config: RunConfig) -> float:
    delta = _num(row, "delta")
    return delta if config.higher_is_better else -delta


def digest(config: RunConfig, rows: list[dict], repo=None) -> dict:
    """A JSON-ready summary of one run's rows."""
    metric = config.metric
    by_status = {s: [r for r in rows if r.get("status") == s] for s in ("keep", "discard", "crash", "interrupted")}
    tried = [r for r in rows if r.get("iter") != "0"]
    kept = by_status["keep"]
    best = ledger.best(rows)
    baseline = next((r for r in rows if r.get("iter") == "0"), None)

    def brief(row: dict) -> dict:
        return {
            "iter": int(row["iter"]),
            "commit": row.get("commit"),
            "status": row.get("status"),
            metric: _num(row, metric),
            "delta": _num(row, "delta"),
            "delta_se": _num(row, "delta_se"),
            "p_value": _num(row, "p_value"),
            "description": row.get("description", ""),
            "seconds": _num(row, "seconds"),
            "ref": f"{REF_PREFIX}{config.tag}/{int(row['iter']):04d}",
        }

    near = [
        r
        for r in by_status["discard"]
        if math.isfinite(_gain(r, config)) and _gain(r, config) > -NEAR_MISS_SE * _num(r, "delta_se")
    ]
    near.sort(key=lambda r: _num(r, "p_value"))
    crashes: dict[str, list[int]] = {}
    for r in by_status["crash"] + by_status["interrupted"]:
        crashes.setdefault(r.get("reason", "") or "unknown", []).append(int(r["iter"]))
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in rows if r.get("timestamp")]
    hours = (max(stamps) - min(stamps)).total_seconds() / 3600 if len(stamps) > 1 else 0.0
    gain_total = parse_float(best.get(metric)) - parse_float(baseline.get(metric)) if best and baseline else math.nan
    folder = run_dir(repo, config.tag) if repo is not None else None
    seconds = sorted(s for s in (_num(r, "seconds") for r in tried) if math.isfinite(s))
    return {
        "tag": config.tag,
        "task": config.task,
        "device": config.extra.get("device"),
        "sandbox": config.extra.get("sandbox", "candidate not sandboxed: run started before sandboxing existed"),
        "metric": metric,
        "direction": "higher" if config.higher_is_better else "lower",
        "budget_seconds": config.budget_seconds,
        "keep_rule": config.keep_rule or keeprules.DEFAULT,
        # what the harness declared at start (None: a run recorded before harnesses declared anything)
        "capabilities": config.capabilities.to_json() if config.capabilities else None,
        "iterations": len(tried),
        "kept": len(kept) - (1 if baseline in kept else 0),
        "discarded": len(by_status["discard"]),
        "crashed": len(by_status["crash"]),
        "interrupted": len(by_status["interrupted"]),
        "baseline": brief(baseline) if baseline else None,
        "best": brief(best) if best else None,
        "gain_over_baseline": gain_total,
        "last": [brief(r) for r in rows[-LAST_ROWS:]],
        "kept_chain": [brief(r) for r in kept],  # the baseline first, then every kept step in order
        "near_misses": [brief(r) for r in near[:NEAR_MISSES]],
        "crash_causes": [
            {"reason": k, "count": len(v), "iters": v} for k, v in sorted(crashes.items(), key=lambda kv: -len(kv[1]))
        ],
        "iterations_per_hour": round(len(tried) / hours, 1) if hours > 0 else None,
        "hours": round(hours, 2),
        "seconds_per_iteration": {
            "median": statistics.median(seconds) if seconds else None,
            "max": seconds[-1] if seconds else None,
            "total": round(sum(seconds), 1),
        },
        "next_iter": ledger.next_iter(rows),
        "deadline": config.deadline,
        "max_iters": config.max_iters,
        "stop_reason": stopping.stop_reason(config, rows, folder) if folder is not None else None,
    }


def render(d: dict) -> str:
    """The digest as a few lines of text, for an agent's context."""
    m = d["metric"]

    def val(x: float) -> str:
        return "nan" if x is None or not math.isfinite(x) else f"{x:.4f}"

    def delta(r: dict) -> str:
        return "" if not math.isfinite(r["delta"]) else f" (Δ {r['delta']:+.4f} ± {val(r['delta_se'])})"

    lines = [
        f"run {d['tag']} | task {d['task']} | {m} ({d['direction']} is better) | budget {d['budget_seconds']:g} s"
        + (f" | keep rule {d['keep_rule']}" if d.get("keep_rule") else ""),
        f"iterations: {d['iterations']} | kept {d['kept']} | discarded {d['discarded']} | crashed {d['crashed']}"
        + (f" | interrupted {d['interrupted']}" if d["interrupted"] else "")
        + (f" | {d['iterations_per_hour']} per hour" if d["iterations_per_hour"] else ""),
    ]
    if not d["sandbox"].startswith("bubblewrap"):
        lines.append(d["sandbox"])  # a person reading the digest must know the score's guarantees are weaker
    if d["best"]:
        b, base = d["best"], d["baseline"]
        versus = f"{val(d['gain_over_baseline'])} over baseline {val(base[m])}" if base else "no baseline row"
        lines.append(f"best: iter {b['iter']} {b['commit']} {m}={val(b[m])} ({versus}) — {b['description']}")
    lines.append("last:")
    lines += [f"  iter {r['iter']} {r['status']:<11} {m}={val(r[m])}{delta(r)} — {r['description']}" for r in d["last"]]
    if d["near_misses"]:
        lines.append("near misses (discarded within noise; worth combining — git show REF:train.py):")
        lines += [
            f"  iter {r['iter']} {r['ref']}{delta(r)} p={val(r['p_value'])} — {r['description']}"
            for r in d["near_misses"]
        ]
    if d["crash_causes"]:
        lines.append("crash causes:")
        lines += [
            f"  {c['count']}x {c['reason']} (iters {', '.join(map(str, c['iters'][-5:]))})" for c in d["crash_causes"]
        ]
    limits = [
        f"deadline {d['deadline']}" if d["deadline"] else "",
        f"cap {d['max_iters']} iterations" if d["max_iters"] else "",
    ]
    limits = [x for x in limits if x]
    lines.append(f"next: iter {d['next_iter']}" + (f" | {', '.join(limits)}" if limits else ""))
    if d["stop_reason"]:
        lines.append(f"STOP: {d['stop_reason']}")
    return "\n".join(lines)
