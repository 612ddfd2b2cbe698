"""The held-out audit and the fresh-fold re-measure: what the morning report says about whether a gain is
real.

Held-out records come from `.git/autoresearch/<tag>/heldout.jsonl`, one per scored iteration, written by the
ratchet from the harness's `--private-out`. The audit is keyed by metric name, so any task fits:
- `heldout_<name>`: the held-out score (a float), e.g. `heldout_auc`, `heldout_bpb`;
- `heldout_true` + `heldout_pred`: per-row labels and predictions; intervals by a paired bootstrap over rows,
  scored with the tabular harness's `score("val_<name>", ...)`;
- or `heldout_<name>_values`: per-item values (e.g. bits per byte of each held-out text chunk) whose mean is
  the score; intervals by a paired bootstrap over items.
Nothing here is ever shown to the agent during a run: only the report reads these files.
"""

from __future__ import annotations

import io
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoresearch import proc, summary

BOOTSTRAP_RESAMPLES = 2000  # percentile CIs settle to ±0.002 AUC on 61 rows by ~1000; 2000 costs < 1 s
BOOTSTRAP_SEED = 0  # the report is reproducible: the same run gives the same intervals
CONFIDENCE = 0.95
FRESH_CV_SEEDS = (1, 2, 3)  # the ratchet scores on cv_seed 0; these folds were never used to keep anything
HELDOUT_FILE = "heldout.jsonl"


# -- held-out records -----------------------------------------------------------------------------------
def heldout_records(folder: Path) -> dict[int, dict]:
    """The run's held-out records by iteration (the last one wins if an iteration was recorded twice)."""
    records: dict[int, dict] = {}
    path = folder / HELDOUT_FILE
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            records[int(record["iter"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut short by a crash says nothing; the others still do
    return records


def heldout_name(metric: str) -> str:
    """`val_auc` → `auc`: the name the harness uses after `heldout_`."""
    return metric.removeprefix("val_")


def heldout_score(record: dict | None, metric: str) -> float:
    if not record:
        return math.nan
    return summary.parse_float(record.get(f"heldout_{heldout_name(metric)}"))


# -- statistics -----------------------------------------------------------------------------------------
def _auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of `scores` against the same row of labels `y` (rank formula, ties averaged)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def _resampled_scores(metric: str, record: dict, index: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap resample (rows of `index`); NaN where a resample cannot be scored."""
    name = heldout_name(metric)
    values = record.get(f"heldout_{name}_values")
    if values is not None:
        return np.asarray(values, dtype=float)[index].mean(axis=1)
    y, pred = np.asarray(record["heldout_true"]), np.asarray(record["heldout_pred"], dtype=float)
    if metric == "val_auc":
        return _auc_rows(y[index], pred[index])
    from autoresearch.tabular import score

    classes = np.arange(pred.shape[1]) if pred.ndim == 2 else None  # every class, present in these rows or not
    out = np.full(len(index), math.nan)
    for k, rows in enumerate(index):
        try:
            out[k] = score(metric, y[rows], pred[rows], classes)
        except ValueError:
            pass
    return out


def _items(record: dict, metric: str) -> int:
    values = record.get(f"heldout_{heldout_name(metric)}_values")
    return len(values) if values is not None else len(record.get("heldout_true") or [])


def can_bootstrap(record: dict | None, metric: str) -> bool:
    return bool(record) and _items(record, metric) > 1


def _interval(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass
class Comparison:
    """Baseline against final on the same held-out items; percentile intervals from a paired bootstrap."""

    metric: str
    items: int
    baseline: float
    baseline_ci: tuple[float, float]
    final: float
    final_ci: tuple[float, float]
    diff: float  # final - baseline
    diff_ci: tuple[float, float]
    higher_is_better: bool

    @property
    def verdict(self) -> str:
        return heldout_verdict(self.diff, *self.diff_ci, self.higher_is_better, self.items)


def compare(baseline: dict, final: dict, metric: str, higher_is_better: bool,
            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Comparison:  # fmt: skip
    """Paired bootstrap: both models are scored on the same resampled held-out items each time."""
    n = _items(baseline, metric)
    if n != _items(final, metric):
        raise ValueError(f"the two held-out records have {n} and {_items(final, metric)} items; not the same rows")
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    a, b = _resampled_scores(metric, baseline, index), _resampled_scores(metric, final, index)
    return Comparison(
        metric=metric, items=n,
        baseline=heldout_score(baseline, metric), baseline_ci=_interval(a),
        final=heldout_score(final, metric), final_ci=_interval(b),
        diff=heldout_score(final, metric) - heldout_score(baseline, metric), diff_ci=_interval(b - a),
        higher_is_better=higher_is_better,
    )  # fmt: skip


def heldout_verdict(diff: float, lo: float, hi: float, higher_is_better: bool, items: int) -> str:
    """The audit's sentence. 'not distinguishable' whenever the interval of the difference holds 0."""
    pct = f"{CONFIDENCE:.0%}"
    span = f"{diff:+.4f} ({pct} CI {lo:+.4f} to {hi:+.4f}, {items} held-out items)"
    if not all(math.isfinite(v) for v in (diff, lo, hi)):
        return "no verdict: the held-out difference could not be estimated"
    if lo <= 0 <= hi:
        return (
            f"not distinguishable: on held-out data the final model differs from the baseline by {span}; "
            "the interval includes 0, so the held-out data cannot tell them apart"
        )
    better = (lo > 0) == higher_is_better
    word = "better" if better else "worse"
    return f"{word} than the baseline on held-out data: {span}; the interval excludes 0"


# -- fresh folds ----------------------------------------------------------------------------------------
@dataclass
class FreshScore:
    commit: str
    cv_seed: int
    value: float
    fold_scores: list[float]
    error: str = ""


def score_on_fresh_folds(prepare: Path, source: str, commit: str, cv_seeds, data: str | None = None,
                         env: dict | None = None, timeout: float = 3600) -> list[FreshScore]:  # fmt: skip
    """Score `source` (train.py at `commit`) by the frozen harness on each CV seed; drop held-out output."""
    results = []
    with tempfile.TemporaryDirectory(prefix="autoresearch-fresh-") as tmp:
        train = Path(tmp) / "train.py"
        train.write_text(source)
        for seed in cv_seeds:
            cmd = [sys.executable, str(prepare), "--train", str(train), "--cv-seed", str(seed),
                   "--private-out", str(Path(tmp) / "discarded-heldout.json")]  # fmt: skip
            if data:
                cmd += ["--data", data]
            out, err = io.BytesIO(), io.BytesIO()
            result = proc.run_in_group(cmd, timeout=timeout, stdout=out, stderr=err, cwd=prepare.parent, env=env)
            block, error = summary.parse_block(out.getvalue().decode("utf-8", errors="replace")), ""
            if result.timed_out:
                block, error = {}, f"timed out after {timeout:g} s"
            elif result.returncode != 0 or block.get("status") != "ok":
                error = block.get("error") or proc.last_line(err.getvalue()) or "no output"
            metric = block.get("metric", "")
            results.append(FreshScore(
                commit=commit, cv_seed=seed,
                value=summary.parse_float(block.get(metric)) if not error else math.nan,
                fold_scores=summary.parse_floats(block.get("fold_scores")) if not error else [], error=error,
            ))  # fmt: skip
    return results


@dataclass
class FreshGain:
    seen: float  # final - baseline on the ratchet's own folds (cv_seed 0), sign as measured
    fresh: float  # the same difference on fresh folds, paired fold by fold
    fresh_se: float
    folds: int
    survived: float  # fresh / seen, in the improving direction; NaN when nothing was gained
    higher_is_better: bool

    @property
    def verdict(self) -> str:
        return fresh_verdict(self)


def fresh_gain(seen: float, baseline: list[FreshScore], final: list[FreshScore], higher_is_better: bool) -> FreshGain:
    diffs: list[float] = []
    for a, b in zip(baseline, final, strict=False):  # a seed may be missing from one side
        if not a.error and not b.error and len(a.fold_scores) == len(b.fold_scores):
            diffs += [y - x for x, y in zip(a.fold_scores, b.fold_scores, strict=True)]
    d = np.asarray(diffs)
    fresh = float(d.mean()) if len(d) else math.nan
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    sign = 1 if higher_is_better else -1
    survived = (sign * fresh) / (sign * seen) if math.isfinite(seen) and sign * seen > 0 else math.nan
    return FreshGain(seen, fresh, se, len(d), survived, higher_is_better)


def fresh_verdict(g: FreshGain) -> str:
    if not g.folds:
        return "no fresh-fold figures: the re-measure did not score"
    sign = 1 if g.higher_is_better else -1
    if not (math.isfinite(g.seen) and sign * g.seen > 0):
        return f"no gain was seen, so none can survive (fresh difference {g.fresh:+.4f} ± {g.fresh_se:.4f})"
    head = f"seen gain {g.seen:+.4f} on the ratchet's folds, {g.fresh:+.4f} ± {g.fresh_se:.4f} on {g.folds} fresh folds"
    if g.survived <= 0:
        return f"{head}: none of the gain survived"
    return f"{head}: {min(g.survived, 9.99):.0%} of the gain survived"
