"""The morning review: `ratchet.py report` writes, per run, into report/<tag>/

    progress.png   every experiment over iteration number, kept steps labelled, the best-so-far frontier
    report.html    one self-contained page: summary, chart, kept chain with diffs, held-out audit, fresh folds
    report.md      the short version, also printed to the terminal (paste it into a pull request)

Run data is read only through the ledger (rows), the digest (every summary figure, the same ones
`status --json` shows), the run's held-out records and git. The statistics live in audit.py.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import audit, digest, watch
from autoresearch.contract import CAPABILITIES_FLAG, Capabilities
from autoresearch.gitops import REF_PREFIX, Repo
from autoresearch.harness import ask_capabilities
from autoresearch.refs import ledger_for
from autoresearch.runs import RunConfig, RunError, load_config, run_dir, tag_of_branch
from autoresearch.summary import parse_float
from autoresearch.taskdir import Task, find_task

CHART_INCHES = (12, 6.5)
CHART_DPI = 100  # 1200 x 650 px: readable on a laptop screen and in a pull request without zooming
LABEL_CHARS = 46  # kept-step labels longer than this are cut; the HTML has the full hypothesis
WORST_QUANTILE = 10  # the axis shows discards down to this percentile; worse ones sit in a lane under it as ▼
# Under the scale, inside the axes, two lanes (in fractions of the scale's span): discards off the scale (▼),
# then crashes (×), which have no score to place them by. Inside, so neither the axis nor the legend hides them.
FLOOR_GAP = 0.04  # from the worst point shown to the dashed line where the scale ends
OFF_LANE = 0.05  # from that line down to the ▼ lane
CRASH_LANE = 0.11  # from that line down to the × lane
LANES_HEIGHT = 0.16  # from that line down to the bottom of the axes
LEGEND_BELOW = -0.1  # the legend's top, in axes heights under the axes: clear of the points and of the x label
REPORT_DIR = "report"  # in the repository root; gitignored
WAVE_SHADES = ("#1f77b4", "#ff7f0e")  # the chart's wave bands, alternately: neighbouring waves stay apart
WAVE_ALPHA = 0.07  # faint enough that the points, the frontier and its band read through the wave bands


@dataclass
class Step:
    """One kept commit of the chain, with what it changed in train.py since the previous kept commit."""

    entry: dict  # the digest's brief of the row
    sha: str
    diff: str
    heldout: float
    gap: float  # validation minus held-out


@dataclass
class Report:
    config: RunConfig
    task: Task
    rows: list[dict]
    digest: dict
    chain: list[Step]
    heldout: audit.Comparison | None = None
    heldout_note: str = ""
    fresh_seeds: tuple[int, ...] = ()
    fresh_baseline: list[audit.FreshScore] = field(default_factory=list)
    fresh_final: list[audit.FreshScore] = field(default_factory=list)
    fresh: audit.FreshGain | None = None
    fresh_note: str = ""
    seen: audit.SeenGain | None = None
    truth: audit.TrueGain | None = None  # only for a harness that declares `truth` (a generator it can draw from)

    @property
    def name(self) -> str:
        return self.config.extra.get("task") or self.config.task


# -- gathering ------------------------------------------------------------------------------------------
def build(
    repo: Repo,
    config: RunConfig,
    task: Task,
    *,
    remeasure: bool = True,
    fresh_seeds: tuple[int, ...] = audit.FRESH_CV_SEEDS,
    echo: Callable[[str], None] = lambda _line: None,
) -> Report:
    """The report's figures; `echo` is told of each slow step (a harness run) as it ends."""
    rows = ledger_for(repo, config, task).rows(config.tag)
    d = digest.digest(config, rows, repo)
    metric = config.metric
    refs = repo.refs(f"{REF_PREFIX}{config.tag}/")
    records = audit.heldout_records(run_dir(repo, config.tag))
    chain, previous = [], None
    for entry in d["kept_chain"]:
        sha = refs.get(entry["ref"], entry["commit"])
        held = audit.heldout_score(records.get(entry["iter"]), metric)
        diff = repo.diff(previous, sha, task.train_rel) if previous else ""
        chain.append(Step(entry, sha, diff, held, entry[metric] - held))
        previous = sha
    report = Report(config, task, rows, d, chain)
    if len(chain) < 2:
        report.heldout_note = report.fresh_note = "no edit was kept: the final commit is the baseline"
        return report
    first, last = chain[0], chain[-1]
    by_iter = {str(r.get("iter")): r for r in rows}
    report.seen = audit.seen_gain(
        by_iter.get(str(first.entry["iter"]), {}),
        by_iter.get(str(last.entry["iter"]), {}),
        rows,
        metric,
        config.keep_rule,
        config.cv_folds,
    )
    base_record, final_record = records.get(first.entry["iter"]), records.get(last.entry["iter"])
    try:
        echo("held-out audit: the harness recomputes the held-out labels")
        base_record, final_record = audit.complete_records([base_record, final_record], metric, task.dir / "prepare.py")
    except audit.TruthError as exc:
        report.heldout_note = f"no held-out audit: {exc}"
    else:
        if audit.can_bootstrap(base_record, metric) and audit.can_bootstrap(final_record, metric):
            report.heldout = audit.compare(base_record, final_record, metric, config.higher_is_better)
        else:
            report.heldout_note = "no held-out records for the baseline and the final commit (the harness wrote none)"
    capabilities, unknown = capabilities_of(repo, config, task)
    if not remeasure:
        report.fresh_note = "skipped (--no-remeasure)"
    elif capabilities is None:
        report.fresh_note = f"no fresh folds: {unknown}"
    elif not capabilities.fresh_folds:
        report.fresh_note = "this task's harness declares no fresh folds (--cv-seed), so there are none to score on"
    else:
        report.fresh_seeds = tuple(fresh_seeds)
        echo(
            f"re-measure: the baseline and the final commit on fresh folds of {plural(len(fresh_seeds), 'cv seed')}"
            f" ({plural(2 * len(fresh_seeds), 'scoring')})"
        )
        report.fresh_baseline = _fresh_scores(repo, task, first.sha, "baseline", fresh_seeds, metric, echo)
        report.fresh_final = _fresh_scores(repo, task, last.sha, "final", fresh_seeds, metric, echo)
        report.fresh = audit.fresh_gain(report.seen, report.fresh_baseline, report.fresh_final, config.higher_is_better)
    if remeasure and capabilities is not None and getattr(capabilities, "truth", False):
        prepare = task.dir / "prepare.py"
        scores = []
        for which, step in (("baseline", first), ("final", last)):
            started = time.monotonic()
            scores.append(audit.score_truth(prepare, repo.show(step.sha, task.train_rel), metric))
            echo(f"re-measure: {which} {step.sha[:7]} on fresh draws: done in {time.monotonic() - started:.1f} s")
        report.truth = audit.TrueGain(*scores)
    return report


def _fresh_scores(
    repo: Repo, task: Task, sha: str, which: str, seeds: tuple[int, ...], metric: str, echo: Callable[[str], None]
) -> list[audit.FreshScore]:
    """`sha`'s train.py scored on the fresh folds of each seed, one scoring at a time, each said as it ends."""
    scores = []
    source = repo.show(sha, task.train_rel)
    for seed in seeds:
        started = time.monotonic()
        [score] = audit.score_on_fresh_folds(task.dir / "prepare.py", source, sha, (seed,))
        result = f"error: {score.error}" if score.error else f"{metric} {_v(score.value)}"
        echo(f"re-measure: {which} {sha[:7]}, cv seed {seed}: {result} ({time.monotonic() - started:.1f} s)")
        scores.append(score)
    return scores


def capabilities_of(repo: Repo, config: RunConfig, task: Task) -> tuple[Capabilities | None, str]:
    """What the run's harness supports, as `start` recorded it. A run recorded before harnesses declared
    anything: its harness (frozen for the run) is asked now; (None, why) when it declares nothing."""
    if config.capabilities is not None:
        return config.capabilities, ""
    try:
        return ask_capabilities(repo, task), ""
    except RunError:
        return None, (
            f"run {config.tag}'s record predates declared capabilities and its harness answers no {CAPABILITIES_FLAG}"
        )


# -- the chart ------------------------------------------------------------------------------------------
def progress_chart(report: Report, path: Path) -> Path:
    """Draw the chart (draw_chart) into `path`."""
    import matplotlib.pyplot as plt

    fig = draw_chart(report)
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def draw_chart(report: Report):
    """karpathy's progress.png as a matplotlib Figure: grey discards, green kept steps with their hypotheses,
    the frontier as a step line in a band of ±1 standard error (each row's Δ ± se: the noise its verdict was
    judged against), crashes as red × in a lane of their own at the bottom of the axes. The y axis always
    puts better up: inverted (and said so) when lower is better. The legend sits under the axes, on no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    metric, higher = report.config.metric, report.config.higher_is_better
    sign = 1 if higher else -1
    points = [(int(r["iter"]), parse_float(r.get(metric) or None), r.get("status", "")) for r in report.rows]
    scored = [(i, v, s) for i, v, s in points if math.isfinite(v)]
    kept = [(s.entry["iter"], s.entry[metric]) for s in report.chain if math.isfinite(s.entry[metric])]
    failed = [i for i, v, s in points if s in ("crash", "interrupted") or (s != "keep" and not math.isfinite(v))]
    last_iter = max((i for i, _, _ in points), default=0)
    best_so_far = np.array(watch.frontier(report.config, report.rows))
    se = np.array(watch.noise_band(report.config, report.rows))
    band = np.isfinite(best_so_far) & np.isfinite(se)

    fig, ax = plt.subplots(figsize=CHART_INCHES, dpi=CHART_DPI)
    goodness = np.array([sign * v for _, v, _ in scored]) if scored else np.array([0.0])
    kept_good = np.array([sign * v for _, v in kept]) if kept else goodness
    band_good = np.concatenate([sign * (best_so_far - se), sign * (best_so_far + se)])[np.tile(band, 2)]
    worst = min(kept_good.min(), np.percentile(goodness, WORST_QUANTILE), *band_good)
    best = max(goodness.max(), kept_good.max(), *band_good)  # a discard can score above the frontier: in view
    span = max(best - worst, 1e-6)
    floor = worst - FLOOR_GAP * span  # the scale ends here; under it, the lanes for what is off it or unscored
    off_lane, crash_lane = floor - OFF_LANE * span, floor - CRASH_LANE * span
    bad_edge, good_edge = floor - LANES_HEIGHT * span, best + 0.35 * span  # room above the frontier for labels

    inside = [(i, v) for i, v, s in scored if s != "keep" and sign * v >= floor]
    outside = [i for i, v, s in scored if s != "keep" and sign * v < floor]
    if inside:
        label = f"discarded ({len(inside) + len(outside)})"
        ax.scatter(*zip(*inside, strict=True), s=22, color="#b0b0b0", zorder=2, label=label)
    if outside:
        ax.scatter(
            outside,
            [sign * off_lane] * len(outside),
            marker="v",
            s=30,
            color="#909090",
            zorder=2,
            label="discarded, off the scale" if not inside else "off the scale (▼)",
        )
    if failed:
        ax.scatter(
            failed,
            [sign * crash_lane] * len(failed),
            marker="x",
            s=46,
            color="#d62728",
            zorder=3,
            label=f"crashed ({len(failed)})",
            gid="crashed",
        )
    if outside or failed:
        ax.axhline(sign * floor, color="#cccccc", lw=0.8, ls="--", zorder=1)
    if band.any():
        xs = np.array([i for i, _, _ in points] + [last_iter], dtype=float)
        mid = np.append(best_so_far, best_so_far[-1])
        width = np.append(se, se[-1])
        ok = np.append(band, band[-1])
        ax.fill_between(
            xs,
            mid - width,
            mid + width,
            where=ok,
            step="post",
            color="#2ca02c",
            alpha=0.15,
            lw=0,
            zorder=1,
            label="±1 se (each row's Δ ± se)",
            gid="noise band",
        )
    draw_waves(ax, report)
    if kept:
        xs, ys = [i for i, _ in kept], [v for _, v in kept]
        ax.step(
            xs + [last_iter],
            ys + [ys[-1]],
            where="post",
            color="#2ca02c",
            lw=2,
            zorder=3,
            label="best so far",
        )
        ax.scatter(
            xs,
            ys,
            s=70,
            color="#2ca02c",
            edgecolors="black",
            linewidths=0.8,
            zorder=4,
            label=f"kept ({len(kept) - 1} + baseline)",
        )
        for step in report.chain:
            text = "baseline" if step.entry["iter"] == 0 else _cut(step.entry["description"], LABEL_CHARS)
            ax.annotate(
                text,
                (step.entry["iter"], step.entry[metric]),
                xytext=(5, 7),
                textcoords="offset points",
                rotation=22,
                fontsize=8.5,
                color="#1b6e1b",
                ha="left",
                va="bottom",
                zorder=5,
            )
    low, high = sorted((sign * bad_edge, sign * good_edge))
    ax.set_ylim(low, high)
    if not higher:
        ax.invert_yaxis()
    ax.set_xlim(-0.5, max(last_iter, 1) * 1.04 + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    direction = "higher is better" if higher else "lower is better — axis inverted, up is better"
    ax.set_ylabel(f"{metric} ({direction})")
    ax.set_title(chart_title(report))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, LEGEND_BELOW), ncol=6, fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def draw_waves(ax, report: Report) -> None:
    """Each wave as a band behind the points, over the iterations it judged (alternate shades, its number at
    the top), with one legend entry; nothing for a run without waves."""
    import matplotlib.transforms

    waves = [w for w in (report.digest.get("waves") or {}).get("waves", []) if w["candidates"]]
    top = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for k, w in enumerate(waves):
        iters = [c["iter"] for c in w["candidates"]]
        ax.axvspan(
            min(iters) - 0.5,
            max(iters) + 0.5,
            color=WAVE_SHADES[k % len(WAVE_SHADES)],
            alpha=WAVE_ALPHA,
            lw=0,
            zorder=0,
            label=f"waves ({len(waves)}, shaded alternately)" if k == 0 else None,
            gid=f"wave {w['wave']}",
        )
        ax.text(
            (min(iters) + max(iters)) / 2,
            0.98,
            f"w{w['wave']}",
            transform=top,
            ha="center",
            va="top",
            fontsize=8,
            color="#555555",
            zorder=1,
        )


def chart_title(report: Report) -> str:
    d = report.digest
    return (
        f"{report.name} · run {report.config.tag}: {plural(d['iterations'], 'experiment')},"
        f" {plural(d['kept'], 'kept improvement')}"
    )


# -- text -----------------------------------------------------------------------------------------------
def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _v(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _s(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def _delta(entry: dict) -> str:
    return "" if not math.isfinite(entry["delta"]) else f"Δ {_s(entry['delta'])} ± {_v(entry['delta_se'])}"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{_v(ci[0])}, {_v(ci[1])}]"


def heldout_sentence(report: Report) -> str:
    """The audit's verdict and, beside it, the smallest difference its rows could have detected."""
    if not report.heldout:
        return report.heldout_note
    return f"{report.heldout.verdict}. {report.heldout.detectable_text}"


def fresh_sentence(report: Report) -> str:
    return report.fresh.verdict if report.fresh else report.fresh_note


def seen_sentence(report: Report) -> str:
    if report.seen is None:
        return "no edit was kept: the final commit is the baseline"
    return (
        f"{report.seen.text} on the ratchet's own folds; inflated by selection: the ratchet kept exactly the "
        "edits that scored well there"
    )


def gain_lines(report: Report) -> list[tuple[str, str]]:
    """What the final commit's gain over the baseline is worth, one (label, sentence) per kind of evidence,
    from the most optimistic to the most direct: seen, fresh folds, held-out rows, and (on a task with a known
    generator) the true gain on fresh draws. Markdown and HTML both render exactly these."""
    seeds = ", ".join(map(str, report.fresh_seeds)) or "-"
    lines = [
        ("Seen gain", seen_sentence(report)),
        (f"Fresh folds (cv seeds {seeds})", fresh_sentence(report)),
        ("Held-out audit", heldout_sentence(report)),
    ]
    if report.truth is not None:
        lines.append((report.truth.label[:1].upper() + report.truth.label[1:], report.truth.text))
    return lines


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def near_miss_text(r: dict) -> str:
    """One near miss for the report: its iterations, Δ ± se against the best it was measured against."""
    iters = r.get("iters") or [r["iter"]]
    which = f"iter {iters[0]}" + (f" (same code: iters {', '.join(map(str, iters))})" if len(iters) > 1 else "")
    return f"{which} ({_delta(r)}{digest.stale_note(r)}) {r['description']}"


WAVE_HEADER = ["iter", "status", "Δ ± se", "worker", "seconds", "hypothesis"]


def waves_sentence(waves: dict) -> str:
    """The waves in one sentence: how many, how fast, how busy the workers were."""
    rate = (
        f"{waves['per_hour']} candidates scored per hour of waves ({waves['hours']:.2f} h from first submit to judged)"
        if waves["per_hour"]
        else "no timing recorded (no waves.jsonl)"
    )
    busy = (
        f"workers busy {waves['utilisation_percent']:g}% of the time they were there for"
        if waves["utilisation_percent"] is not None
        else "worker utilisation not recorded"
    )
    return f"{plural(waves['count'], 'wave')}, {plural(waves['candidates'], 'candidate')}; {rate}; {busy}"


def wave_caption(w: dict) -> str:
    """`Wave 3: 4 candidates on 2 local workers in 95 s, kept iter 8; near misses: iter 9; workers busy 83%`."""
    text = digest.wave_heading(w)
    text = text[:1].upper() + text[1:]
    if w["near_misses"]:
        text += "; near misses: " + ", ".join(f"iter {i}" for i in w["near_misses"])
    if w["utilisation_percent"] is not None:
        text += f"; workers busy {w['utilisation_percent']:g}%"
    if w["confirm_seed"] is not None:
        text += f"; confirmed on cv seed {w['confirm_seed']}"
    return text


def wave_rows(w: dict) -> list[list[str]]:
    """A wave's candidates side by side (the kept one is the `keep`; the near misses are marked)."""
    out = []
    for c in w["candidates"]:
        status = c["status"] + (" (near miss)" if c["near_miss"] else "")
        out.append(
            [str(c["iter"]), status, _delta(c) or "n/a", c["worker"] or "-", _v(c["seconds"], 1), c["description"]]
        )
    return out


def summary_lines(report: Report) -> list[tuple[str, str]]:
    d = report.digest
    per_iter = d["seconds_per_iteration"]
    return [
        ("task", f"{report.name} ({d['metric']}, {d['direction']} is better)"),
        ("device", digest.device_text(d)),
        ("candidate sandbox", d.get("sandbox") or "not recorded"),
        ("budget", f"{d['budget_seconds']:g} {d.get('budget_unit', 's')} per experiment"),
        ("iterations", str(d["iterations"])),
        ("kept / discarded / crashed", f"{d['kept']} / {d['discarded']} / {d['crashed'] + d['interrupted']}"),
        ("iterations per hour", str(d["iterations_per_hour"] or "n/a")),
        ("wall time", f"{d['hours']:.2f} h"),
        (
            "time per iteration",
            f"median {_v(per_iter['median'], 1)} s, slowest {_v(per_iter['max'], 1)} s,"
            f" {per_iter['total'] / 60:.1f} min scoring in all",
        ),
        ("model", (d.get("model_cost") or {}).get("line") or "no Claude Code session recorded for this run"),
        ("baseline", f"{_v(d['baseline'][d['metric']]) if d['baseline'] else 'n/a'}"),
        (
            "best (seen)",
            f"{_v(d['best'][d['metric']])} at iter {d['best']['iter']} "
            f"({_s(d['gain_over_baseline'])} over the baseline)"
            if d["best"]
            else "n/a",
        ),
    ]


def markdown(report: Report, files: dict[str, Path] | None = None) -> str:
    d, m = report.digest, report.config.metric
    lines = [f"## autoresearch run `{report.config.tag}` — {report.name}", ""]
    lines += [f"- **{k}**: {v}" for k, v in summary_lines(report)]
    lines += ["", "**Kept chain**", ""]
    for step in report.chain:
        e = step.entry
        lines.append(f"{e['iter']}. `{e['commit']}` {m} {_v(e[m])} {_delta(e)} — {e['description']}")
    lines += ["", "**What the gain is worth** (final commit minus baseline)"]
    for label, sentence in gain_lines(report):
        lines += ["", f"**{label}**: {sentence}"]
        if label == "Held-out audit" and report.heldout:
            h = report.heldout
            lines.append(f"(baseline {_v(h.baseline)} {_ci(h.baseline_ci)}, final {_v(h.final)} {_ci(h.final_ci)})")
    if d["near_misses"]:
        lines += ["", "**Near misses worth combining**: " + "; ".join(near_miss_text(r) for r in d["near_misses"])]
    if d["crash_causes"]:
        lines += ["", "**Crashes**: " + "; ".join(f"{c['count']}× {c['reason']}" for c in d["crash_causes"])]
    waves = d.get("waves")
    if waves and waves["waves"]:
        lines += ["", f"**Waves**: {waves_sentence(waves)}"]
        for w in waves["waves"]:
            lines += [
                "",
                f"{wave_caption(w)}",
                "",
                "| " + " | ".join(WAVE_HEADER) + " |",
                "|---" * len(WAVE_HEADER) + "|",
            ]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in wave_rows(w)]
    if files:
        lines += ["", "Files: " + ", ".join(f"`{p}`" for p in files.values())]
    return "\n".join(lines) + "\n"


# -- HTML -----------------------------------------------------------------------------------------------
STYLE = """
body{font:15px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1200px;margin:24px auto;
  padding:0 16px;color:#222}
h1{font-size:24px;margin-bottom:4px}
h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:10px 14px;border-radius:6px;margin:10px 0;border:1px solid}
.same{background:#fff8e1;border-color:#f0c36d} .better{background:#e8f5e9;border-color:#81c784}
.worse{background:#ffebee;border-color:#e57373} .plain{background:#f4f4f4;border-color:#ccc}
img.chart{width:100%;max-width:1200px;border:1px solid #ddd}
pre.diff{background:#fafafa;border:1px solid #e4e4e4;padding:8px;overflow-x:auto;font-size:12.5px;
  line-height:1.35}
pre.diff .add{color:#116329;background:#e6ffec} pre.diff .del{color:#82071e;background:#ffebe9}
pre.diff .hunk{color:#6f42c1}
.step{margin:18px 0} .muted{color:#777;font-size:13px}
"""


def _diff_html(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        if line.startswith(("diff --git", "index ", "--- ", "+++ ")):
            continue
        cls = (
            "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "hunk"
            if line.startswith("@@")
            else ""
        )
        text = html.escape(line)
        out.append(f'<span class="{cls}">{text}</span>' if cls else text)
    return "\n".join(out) or "(train.py unchanged)"


def _tone(sentence: str) -> str:
    if sentence.startswith("not distinguishable"):
        return "same"
    if sentence.startswith("better"):
        return "better"
    if sentence.startswith("worse") or "none of the seen gain" in sentence:
        return "worse"
    return "plain"


def _table(header: list[str] | None, rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""

    def cell(i: int, text: str) -> str:
        kind = ' class="num"' if i in numeric else ""
        return f"<td{kind}>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def experiments_table(rows: list[dict], metric: str) -> str:
    """Every row as a table (the report's and the live page's)."""
    return _table(
        ["iter", "status", metric, "Δ ± se", "seconds", "hypothesis"],
        [
            [
                r.get("iter", ""),
                r.get("status", ""),
                _v(parse_float(r.get(metric) or None)),
                _delta(
                    {"delta": parse_float(r.get("delta") or None), "delta_se": parse_float(r.get("delta_se") or None)}
                ),
                r.get("seconds", ""),
                r.get("description", ""),
            ]
            for r in rows
        ],
        {2, 4},
    )


def render_html(report: Report, chart: Path) -> str:
    d, m = report.digest, report.config.metric
    esc = html.escape
    image = base64.b64encode(chart.read_bytes()).decode("ascii")
    held, fresh = heldout_sentence(report), fresh_sentence(report)
    evidence = "".join(
        f'<div class="verdict {_tone(sentence)}"><b>{esc(label)}:</b> {esc(sentence)}</div>'
        for label, sentence in gain_lines(report)
    )
    parts = [
        f"<h1>autoresearch run {esc(report.config.tag)} — {esc(report.name)}</h1>",
        f'<p class="muted">branch autoresearch/{esc(report.config.tag)}'
        f" · started {esc(report.config.created)}"
        f" · base {esc(report.config.base[:7])}</p>",
        _table(None, [[k, v] for k, v in summary_lines(report)]),
        evidence,
        f'<img class="chart" alt="progress chart" src="data:image/png;base64,{image}">',
        "<h2>Kept chain</h2>",
    ]
    for step in report.chain:
        e = step.entry
        figures = f"{m} {_v(e[m])}" + (f" · {_delta(e)} (p={_v(e['p_value'], 3)})" if e["iter"] else "")
        figures += f" · held-out {_v(step.heldout)} · gap {_s(step.gap)} · {_v(e['seconds'], 1)} s"
        parts.append(
            f'<div class="step"><b>iter {e["iter"]}</b> <code>{esc(e["commit"] or "")}</code>'
            f" — {esc(e['description'])}"
            f'<br><span class="muted">{esc(figures)}</span>'
            + (f'<pre class="diff">{_diff_html(step.diff)}</pre>' if e["iter"] else "")
            + "</div>"
        )
    parts.append("<h2>Held-out audit</h2>")
    if report.heldout:
        h = report.heldout
        parts.append(
            _table(
                ["", f"held-out {audit.heldout_name(m)}", f"{audit.CONFIDENCE:.0%} CI"],
                [
                    ["baseline", _v(h.baseline), _ci(h.baseline_ci)],
                    ["final", _v(h.final), _ci(h.final_ci)],
                    ["final − baseline", _s(h.diff), _ci(h.diff_ci)],
                ],
                {1},
            )
        )
        parts.append(
            f'<p class="muted">paired bootstrap over the {h.items} held-out items, '
            f"{audit.BOOTSTRAP_RESAMPLES} resamples, seed {audit.BOOTSTRAP_SEED}</p>"
        )
    parts.append(f"<p>{esc(held)}</p>")
    parts.append(
        "<p>Validation minus held-out along the kept chain (a gap that grows step by step is the"
        " signature of fitting the validation folds):</p>"
    )
    parts.append(
        _table(
            ["iter", "commit", m, "held-out", "gap"],
            [
                [str(s.entry["iter"]), s.entry["commit"] or "", _v(s.entry[m]), _v(s.heldout), _s(s.gap)]
                for s in report.chain
            ],
            {2, 3, 4},
        )
    )
    parts.append("<h2>Fresh-fold re-measure</h2>")
    if report.fresh_baseline:
        rows = []
        for a, b in zip(report.fresh_baseline, report.fresh_final, strict=True):
            rows.append([str(a.cv_seed), _v(a.value), _v(b.value), _s(b.value - a.value), a.error or b.error])
        parts.append(_table(["cv seed", "baseline", "final", "final − baseline", "error"], rows, {1, 2, 3}))
    parts.append(f"<p>{esc(fresh)}</p>")
    parts.append("<h2>Near misses worth combining</h2>")
    if d["near_misses"]:
        parts.append(
            '<p class="muted">discarded, but within one standard error of a gain over the best of their time; '
            "seed-only edits left out, the same code shown once, the most promising first: "
            "<code>git show REF:train.py</code> to read one</p>"
        )
        parts.append(
            _table(
                ["iters", "Δ ± se", "p", "measured against", "ref", "hypothesis"],
                [
                    [
                        ", ".join(map(str, r.get("iters") or [r["iter"]])),
                        _delta(r),
                        _v(r["p_value"], 3),
                        digest.against_text(r),
                        r["ref"],
                        r["description"],
                    ]
                    for r in d["near_misses"]
                ],
            )
        )
    else:
        parts.append("<p>none</p>")
    parts.append("<h2>Crash causes</h2>")
    if d["crash_causes"]:
        parts.append(
            _table(
                ["count", "cause", "iters"],
                [[str(c["count"]), c["reason"], ", ".join(map(str, c["iters"]))] for c in d["crash_causes"]],
            )
        )
    else:
        parts.append("<p>none</p>")
    waves = d.get("waves")
    if waves and waves["waves"]:
        parts.append("<h2>Waves</h2>")
        parts.append(f"<p>{esc(waves_sentence(waves))}</p>")
        for w in waves["waves"]:
            parts.append(f"<p><b>{esc(wave_caption(w))}</b></p>")
            parts.append(_table(WAVE_HEADER, wave_rows(w), {4}))
    parts.append("<h2>Every experiment</h2>")
    parts.append(experiments_table(report.rows, m))
    body = "\n".join(parts)
    title = f"autoresearch {report.config.tag}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


# -- writing --------------------------------------------------------------------------------------------
def write(report: Report, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"chart": out / "progress.png", "html": out / "report.html", "markdown": out / "report.md"}
    progress_chart(report, files["chart"])
    _atomic_text(files["html"], render_html(report, files["chart"]))
    _atomic_text(files["markdown"], markdown(report, files))
    return files


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def runs_to_report(repo: Repo, tags: list[str] | None, all_runs: bool) -> list[tuple[RunConfig, Task]]:
    if all_runs:
        tags = [tag_of_branch(b) for b in repo.run_branches()]
    elif not tags:
        current = tag_of_branch(repo.branch())
        if not current:
            raise RunError("not on an autoresearch run branch; pass --tag TAG (repeatable) or --all")
        tags = [current]
    chosen = []
    for tag in tags:
        config = load_config(repo, tag) if tag else None
        if config is None:
            raise RunError(f"no run {tag!r} (no .git/autoresearch/{tag}/run.json)")
        chosen.append((config, find_task(repo, config.task)))
    if not chosen:
        raise RunError("no autoresearch runs in this repository")
    return chosen


def generate(
    repo: Repo,
    tags: list[str] | None = None,
    *,
    all_runs: bool = False,
    out: str | None = None,
    remeasure: bool = True,
    fresh_seeds: tuple[int, ...] = audit.FRESH_CV_SEEDS,
    echo: Callable[[str], None] = lambda _line: None,
) -> str:
    """Write the report of each chosen run; return the markdown summaries for the terminal. `echo` hears of
    the slow steps as they end, and of each run's live page (rewritten here too, from the same rows)."""
    runs = runs_to_report(repo, tags, all_runs)
    texts = []
    for config, task in runs:
        if out:
            folder = Path(out) / config.tag if all_runs or len(runs) > 1 else Path(out)
        else:
            folder = repo.root / REPORT_DIR / config.tag
        report = build(repo, config, task, remeasure=remeasure, fresh_seeds=fresh_seeds, echo=echo)
        files = write(report, folder.resolve())
        texts.append(markdown(report, files))
        page = watch.refresh(repo, config.tag)
        if page is not None:
            echo(f"live page (rewritten after each try): {page}")
    return "\n".join(texts)
