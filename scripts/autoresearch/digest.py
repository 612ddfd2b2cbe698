"""The status digest: what an agent (or a person) needs to pick the next idea. `status`, `status --json`,
the SessionStart hook and the report all read it from here. Held-out figures are never part of it.
"""

from __future__ import annotations

import ast
import json
import math
import re
import statistics
import subprocess
from datetime import datetime
from pathlib import Path

from autoresearch import cost as model_cost
from autoresearch import keeprules, ledger, stopping
from autoresearch.gitops import REF_PREFIX
from autoresearch.runs import RunConfig, run_dir
from autoresearch.summary import parse_float

LAST_ROWS = 5  # the recent history an agent needs to avoid repeating itself
NEAR_MISSES = 5
NEAR_MISS_SE = 1.0  # a discard whose mean is within this many standard errors of a gain is worth combining
# Names whose value only seeds a random generator: a keyword argument, an assignment or a dict key so named
# (random_state=, seed=, SEED = , "random_seed": , torch.manual_seed) changes a draw, not an idea.
SEED_NAME = re.compile(r"(?i)^(random_state|.*seed)$")
SEED_CALLS = frozenset({"default_rng", "RandomState", "Random", "PRNGKey"})  # whose positional argument is a seed
BLANK = "<blanked>"
HYPOTHESIS_NAME = "HYPOTHESIS"  # train.py's declared hypothesis: words about the code, not code
WAVES_FILE = "waves.jsonl"  # in the run's folder: one JSON object per judged wave, appended by `wait`
QUEUE_DIR = "queue"  # in the run's folder: NNNN.json per unjudged candidate (waves.QUEUE_DIR)
QUEUED = re.compile(r"^(\d{4,})\.json$")  # a candidate's queue file
JOBS_DIR = "jobs"  # scorer.JOBS_DIR: NNNN.running while a candidate is scored, NNNN.result.json once it is
NEAR_MISS_REASON = "near miss:"  # how a wave's judge starts the reason of a discard worth combining
HYPOTHESIS_CUT = 60  # characters of a hypothesis shown in a wave's side-by-side lines


def budget_unit(config: RunConfig) -> str:
    """ "CPU-s" where the run's harness declared a CPU-time budget on its device, else "s" (wall time)."""
    caps = config.capabilities
    device = config.extra.get("device") or "cpu"
    return "CPU-s" if caps and caps.budget_clocks.get(device) == "cpu" else "s"


def device_text(d: dict) -> str:
    """Where a digest's run scored its candidates: as its harness reported at start, else as far as the devices
    the harness declared say (a tabular harness runs on the CPU alone and reports no device)."""
    if d.get("device"):
        return d["device"]
    devices = (d.get("capabilities") or {}).get("devices") or []
    if len(devices) == 1:
        return f"{devices[0]} (the only device its harness runs on)"
    return f"not reported (its harness runs on {', '.join(devices)})" if devices else "not recorded"


def _num(row: dict, key: str) -> float:
    return parse_float(row.get(key) or None)


def brief_row(row: dict, config: RunConfig) -> dict:
    """The figures of one row that the digest shows."""
    return {
        "iter": int(row["iter"]),
        "commit": row.get("commit"),
        "status": row.get("status"),
        config.metric: _num(row, config.metric),
        "delta": _num(row, "delta"),
        "delta_se": _num(row, "delta_se"),
        "p_value": _num(row, "p_value"),
        "description": row.get("description", ""),
        "seconds": _num(row, "seconds"),
        "ref": f"{REF_PREFIX}{config.tag}/{int(row['iter']):04d}",
    }


def _gain(row: dict, config: RunConfig) -> float:
    delta = _num(row, "delta")
    return delta if config.higher_is_better else -delta


def digest(config: RunConfig, rows: list[dict], repo=None, *, cost: bool = True) -> dict:
    """A JSON-ready summary of one run's rows (and, with `repo` and `cost`, what the model cost, read from the
    Claude Code logs in the run folder)."""
    metric = config.metric
    by_status = {s: [r for r in rows if r.get("status") == s] for s in ("keep", "discard", "crash", "interrupted")}
    tried = [r for r in rows if r.get("iter") != "0"]
    kept = by_status["keep"]
    best = ledger.best(rows)
    baseline = next((r for r in rows if r.get("iter") == "0"), None)

    def brief(row: dict) -> dict:
        return brief_row(row, config)

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
        "budget_unit": budget_unit(config),
        "keep_rule": config.keep_rule or keeprules.DEFAULT,
        "confirm": config.confirm,
        "workers": int(config.extra.get("workers", 1)),
        "executor": config.extra.get("executor", "local"),
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
        "near_misses": near_misses(config, rows, repo)[:NEAR_MISSES],
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
        "model_cost": model_cost.figures(folder, len(tried), len(kept) - (1 if baseline in kept else 0))
        if folder is not None and cost
        else None,
        "waves": wave_digest(config, rows, folder),
    }


# -- waves ----------------------------------------------------------------------------------------------
def read_waves(folder: Path | None) -> dict[int, dict]:
    """waves.jsonl by wave number (the last record of a number wins); a missing file, a junk line, a record
    without a whole wave number: nothing, skipped, skipped."""
    try:
        text = (folder / WAVES_FILE).read_text(encoding="utf-8", errors="replace") if folder else ""
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and _whole(record.get("wave")):
            found[record["wave"]] = record
    return dict(sorted(found.items()))


def queue_state(folder: Path | None, workers: int) -> dict | None:
    """The wave in flight, read from the queue folder: {"wave", "queued", "running", "done"}, or None.

    A candidate's scoring is a job in the run's jobs/ folder (scorer.py): done when its NNNN.result.json exists,
    running while its NNNN.running does. `workers` is kept for callers that read a run from before the markers."""
    queue = folder / QUEUE_DIR if folder else None
    try:
        names = sorted(p.name for p in queue.iterdir()) if queue and queue.is_dir() else []
    except OSError:
        return None
    jobs = folder / JOBS_DIR if folder else None
    waves, done, running, total = [], 0, 0, 0
    for name in names:
        match = QUEUED.match(name)
        if not match:
            continue
        try:
            entry = json.loads((queue / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entry = None  # a file mid-write or damaged: still a candidate in flight
        if isinstance(entry, dict) and _whole(entry.get("wave")):
            waves.append(entry["wave"])
        total += 1
        if (jobs / f"{match.group(1)}.result.json").exists():
            done += 1
        elif (jobs / f"{match.group(1)}.running").exists():
            running += 1
    if not total:
        return None
    return {"wave": max(waves) if waves else None, "queued": total - done - running, "running": running, "done": done}


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def wave_of(row: dict) -> int | None:
    """The wave a row was judged in (None for a `try` or `start` row, or a row from before waves)."""
    text = row.get("wave") or ""
    return int(text) if text.isdigit() else None


def wave_digest(config: RunConfig, rows: list[dict], folder: Path | None) -> dict | None:
    """The run's waves, from its rows (the candidates, as judged) and waves.jsonl (when and on what they were
    scored): each wave side by side, throughput and worker utilisation over them all, the wave in flight.
    None for a run with no wave, judged or in flight."""
    records = read_waves(folder)
    by_wave: dict[int, list[dict]] = {}
    for r in rows:
        if wave_of(r) is not None:
            by_wave.setdefault(wave_of(r), []).append(r)
    workers = config.extra.get("workers")
    flying = queue_state(folder, workers if _whole(workers) else 1)
    numbers = sorted(set(by_wave) | set(records))
    if not numbers and flying is None:
        return None
    waves = [_one_wave(config, n, by_wave.get(n, []), records.get(n, {})) for n in numbers]
    timed = [w for w in waves if w["seconds"]]
    busy = [w for w in timed if w["busy_seconds"] is not None and w["workers"]]
    capacity = sum(w["workers"] * w["seconds"] for w in busy)
    hours = sum(w["seconds"] for w in timed) / 3600
    return {
        "count": len(waves),
        "candidates": sum(len(w["candidates"]) for w in waves),
        # candidates scored per hour of waves (first submit to judged), summed over the waves that say when
        "per_hour": round(sum(len(w["candidates"]) for w in timed) / hours, 1) if hours > 0 else None,
        "hours": round(hours, 3),
        # the workers' busy time over the time they were there for, over the waves that record both
        "utilisation_percent": round(100 * sum(w["busy_seconds"] for w in busy) / capacity, 1) if capacity else None,
        "waves": waves,
        "last": waves[-1] if waves else None,
        "in_flight": flying,
    }


def _one_wave(config: RunConfig, n: int, rows: list[dict], record: dict) -> dict:
    """One wave: its candidates (from the rows) and its figures (from its waves.jsonl record, if any)."""
    submitted, judged = _number(record.get("submitted")), _number(record.get("judged"))
    seconds = judged - submitted if submitted is not None and judged is not None and judged > submitted else None
    busy = record.get("busy_seconds")
    busy = [_number(v) for v in busy.values()] if isinstance(busy, dict) else None
    busy = sum(busy) if busy and all(v is not None for v in busy) else None
    workers = record.get("workers") if _whole(record.get("workers")) and record.get("workers") > 0 else None
    candidates = [
        {
            **brief_row(r, config),
            "worker": r.get("worker") or "",
            "reason": r.get("reason") or "",
            "near_miss": r.get("status") == "discard" and (r.get("reason") or "").startswith(NEAR_MISS_REASON),
        }
        for r in rows
    ]
    kept = [c["iter"] for c in candidates if c["status"] == "keep"]
    return {
        "wave": n,
        "candidates": candidates,
        "kept": kept[-1] if kept else None,
        "near_misses": [c["iter"] for c in candidates if c["near_miss"]],
        "workers": workers,
        "executor": record.get("executor") if isinstance(record.get("executor"), str) else None,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "busy_seconds": round(busy, 1) if busy is not None else None,
        "utilisation_percent": round(100 * busy / (workers * seconds), 1)
        if busy is not None and workers and seconds
        else None,
        "confirm_seed": record.get("confirm_seed") if _whole(record.get("confirm_seed")) else None,
    }


def wave_heading(w: dict) -> str:
    """`wave 3: 4 candidates on 2 local workers in 95 s, kept iter 8` (what is known of it)."""
    on = f" on {w['workers']} {w['executor'] + ' ' if w['executor'] else ''}worker{'s' * (w['workers'] != 1)}"
    took = f" in {w['seconds']:.0f} s" if w["seconds"] else ""
    kept = f"kept iter {w['kept']}" if w["kept"] is not None else "nothing kept"
    count = len(w["candidates"])
    return f"wave {w['wave']}: {count} candidate{'s' * (count != 1)}{on if w['workers'] else ''}{took}, {kept}"


def in_flight_text(flying: dict) -> str:
    """`wave 3 in flight: 1 running, 2 waiting, 1 done`."""
    which = f"wave {flying['wave']}" if flying.get("wave") is not None else "a wave"
    return f"{which} in flight: {flying['running']} running, {flying['queued']} waiting, {flying['done']} done"


def wave_lines(waves: dict | None) -> list[str]:
    """The digest's `waves:` section: the last wave's candidates side by side, its near misses named, throughput
    and utilisation over the run's waves, the wave in flight. No lines for a run without waves."""
    if not waves:
        return []
    rate = f" | {waves['per_hour']} candidates per hour of waves" if waves["per_hour"] else ""
    busy = f" | workers busy {waves['utilisation_percent']:g}%" if waves["utilisation_percent"] is not None else ""
    judged = f"{waves['count']} judged, {waves['candidates']} candidates" if waves["count"] else "none judged yet"
    lines = [f"waves: {judged}{rate}{busy}"]
    last = waves["last"]
    if last:
        lines.append(f"  {wave_heading(last)}:")
        for c in last["candidates"]:
            delta = f"Δ {c['delta']:+.4f} ± {c['delta_se']:.4f}" if math.isfinite(c["delta"]) else "Δ n/a"
            mark = "  near miss" if c["near_miss"] else ""
            lines.append(
                f"    iter {c['iter']:<4} {c['status']:<11} {delta:<20} {c['worker'] or '-':<9}{mark}"
                f" — {_cut(c['description'], HYPOTHESIS_CUT)}"
            )
        near = [c for c in last["candidates"] if c["near_miss"]]
        if near:
            lines.append("  near misses: " + "; ".join(f"iter {c['iter']} ({c['reason']})" for c in near))
    if waves["in_flight"]:
        lines.append(f"  {in_flight_text(waves['in_flight'])}")
    return lines


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- near misses ----------------------------------------------------------------------------------------
def near_misses(config: RunConfig, rows: list[dict], repo=None) -> list[dict]:
    """Discards within NEAR_MISS_SE standard errors of a gain over the best of their time, worth reading:
    - seed-only edits left out (the code differs from the best it was measured against only in seed values,
      docstrings, comments or the HYPOTHESIS text): a lucky draw, not an idea to combine;
    - the same code shown once, with every iteration that tried it;
    - each marked `stale` when the best it was measured against has since been replaced;
    - the most promising first: those measured against the current best, by p-value (then gain / se), then
      the stale ones in the same order.
    `repo` (anything with `common_dir`, as runs.run_dir takes) lets the code be read from the run's refs;
    without it, or for a ref that cannot be read, the code checks are skipped, never the row."""
    kept_iters = [int(r["iter"]) for r in rows if r.get("status") == "keep"]
    current_best = kept_iters[-1] if kept_iters else None
    candidates = []
    for r in rows:
        if r.get("status") != "discard":
            continue
        gain, se = _gain(r, config), _num(r, "delta_se")
        if not (math.isfinite(gain) and gain > -NEAR_MISS_SE * se):
            continue
        i = int(r["iter"])
        against = max((k for k in kept_iters if k < i), default=None)
        candidates.append((r, against))
    wanted = {int(r["iter"]) for r, _ in candidates} | {a for _, a in candidates if a is not None}
    sources = read_sources(repo, config, sorted(wanted)) if repo is not None and candidates else {}
    shapes: dict[tuple[int, bool], str | None] = {}

    def shape(i: int | None, blank_seeds: bool) -> str | None:
        if i is None or sources.get(i) is None:
            return None
        if (i, blank_seeds) not in shapes:
            shapes[i, blank_seeds] = code_shape(sources[i], blank_seeds=blank_seeds)
        return shapes[i, blank_seeds]

    by_code: dict[str, list[dict]] = {}  # the same program (up to docstrings and layout): one group
    groups: list[list[dict]] = []
    for r, against in candidates:
        i = int(r["iter"])
        mine = shape(i, blank_seeds=True)
        if mine is not None and mine == shape(against, blank_seeds=True):
            continue  # a seed-only edit of the best it was measured against: a draw, not an idea
        entry = {**brief_row(r, config), "vs_iter": against, "stale": against not in (None, current_best)}
        same = shape(i, blank_seeds=False)
        if same is not None and same in by_code:
            by_code[same].append(entry)
            continue
        groups.append([entry])
        if same is not None:
            by_code[same] = groups[-1]

    def promise(entry: dict) -> tuple:
        """Measured against the current best first; then the smallest p-value, then the largest gain / se."""
        gain, se, p = _gain_of(entry, config), entry["delta_se"], entry["p_value"]
        z = gain / se if math.isfinite(gain) and math.isfinite(se) and se > 0 else -math.inf
        return (entry["stale"], p if math.isfinite(p) else math.inf, -z, entry["iter"])

    shown = [{**min(group, key=promise), "iters": sorted(e["iter"] for e in group)} for group in groups]
    return sorted(shown, key=promise)


def _gain_of(entry: dict, config: RunConfig) -> float:
    return entry["delta"] if config.higher_is_better else -entry["delta"]


def train_rel(config: RunConfig) -> str:
    return "train.py" if config.task in (".", "") else f"{config.task.rstrip('/')}/train.py"


def read_sources(repo, config: RunConfig, iters: list[int]) -> dict[int, str | None]:
    """train.py at each iteration's ref, in one `git cat-file --batch` (the hook is on the agent's clock);
    None where a ref or the file is missing, or git cannot be run."""
    names = [f"{REF_PREFIX}{config.tag}/{i:04d}:{train_rel(config)}" for i in iters]
    try:
        done = subprocess.run(
            ["git", f"--git-dir={Path(repo.common_dir)}", "cat-file", "--batch"],
            input="".join(f"{n}\n" for n in names).encode(),
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return dict.fromkeys(iters)
    out, pos, found = done.stdout, 0, {}
    for i in iters:
        end = out.find(b"\n", pos)
        if end < 0:
            found[i] = None
            continue
        header = out[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            found[i] = out[pos : pos + size].decode("utf-8", errors="replace")
            pos += size + 1
        else:
            found[i] = None  # "<name> missing": the ref or the file is not there
    return found


class _Blank(ast.NodeTransformer):
    """Blank what does not change a program's idea: docstrings, the HYPOTHESIS text and (when asked) the
    values given to seed-like names."""

    def __init__(self, blank_seeds: bool):
        self.blank_seeds = blank_seeds

    def _drop_docstring(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        return self.generic_visit(node)

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _drop_docstring

    def _names(self, targets) -> list[str]:
        names = []
        for t in targets:
            if isinstance(t, ast.Name):
                names.append(t.id)
            elif isinstance(t, ast.Attribute):
                names.append(t.attr)
            elif isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str):
                names.append(t.slice.value)  # params["seed"] = 3
            else:
                names.append("")
        return names

    def _seedlike(self, name: str | None) -> bool:
        return self.blank_seeds and bool(name) and bool(SEED_NAME.match(name))

    def _assigned(self, node, targets):
        names = self._names(targets)
        if names and (all(self._seedlike(n) for n in names) or names == [HYPOTHESIS_NAME]):
            node.value = ast.Constant(BLANK)
            return node
        return self.generic_visit(node)

    def visit_Assign(self, node):
        return self._assigned(node, node.targets)

    def visit_AnnAssign(self, node):
        return self._assigned(node, [node.target]) if node.value is not None else self.generic_visit(node)

    def visit_keyword(self, node):
        if self._seedlike(node.arg):
            node.value = ast.Constant(BLANK)
            return node
        return self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if self.blank_seeds and name and (SEED_NAME.match(name) or name in SEED_CALLS):
            node.args = [ast.Constant(BLANK) for _ in node.args]
        return self.generic_visit(node)

    def visit_Dict(self, node):
        for k, key in enumerate(node.keys):
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and self._seedlike(key.value):
                node.values[k] = ast.Constant(BLANK)
        return self.generic_visit(node)


def code_shape(source: str, blank_seeds: bool = False) -> str | None:
    """A canonical text of `source`'s syntax tree, without comments, docstrings, the HYPOTHESIS text and
    layout (and with seed values blanked if asked): equal shapes, the same program. None if it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return ast.dump(_Blank(blank_seeds).visit(tree), annotate_fields=False)


def against_text(r: dict) -> str:
    """Which best a near miss was measured against, for a table cell."""
    if r.get("vs_iter") is None:
        return "no best"
    return f"iter {r['vs_iter']}'s best" + (", since replaced" if r.get("stale") else " (the current best)")


def stale_note(r: dict) -> str:
    """`, vs iter 3's best, since replaced` for a near miss measured against an older best; empty otherwise."""
    return f", vs iter {r['vs_iter']}'s best, since replaced" if r.get("stale") and r.get("vs_iter") is not None else ""


def render(d: dict) -> str:
    """The digest as a few lines of text, for an agent's context."""
    m = d["metric"]

    def val(x: float) -> str:
        return "nan" if x is None or not math.isfinite(x) else f"{x:.4f}"

    def delta(r: dict) -> str:
        return "" if not math.isfinite(r["delta"]) else f" (Δ {r['delta']:+.4f} ± {val(r['delta_se'])})"

    lines = [
        f"run {d['tag']} | task {d['task']} | {m} ({d['direction']} is better)"
        + f" | budget {d['budget_seconds']:g} {d.get('budget_unit', 's')}"
        + (f" | keep rule {d['keep_rule']}" if d.get("keep_rule") else "")
        + (", confirmed on fresh folds" if d.get("confirm") else "")
        + (
            f" | workers: {d['workers']} ({d.get('executor', 'local')}): write waves with submit and wait"
            f" (screened by {keeprules.WAVE_SCREEN_RULE}, confirmed on fresh folds)"
            if d.get("workers", 1) > 1 or d.get("executor", "local") != "local"
            else ""
        ),
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
        for r in d["near_misses"]:
            also = [i for i in r.get("iters", [r["iter"]]) if i != r["iter"]]
            same = f" (same code: iter {', '.join(map(str, also))})" if also else ""
            stale = f" (vs iter {r['vs_iter']}'s best, since replaced)" if r.get("stale") else ""
            lines.append(
                f"  iter {r['iter']} {r['ref']}{delta(r)}{stale} p={val(r['p_value'])}{same} — {r['description']}"
            )
    lines += wave_lines(d.get("waves"))
    if d["crash_causes"]:
        lines.append("crash causes:")
        lines += [
            f"  {c['count']}x {c['reason']} (iters {', '.join(map(str, c['iters'][-5:]))})" for c in d["crash_causes"]
        ]
    limits = [
        f"deadline {d['deadline']}" if d["deadline"] else "",
        f"cap {d['max_iters']} iteration{'' if d['max_iters'] == 1 else 's'}" if d["max_iters"] else "",
    ]
    limits = [x for x in limits if x]
    lines.append(f"next: iter {d['next_iter']}" + (f" | {', '.join(limits)}" if limits else ""))
    if d["stop_reason"]:
        lines.append(f"STOP: {d['stop_reason']}")
    if d.get("model_cost"):
        lines.append(f"model: {d['model_cost']['line']}")
    return "\n".join(lines)
