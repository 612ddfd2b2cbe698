"""The live view of a running loop, for the person who watches it:

    `ratchet.py watch`   a terminal frame redrawn as rows arrive: best so far, the last rows in the ratchet's
                         own line format, iterations per hour, a sparkline of the best so far
    live.html            a page in the run's folder, rewritten after each `try` (loop.py calls `refresh`), that
                         reloads itself while the run goes on: leave a browser tab open on it

Both read the run as `status` does (the rows the run's refs hold, through the digest), read-only: no recovery,
no re-measure, no held-out figure, nothing written into git. `ratchet.py report` is the morning review.
"""

from __future__ import annotations

import html
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from autoresearch import cost as model_cost
from autoresearch import digest, stopping
from autoresearch.messages import VERDICTS, fmt
from autoresearch.recovery import START_FILE, STATE_FILE
from autoresearch.refs import ledger_for, read_refs
from autoresearch.runs import RunConfig, RunError, load_config, read_json, run_dir, tag_of_branch
from autoresearch.summary import parse_float
from autoresearch.taskdir import Task, find_task

INTERVAL_SECONDS = 2.0  # `watch`'s default redraw period; a redraw (one git call, a digest) costs tens of ms
LAST_ROWS = 10  # rows the frame lists: what a glance needs, fits a laptop terminal with the header
SPARK_WIDTH = 60  # iterations the sparkline shows (the latest ones when there are more)
SPARKS = "▁▂▃▄▅▆▇█"  # eight levels, worst to best
STRIP = {"keep": "K", "discard": "·", "crash": "x", "interrupted": "!"}  # one character per row under the sparkline
STRIP_KEY = "K kept, · discarded, x crashed, ! interrupted"
CLEAR = "\x1b[H\x1b[2J"  # ANSI: cursor home, clear screen (plain: any terminal emulator has these)
LIVE_FILE = "live.html"  # in the run's folder, .git/autoresearch/<tag>/: never in the work tree nor in a commit
PAGE_REFRESH_SECONDS = 30  # the page reloads itself this often while the run goes on
CHART_SIZE = (960, 300)  # the page's inline SVG chart, px
CHART_PAD = (58, 14, 16, 28)  # left, right, top, bottom margins of the plot area, px
PAGE_STYLE = (  # the report's look, in brief
    "body{font:15px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1000px;margin:24px auto;"
    "padding:0 16px;color:#222} h1{font-size:24px} h2{font-size:19px;margin-top:28px;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;"
    "text-align:left;vertical-align:top} th{background:#f6f6f6} .muted{color:#777;font-size:13px}"
)
CRASH_LANE = 0.06  # crashes (no score) sit in a lane this fraction of the plot height above its bottom edge


@dataclass
class View:
    """What one frame (or one page) shows: the run as its refs hold it, digested, and what is in flight."""

    config: RunConfig
    task: Task
    rows: list[dict]
    digest: dict
    folder: Path
    in_flight: dict | None  # state.json of the iteration being scored (or start.json of a start), if any

    @property
    def wave(self) -> dict | None:
        """The wave in flight, read from the run's queue folder (digest.queue_state), if any."""
        return (self.digest.get("waves") or {}).get("in_flight")

    @property
    def over(self) -> bool:
        return bool(self.digest["stop_reason"]) and self.in_flight is None and self.wave is None


def model_cost_line(view: View) -> str | None:
    """What the model has cost so far (cost.py, from Claude Code's logs in the run folder), as of the last row:
    read again only when a row arrives, since the logs can be large and `watch` redraws every few seconds."""
    key = (str(view.folder), len(view.rows))
    if key not in _cost_seen:
        _cost_seen.clear()
        d = view.digest
        figures = model_cost.figures(view.folder, d["iterations"], d["kept"])
        _cost_seen[key] = f"model: {figures['line']}" if figures else None
    return _cost_seen[key]


_cost_seen: dict[tuple[str, int], str | None] = {}  # model_cost_line's one entry: (run folder, rows) -> line

# Hook point for lines another module wants in `watch`'s frame (not on the page, which each `try` pays for):
# each is called with the View and returns one line, or None to add nothing. A hook that raises costs its line.
EXTRA_LINES: list[Callable[[View], str | None]] = [model_cost_line]


# -- reading ------------------------------------------------------------------------------------------
def read_view(repo, tag: str | None = None) -> View:
    """Run `tag` (default: the checked-out one) read-only: the rows its refs hold (those `status` shows, without
    the repairs `status` makes to results.tsv and run.json), the config its baseline's ref holds."""
    tag = tag or tag_of_branch(repo.branch())
    if not tag:
        raise RunError("not on an autoresearch run branch; pass --tag TAG")
    refs = read_refs(repo, tag)
    if refs.config is None and refs.targets and not refs.legacy:
        raise RunError(f"run {tag}'s baseline ref is gone or damaged, so its rows cannot be checked")
    config = refs.config or load_config(repo, tag)
    if config is None:
        raise RunError(f"no run {tag!r}")
    task = find_task(repo, config.task)
    rows = ledger_for(repo, config, task).rows(tag) if refs.legacy else refs.rows
    folder = run_dir(repo, tag)
    in_flight = read_json(folder / STATE_FILE) or read_json(folder / START_FILE)
    # Digested without the repository: its one use there is reading train.py at every near miss's ref, for
    # the near misses that neither view shows (a quarter second on 200 rows); the stop reason is added back.
    d = digest.digest(config, rows)
    d["stop_reason"] = stopping.stop_reason(config, rows, folder)
    d["waves"] = digest.wave_digest(config, rows, folder)  # waves.jsonl and the queue: the run folder's
    return View(config, task, rows, d, folder, in_flight or None)


def extra_lines(view: View) -> list[str]:
    out = []
    for hook in EXTRA_LINES:
        try:
            text = hook(view)
        except Exception as exc:  # noqa: BLE001 - a broken hook costs its line, never the view
            text = f"({getattr(hook, '__name__', 'hook')} failed: {type(exc).__name__})"
        if text:
            out.append(text)
    return out


# -- the terminal frame -------------------------------------------------------------------------------
def row_line(config: RunConfig, row: dict) -> str:
    """A row as `try` printed it (messages.line), from the strings a ref holds."""
    metric = config.metric
    shown = f"{metric}={fmt(parse_float(row.get(metric) or None))}"
    delta, se = parse_float(row.get("delta") or None), parse_float(row.get("delta_se") or None)
    status = row.get("status", "")
    if status in ("keep", "discard") and math.isfinite(delta):
        shown += f" (Δ {delta:+.4f} ± {fmt(se)})"
    verdict = VERDICTS.get(status, status.upper())
    if row.get("iter") == "0":
        verdict = "BASELINE"
    extra = f" ({row.get('reason', '')})" if status in ("crash", "interrupted") and row.get("reason") else ""
    seconds = parse_float(row.get("seconds") or None)
    took = f"{seconds:.1f} s" if math.isfinite(seconds) else "? s"
    return f"iter {row.get('iter')} | {shown} | {verdict}{extra} | {took} — {row.get('description', '')}"


def frontier(config: RunConfig, rows: list[dict]) -> list[float]:
    """The best-so-far value after each row (the last kept row's score; nan before the baseline)."""
    best, out = math.nan, []
    for r in rows:
        value = parse_float(r.get(config.metric) or None)
        if r.get("status") == "keep" and math.isfinite(value):
            best = value
        out.append(best)
    return out


def sparkline(values: list[float], higher_is_better: bool) -> str:
    """One character per value, taller is better (for a lower-is-better metric too); blank where unknown."""
    sign = 1 if higher_is_better else -1
    good = [sign * v for v in values if math.isfinite(v)]
    if not good:
        return " " * len(values)
    low, span = min(good), max(good) - min(good)
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int((sign * v - low) / span * len(SPARKS)))])
    return "".join(out)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def wave_mark(row: dict) -> str:
    """`w3 ` before a row judged in wave 3; "" for a `try` or `start` row."""
    wave = digest.wave_of(row)
    return "" if wave is None else f"w{wave} "


def row_lines(config: RunConfig, rows: list[dict]) -> list[str]:
    """The frame's row lines: each as `try` printed it, after its wave's mark when rows of waves are shown
    (the others padded, so that the lines stay aligned)."""
    marks = [wave_mark(r) for r in rows]
    width = max(map(len, marks), default=0)
    return [f"  {mark:<{width}}{row_line(config, r)}" for mark, r in zip(marks, rows, strict=True)]


def in_flight_line(view: View, now: float) -> str | None:
    state = view.in_flight
    if not state:
        return f"now: {digest.in_flight_text(view.wave)}" if view.wave else None
    started = state.get("started")
    running = f" for {_ago(now - started)}" if isinstance(started, (int, float)) else ""
    if "iter" in state:
        phase = state.get("phase", "running")
        return f"now: iter {state['iter']} {phase}{running} — {state.get('hypothesis', '')}"
    return f"now: the baseline is being scored ({state.get('phase', 'start')})"


def frame(view: View, now: float | None = None, width: int | None = None) -> str:
    """One frame of `watch`: plain text, lines cut to `width` when given (a terminal's)."""
    now = time.time() if now is None else now
    d, c = view.digest, view.config
    m = c.metric
    lines = [
        f"run {c.tag} | task {d['task']} | {m} ({d['direction']} is better)"
        f" | budget {d['budget_seconds']:g} {d.get('budget_unit', 's')} | keep rule {d['keep_rule']}"
    ]
    if d["best"]:
        b, base = d["best"], d["baseline"]
        gain = d["gain_over_baseline"]
        gain = f" ({gain:+.4f} over baseline {fmt(base[m])})" if base and math.isfinite(gain) else ""
        lines.append(f"best: {fmt(b[m])} at iter {b['iter']}{gain} — {b['description']}")
    rate = f"{d['iterations_per_hour']} per hour" if d["iterations_per_hour"] else "per hour: n/a"
    crashed = d["crashed"] + d["interrupted"]
    lines.append(
        f"iterations: {d['iterations']} | kept {d['kept']} | discarded {d['discarded']} | crashed {crashed} | {rate}"
    )
    lines += extra_lines(view)
    window = view.rows[-SPARK_WIDTH:]
    if window:
        first, last = window[0].get("iter"), window[-1].get("iter")
        spark = sparkline(frontier(c, view.rows)[-SPARK_WIDTH:], c.higher_is_better)
        lines.append(f"best so far  {spark}  iters {first}–{last}")
        strip = "".join(STRIP.get(r.get("status", ""), "?") for r in window)
        lines.append(f"             {strip}  {STRIP_KEY}")
    lines.append(f"last {min(LAST_ROWS, len(view.rows))}:")
    lines += row_lines(c, view.rows[-LAST_ROWS:])
    flying = in_flight_line(view, now)
    if flying:
        lines.append(flying)
    if view.in_flight and view.wave:  # a `try` while a wave is scoring: both are going on
        lines.append(f"now: {digest.in_flight_text(view.wave)}")
    if d["stop_reason"]:
        lines.append(f"STOP: {d['stop_reason']}")
    page = view.folder / LIVE_FILE
    lines.append(f"page: {page}" + ("" if page.exists() else " (written after the next try)"))
    if width:
        lines = [line if len(line) <= width else line[: width - 1] + "…" for line in lines]
    return "\n".join(lines)


def watch(
    repo,
    tag: str | None = None,
    *,
    interval: float = INTERVAL_SECONDS,
    once: bool = False,
    out: TextIO | None = None,
) -> int:
    """Draw frames until Ctrl-C (or, when not in a terminal, until the run is over); `once`: one frame.

    In a terminal each frame replaces the last (clear screen, redraw); piped, a frame is printed only when a
    row or the iteration in flight changed, so a log of it stays short."""
    if not (interval > 0 and math.isfinite(interval)):
        raise RunError(f"--interval {interval:g}: give a positive number of seconds")
    out = out or sys.stdout
    tty = out.isatty() and not once
    view = read_view(repo, tag)  # a run that cannot be read: one line of error from the caller, not a frame
    tag = view.config.tag
    shown = None
    try:
        while True:
            width = shutil.get_terminal_size().columns if tty else None
            text = frame(view, width=width)
            key = (
                len(view.rows),
                view.rows[-1].get("iter") if view.rows else None,
                str(view.in_flight),
                str(view.wave),
            )
            if once:
                out.write(text + "\n")
                return 0
            if tty:
                out.write(CLEAR + text + "\n")
            elif key != shown:
                out.write(text + "\n\n")
            out.flush()
            shown = key
            if view.over and not tty:
                return 0
            time.sleep(interval)
            try:
                view = read_view(repo, tag)
            except Exception as exc:  # noqa: BLE001 - a ref mid-write, a git killed by the same ^C: try again
                out.write(f"(could not read run {tag} just now: {type(exc).__name__}: {exc})\n")
    except KeyboardInterrupt:  # the way out of a terminal view: not an error
        out.write("\n")
        out.flush()
        return 0


# -- the live page ------------------------------------------------------------------------------------
def live_path(repo, tag: str) -> Path:
    return run_dir(repo, tag) / LIVE_FILE


def refresh(repo, tag: str) -> Path | None:
    """Rewrite run `tag`'s live page from its refs; its path, or None when it could not be written.
    Never raises: a page that could not be written costs one line on stderr, never the `try` that called it."""
    try:
        return write_page(read_view(repo, tag))
    except Exception as exc:  # noqa: BLE001 - the page is a convenience; the iteration is recorded already
        why = " ".join(str(exc).split())[:200]
        print(f"note: the live page was not rewritten ({type(exc).__name__}: {why})", file=sys.stderr, flush=True)
        return None


def write_page(view: View) -> Path:
    path = view.folder / LIVE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_page(view), encoding="utf-8")
    tmp.replace(path)  # a browser reloading mid-write sees the old page or the new one, never half of one
    return path


def render_page(view: View, now: float | None = None) -> str:
    """The live page: a summary from the digest, the chart as inline SVG, every row (the latest first)."""
    now = time.time() if now is None else now
    esc = html.escape
    d, c = view.digest, view.config
    m = c.metric
    refresh_tag = "" if view.over else f'<meta http-equiv="refresh" content="{PAGE_REFRESH_SECONDS}">'
    state = (
        f"the run is over: {d['stop_reason']}"
        if view.over
        else f"live: reloads every {PAGE_REFRESH_SECONDS} s while the run goes on"
    )
    best = d["best"]
    summary = [
        ["task", f"{c.extra.get('task') or c.task} ({m}, {d['direction']} is better)"],
        ["device", digest.device_text(d)],
        ["budget", f"{d['budget_seconds']:g} {d.get('budget_unit', 's')} per experiment, keep rule {d['keep_rule']}"],
        ["iterations", f"{d['iterations']} ({d['iterations_per_hour'] or 'n/a'} per hour)"],
        ["kept / discarded / crashed", f"{d['kept']} / {d['discarded']} / {d['crashed'] + d['interrupted']}"],
        ["best so far", f"{fmt(best[m])} at iter {best['iter']} — {best['description']}" if best else "n/a"],
    ]  # no EXTRA_LINES: the model's cost reads logs (half a second on a night's 20 MB), each `try` would pay it
    flying = in_flight_line(view, now)
    rows = [
        [
            r.get("iter", ""),
            r.get("status", ""),
            fmt(parse_float(r.get(m) or None)),
            _delta_text(r),
            r.get("seconds", ""),
            r.get("description", ""),
        ]
        for r in view.rows[::-1]
    ]
    parts = [
        f"<h1>autoresearch run {esc(c.tag)} (live)</h1>",
        f'<p class="muted">{esc(state)} · written {esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)))}'
        " · validation figures only, nothing re-measured; <code>uv run scripts/ratchet.py report</code>"
        " for the review with the held-out audit</p>",
        _table(None, summary),
        svg_chart(view),
        f"<p><b>{esc(flying)}</b></p>" if flying else "",
        f"<p><b>now: {esc(digest.in_flight_text(view.wave))}</b></p>" if view.in_flight and view.wave else "",
        "<h2>Every experiment, the latest first</h2>",
        _table(["iter", "status", m, "Δ ± se", "seconds", "hypothesis"], rows),
    ]
    count = f"{d['iterations']} iteration" + ("" if d["iterations"] == 1 else "s")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh_tag}'
        f"<title>{esc(c.tag)} (live) · {count}</title><style>{PAGE_STYLE}</style></head><body>\n"
        + "\n".join(x for x in parts if x)
        + "\n</body></html>\n"
    )


def _delta_text(row: dict) -> str:
    delta, se = parse_float(row.get("delta") or None), parse_float(row.get("delta_se") or None)
    return f"Δ {delta:+.4f} ± {fmt(se)}" if math.isfinite(delta) else ""


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def noise_band(config: RunConfig, rows: list[dict]) -> list[float]:
    """The se to draw around the best so far at each row: that row's Δ ± se (the noise its verdict was judged
    against), carried forward over rows without one (crashes), back-filled before the first."""
    out, last = [], math.nan
    for r in rows:
        se = parse_float(r.get("delta_se") or None)
        last = se if math.isfinite(se) and se >= 0 else last
        out.append(last)
    first = next((x for x in out if math.isfinite(x)), math.nan)
    return [first if not math.isfinite(x) else x for x in out]


def svg_chart(view: View) -> str:
    """The progress chart as inline SVG (no matplotlib: importing it alone costs seconds): grey discards, the
    best so far as a green step line in a ±1 se band, kept steps in green, crashes as red × in a lane inside
    the plot. Better is up for either direction."""
    c = view.config
    sign = 1 if c.higher_is_better else -1
    w, h = CHART_SIZE
    left, right, top, bottom = CHART_PAD
    pw, ph = w - left - right, h - top - bottom
    points = [(int(r["iter"]), parse_float(r.get(c.metric) or None), r.get("status", "")) for r in view.rows]
    best = frontier(c, view.rows)
    se = noise_band(c, view.rows)
    good = [sign * v for _, v, _ in points if math.isfinite(v)]
    good += [sign * (b + s * k) for b, s in zip(best, se, strict=True) for k in (-1, 1) if math.isfinite(b + s)]
    if not good:
        return '<p class="muted">(no scored row yet)</p>'
    low, high = min(good), max(good)
    span = max(high - low, 1e-9)
    low -= span * (CRASH_LANE * 2 + 0.04)  # room for the crash lane under the lowest point
    high += span * 0.06
    last = max(max((i for i, _, _ in points), default=1), 1)

    def x(i: float) -> float:  # half an iteration of room at each end: no marker is cut by the frame
        return left + pw * (i + 0.5) / (last + 1)

    def y(value: float) -> float:
        return top + ph * (1 - (sign * value - low) / (high - low))

    lane = top + ph * (1 - CRASH_LANE)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="progress chart" style="max-width:{w}px;border:1px solid #ddd;font:11px sans-serif">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
    ]
    band_top, band_bottom = [], []
    for k, (i, _, _) in enumerate(points):
        b, s = best[k], se[k]
        if math.isfinite(b) and math.isfinite(s):
            end = points[k + 1][0] if k + 1 < len(points) else i
            for xi in (i, end):
                band_top.append(f"{x(xi):.1f},{y(b + sign * s):.1f}")
                band_bottom.append(f"{x(xi):.1f},{y(b - sign * s):.1f}")
    if band_top:
        poly = " ".join(band_top + band_bottom[::-1])
        out.append(f'<polygon class="noise-band" points="{poly}" fill="#2ca02c" fill-opacity="0.15" stroke="none"/>')
    steps = []
    for k, (i, _, _) in enumerate(points):
        if math.isfinite(best[k]):
            end = points[k + 1][0] if k + 1 < len(points) else i
            steps += [f"{x(i):.1f},{y(best[k]):.1f}", f"{x(end):.1f},{y(best[k]):.1f}"]
    if steps:
        out.append(f'<polyline class="best" points="{" ".join(steps)}" fill="none" stroke="#2ca02c" stroke-width="2"/>')
    for i, v, s in points:
        if s in ("crash", "interrupted") or not math.isfinite(v):
            cx = x(i)
            out.append(
                f'<path class="crash" d="M{cx - 4:.1f},{lane - 4:.1f}l8,8m0,-8l-8,8" stroke="#d62728" stroke-width="2">'
                f"<title>iter {i}: {html.escape(s)}</title></path>"
            )
        elif s == "keep":
            out.append(
                f'<circle class="kept" cx="{x(i):.1f}" cy="{y(v):.1f}" r="5" fill="#2ca02c" stroke="black">'
                f"<title>iter {i}: {fmt(v)} kept</title></circle>"
            )
        else:
            out.append(
                f'<circle class="discard" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="#b0b0b0">'
                f"<title>iter {i}: {fmt(v)}</title></circle>"
            )
    for value in (sign * low, sign * high):
        out.append(f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{fmt(value)}</text>')
    out.append(f'<text x="{x(0):.1f}" y="{h - 8}" text-anchor="middle">iter 0</text>')
    out.append(f'<text x="{x(last):.1f}" y="{h - 8}" text-anchor="middle">iter {last}</text>')
    direction = "higher" if c.higher_is_better else "lower"
    out.append(
        f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">{html.escape(c.metric)} ({direction} is better;'
        " up is better) · green band: ±1 se of each row's Δ · red ×: crashed</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
