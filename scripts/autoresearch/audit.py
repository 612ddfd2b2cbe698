"""The held-out audit and the fresh-fold re-measure: what the morning report says about whether a gain is
real.

Held-out records come from `.git/autoresearch/<tag>/heldout.jsonl`, one per scored iteration, written by the
ratchet from the harness's `--private-out`. The audit is keyed by metric name, so any task fits:
- `heldout_<name>`: the held-out score (a float), e.g. `heldout_auc`, `heldout_bpb`;
- `heldout_pred`: per-row predictions; intervals by a paired bootstrap over rows, scored with the tabular
  harness's `score("val_<name>", ...)` against the labels, which no record holds: the task's frozen harness
  recomputes them from the data (`prepare.py --heldout-truth FILE`), checked against the recorded score
  (records written before that change carry `heldout_true` and are read as they are);
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
from autoresearch.contract import Block

BOOTSTRAP_RESAMPLES = 2000  # percentile CIs settle to ±0.002 AUC on 61 rows by ~1000; 2000 costs < 1 s
BOOTSTRAP_SEED = 0  # the report is reproducible: the same run gives the same intervals
CONFIDENCE = 0.95
FRESH_CV_SEEDS = (1, 2, 3)  # the ratchet scores on cv_seed 0; these folds were never used to keep anything
HELDOUT_FILE = "heldout.jsonl"
# Loading and splitting the data takes seconds; a download may add data.DOWNLOAD_TIMEOUT_SECONDS (60) and a
# cold interpreter on a busy machine tens more: 300 s is never reached by a harness that works.
TRUTH_TIMEOUT_SECONDS = 300
SCORE_TOLERANCE = 1e-9  # the same scorer on the same labels and JSON-exact predictions: only float noise differs


class TruthError(Exception):
    """The held-out labels could not be recomputed, or do not reproduce a recorded score; one line."""


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


# -- held-out labels, recomputed -----------------------------------------------------------------------
@dataclass
class Truth:
    labels: list  # encoded labels of the held-out rows, in the harness's split order
    classes: list | None  # the class names behind the codes; None for regression


def needs_truth(record: dict | None, metric: str) -> bool:
    """A record of per-row predictions with no labels beside them (every record since labels stopped being
    stored); per-item values and old records with `heldout_true` bootstrap on their own."""
    own = ("heldout_true", f"heldout_{heldout_name(metric)}_values")
    return bool(record) and "heldout_pred" in record and not any(key in record for key in own)


def recompute_truth(
    prepare: Path, data: str | None = None, env: dict | None = None, timeout: float = TRUTH_TIMEOUT_SECONDS
) -> Truth:
    """The held-out labels from the data, through the task's frozen harness; the file it writes them to is
    read and deleted at once. Raises TruthError with one line when the harness cannot give them."""
    with tempfile.TemporaryDirectory(prefix="autoresearch-truth-") as tmp:
        path = Path(tmp) / "truth.json"
        result, _, err = _run_harness(prepare, ["--heldout-truth", str(path)], data, env, timeout)
        try:
            text = path.read_text()
        except OSError:
            text = None
        finally:
            path.unlink(missing_ok=True)
    if result.timed_out:
        raise TruthError(f"the harness ran past {timeout:g} s recomputing the held-out labels")
    if result.returncode != 0 or text is None:
        why = proc.last_line(err) or f"exit code {result.returncode}, no labels written"
        raise TruthError(f"the harness could not recompute the held-out labels ({why})")
    try:
        found = json.loads(text)
        labels, classes = found["heldout_true"], found.get("heldout_classes")
        if not isinstance(labels, list) or not (classes is None or isinstance(classes, list)):
            raise TypeError
        np.asarray(labels, dtype=float)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise TruthError("the harness wrote held-out labels the report cannot read") from None
    return Truth(labels, classes)


def with_truth(record: dict, metric: str, truth: Truth) -> dict:
    """`record` with the recomputed labels beside its predictions, in memory only. The labels must reproduce
    the score the harness recorded from the labels it had then: otherwise the data or the split changed
    since the run, and an audit on other rows would be wrong without saying so."""
    from autoresearch.tabular import score

    try:
        pred = np.asarray(record["heldout_pred"], dtype=float)
    except (TypeError, ValueError):
        raise TruthError("a held-out record's predictions are not an array of numbers") from None
    if len(truth.labels) != len(pred):
        raise TruthError(
            f"the data now gives {len(truth.labels)} held-out rows, the run predicted {len(pred)}: the data "
            "or the split changed since the run"
        )
    if "heldout_classes" in record and record["heldout_classes"] != truth.classes:
        raise TruthError("the data now names other classes than the run recorded: the data changed since the run")
    classes = np.arange(len(truth.classes)) if truth.classes is not None else None
    recorded = heldout_score(record, metric)
    try:
        now = score(metric, np.asarray(truth.labels), pred, classes)
    except ValueError as exc:
        raise TruthError(f"the recomputed held-out labels cannot score the run's predictions ({exc})") from None
    if not math.isclose(now, recorded, rel_tol=SCORE_TOLERANCE, abs_tol=SCORE_TOLERANCE):
        raise TruthError(
            f"the held-out labels recomputed from the data give {heldout_name(metric)} {now:.4f} where the run "
            f"recorded {recorded:.4f}: the data or the split changed since the run"
        )
    return {**record, "heldout_true": truth.labels}


def complete_records(
    records: list[dict | None], metric: str, prepare: Path, data: str | None = None, env: dict | None = None
) -> list[dict | None]:
    """The records with labels for the bootstrap; the harness runs once, and only if a record needs it."""
    if not any(needs_truth(r, metric) for r in records):
        return records
    truth = recompute_truth(prepare, data, env)
    return [with_truth(r, metric, truth) if needs_truth(r, metric) else r for r in records]


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


def compare(
    baseline: dict,
    final: dict,
    metric: str,
    higher_is_better: bool,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """Paired bootstrap: both models are scored on the same resampled held-out items each time."""
    n = _items(baseline, metric)
    if n != _items(final, metric):
        raise ValueError(f"the two held-out records have {n} and {_items(final, metric)} items; not the same rows")
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    a, b = _resampled_scores(metric, baseline, index), _resampled_scores(metric, final, index)
    return Comparison(
        metric=metric,
        items=n,
        baseline=heldout_score(baseline, metric),
        baseline_ci=_interval(a),
        final=heldout_score(final, metric),
        final_ci=_interval(b),
        diff=heldout_score(final, metric) - heldout_score(baseline, metric),
        diff_ci=_interval(b - a),
        higher_is_better=higher_is_better,
    )


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


def _run_harness(prepare: Path, args: list[str], data: str | None, env: dict | None, timeout: float):
    """The frozen harness, as the report runs it: this interpreter, its own process group, a hard timeout."""
    cmd = [sys.executable, str(prepare), *args] + (["--data", data] if data else [])
    out, err = io.BytesIO(), io.BytesIO()
    result = proc.run_in_group(cmd, timeout=timeout, stdout=out, stderr=err, cwd=prepare.parent, env=env)
    return result, out.getvalue(), err.getvalue()


def score_on_fresh_folds(
    prepare: Path,
    source: str,
    commit: str,
    cv_seeds,
    data: str | None = None,
    env: dict | None = None,
    timeout: float = 3600,
) -> list[FreshScore]:
    """Score `source` (train.py at `commit`) by the frozen harness on each CV seed; drop held-out output."""
    results = []
    with tempfile.TemporaryDirectory(prefix="autoresearch-fresh-") as tmp:
        train = Path(tmp) / "train.py"
        train.write_text(source)
        for seed in cv_seeds:
            args = [
                "--train",
                str(train),
                "--cv-seed",
                str(seed),
                "--private-out",
                str(Path(tmp) / "discarded-heldout.json"),
            ]
            result, out, err = _run_harness(prepare, args, data, env, timeout)
            block, error = Block.parse(out.decode("utf-8", errors="replace")), ""
            if result.timed_out:
                block, error = Block(), f"timed out after {timeout:g} s"
            elif result.returncode != 0 or not block.ok:
                error = block.error or proc.last_line(err) or "no output"
            results.append(
                FreshScore(
                    commit=commit,
                    cv_seed=seed,
                    value=block.value if not error else math.nan,
                    fold_scores=block.fold_scores if not error else [],
                    error=error,
                )
            )
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
