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
    unit: str = "items"  # what was resampled: "rows" of a table, "items" (e.g. text chunks) otherwise

    @property
    def verdict(self) -> str:
        return heldout_verdict(self.diff, *self.diff_ci, self.higher_is_better, self.items, self.unit)

    @property
    def detectable(self) -> float:
        """The smallest difference these held-out items could tell from 0: the half-width of the difference's
        interval. A true difference smaller than this usually gives an interval that holds 0."""
        lo, hi = self.diff_ci
        return (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else math.nan

    @property
    def detectable_text(self) -> str:
        return detectable_sentence(self.items, self.unit, self.detectable)


def detectable_sentence(items: int, unit: str, half_width: float) -> str:
    """What the audit can confirm, e.g. "61 held-out rows can only detect a difference larger than about ±0.035"."""
    if not math.isfinite(half_width):
        return f"{items} held-out {unit}: how small a difference they could detect is unknown"
    return (
        f"{items} held-out {unit} can only detect a difference larger than about ±{half_width:.3f} "
        f"(half the width of the difference's {CONFIDENCE:.0%} interval)"
    )


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
        unit="rows" if "heldout_pred" in baseline else "items",
    )


def heldout_verdict(diff: float, lo: float, hi: float, higher_is_better: bool, items: int, unit: str = "items") -> str:
    """The audit's sentence. 'not distinguishable' whenever the interval of the difference holds 0."""
    pct = f"{CONFIDENCE:.0%}"
    span = f"{diff:+.4f} ({pct} CI {lo:+.4f} to {hi:+.4f}, {items} held-out {unit})"
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


# -- the seen gain --------------------------------------------------------------------------------------
# A fraction of the seen gain is only worth printing when that gain stands out of its own noise. The se
# below is the keep rule's own (paired over the 5x5 folds), which understates the noise of overlapping folds
# (Nadeau & Bengio 2003): two of those standard errors, not one, before the report divides by the gain.
RATIO_MIN_SE = 2.0


@dataclass
class SeenGain:
    """Final minus baseline on the ratchet's own scores (cv_seed 0, or the runs of a between-run rule)."""

    gain: float  # sign as measured
    se: float  # NaN when the scores give no estimate
    how: str  # how the se was computed, for the report's reader

    def clear(self, higher_is_better: bool) -> bool:
        """Whether the gain is an improvement more than RATIO_MIN_SE standard errors from zero."""
        sign = 1 if higher_is_better else -1
        return math.isfinite(self.gain) and math.isfinite(self.se) and sign * self.gain > RATIO_MIN_SE * self.se

    @property
    def text(self) -> str:
        if not math.isfinite(self.gain):
            return "n/a"
        se = f" ± {self.se:.4f}" if math.isfinite(self.se) else " (no standard error)"
        return f"{self.gain:+.4f}{se} ({self.how})" if self.how else f"{self.gain:+.4f}{se}"


def seen_gain(
    baseline: dict, final: dict, rows: list[dict], metric: str, keep_rule: str | None, cv_folds: int | None = None
) -> SeenGain:
    """The seen gain and its standard error, from the rows as the ledger holds them: paired fold by fold for
    the paired rule (the same folds scored both), with the Nadeau-Bengio correction for overlapping folds for
    the corrected rule, from the pooled between-run noise for the rerun rule."""
    from autoresearch import decide, keeprules

    gain = summary.parse_float(final.get(metric) or None) - summary.parse_float(baseline.get(metric) or None)
    a, b = summary.parse_floats(baseline.get("fold_scores")), summary.parse_floats(final.get("fold_scores"))
    if (keep_rule or keeprules.DEFAULT) == keeprules.RunToRun.name:
        sd, _ = keeprules.noise(rows)
        if a and b and math.isfinite(sd):
            return SeenGain(gain, sd * math.sqrt(1 / len(a) + 1 / len(b)), "between-run noise of the run's rows")
        return SeenGain(gain, math.nan, "")
    if len(a) == len(b) and len(a) > 1:
        if keep_rule == keeprules.CorrectedFolds.name:
            k = cv_folds or keeprules.DEFAULT_CV_FOLDS
            delta, se, _ = decide.paired_test(b, a, higher_is_better=True, cv_folds=k)
            return SeenGain(delta, se, f"paired over {len(a)} fold scores, corrected for their overlap")
        delta, se, _ = decide.paired_test(b, a, higher_is_better=True)
        return SeenGain(delta, se, f"paired over {len(a)} fold scores")
    return SeenGain(gain, math.nan, "")


# -- fresh folds ----------------------------------------------------------------------------------------
@dataclass
class FreshScore:
    commit: str
    cv_seed: int
    value: float
    fold_scores: list[float]
    error: str = ""
    dev_rows: int | None = None  # the development rows the folds split (the harness's n_dev_rows)


def _run_harness(prepare: Path, args: list[str], data: str | None, env: dict | None, timeout: float):
    """The frozen harness, as the report runs it: this interpreter, its own process group, a hard timeout."""
    cmd = [sys.executable, str(prepare), *args] + (["--data", data] if data else [])
    out, err = io.BytesIO(), io.BytesIO()
    result = proc.run_in_group(cmd, timeout=timeout, stdout=out, stderr=err, cwd=prepare.parent, env=env)
    return result, out.getvalue(), err.getvalue()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


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
                    dev_rows=_int_or_none(block.fields.get("n_dev_rows")),
                )
            )
    return results


@dataclass
class FreshGain:
    """Final minus baseline re-scored on fresh folds OF THE SAME development rows. Each fold seed is one
    reshuffle of those rows; the folds within a seed (and across seeds) overlap, so their scores are not
    independent draws: the `±` is the spread between the seeds' mean gains, sd / sqrt(seeds)."""

    seen: SeenGain
    fresh: float  # mean over the seeds of each seed's mean paired difference (final - baseline)
    fresh_se: float  # sd between the seeds' mean differences / sqrt(seeds); NaN with one seed
    seeds: int  # fold seeds both commits scored on
    folds: int  # paired fold scores in all
    dev_rows: int | None  # how many development rows the folds reshuffle (None: the harness did not say)
    fraction: float  # fresh / seen in the improving direction; NaN unless the seen gain is clear of its se
    fraction_se: float
    higher_is_better: bool

    @property
    def survived(self) -> float:  # the name benchmarks/scripted_run.py reads
        return self.fraction

    @property
    def verdict(self) -> str:
        return fresh_verdict(self)


def fresh_gain(
    seen: SeenGain | float, baseline: list[FreshScore], final: list[FreshScore], higher_is_better: bool
) -> FreshGain:
    if not isinstance(seen, SeenGain):
        seen = SeenGain(float(seen), math.nan, "")
    seed_means: list[float] = []
    folds, rows = 0, None
    for a, b in zip(baseline, final, strict=False):  # a seed may be missing from one side
        if not a.error and not b.error and a.fold_scores and len(a.fold_scores) == len(b.fold_scores):
            diffs = [y - x for x, y in zip(a.fold_scores, b.fold_scores, strict=True)]
            seed_means.append(sum(diffs) / len(diffs))
            folds += len(diffs)
            rows = rows or a.dev_rows or b.dev_rows
    means = np.asarray(seed_means)
    fresh = float(means.mean()) if len(means) else math.nan
    fresh_se = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan
    fraction = fraction_se = math.nan
    if seen.clear(higher_is_better) and math.isfinite(fresh):
        fraction = fresh / seen.gain  # both in the metric's sign: the ratio is direction-free
        fraction_se = fresh_se / abs(seen.gain)
    return FreshGain(seen, fresh, fresh_se, len(means), folds, rows, fraction, fraction_se, higher_is_better)


def plus_minus(value: float, se: float, why_none: str = "") -> str:
    """`+0.0176 ± 0.0040`, or the value with the reason it has no ±."""
    if math.isfinite(se):
        return f"{value:+.4f} ± {se:.4f}"
    return f"{value:+.4f}" + (f" ({why_none})" if why_none else "")


def fresh_verdict(g: FreshGain) -> str:
    """What the re-measure supports, in words: what it re-samples, its ±, and a fraction of the seen gain only
    when that gain is clear of its own noise."""
    if not g.seeds:
        return "no fresh-fold figures: the re-measure did not score"
    rows = f"the same {g.dev_rows} development rows" if g.dev_rows else "the same development rows"
    spread = (
        f"sd between {g.seeds} fold seeds' mean gains / √{g.seeds}"
        if g.seeds > 1
        else "one fold seed: no spread between seeds to give a ±"
    )
    head = f"on fresh folds of {rows}: {plus_minus(g.fresh, g.fresh_se)} ({spread}, {g.folds} folds)"
    sign = 1 if g.higher_is_better else -1
    if not (math.isfinite(g.seen.gain) and sign * g.seen.gain > 0):
        share = f"no gain was seen ({g.seen.gain:+.4f}), so there is no share of it to hold"
    elif not math.isfinite(g.seen.se):
        share = f"the seen gain {g.seen.gain:+.4f} has no standard error to weigh it by: too small to tell"
    elif not g.seen.clear(g.higher_is_better):
        share = (
            f"the seen gain {plus_minus(g.seen.gain, g.seen.se)} is within {RATIO_MIN_SE:g} standard errors of "
            "zero: too small to tell how much of it holds"
        )
    elif sign * g.fresh <= 0:
        share = f"none of the seen gain {g.seen.gain:+.4f} holds there"
    else:
        pct = f"{g.fraction:.0%}" + (f" ± {g.fraction_se:.0%}" if math.isfinite(g.fraction_se) else "")
        share = f"{pct} of the seen gain {g.seen.gain:+.4f} holds there"
    caveat = "this catches lucky fold splits, not luck in which rows are in the development set"
    return f"{head}; {share}. ({caveat})"


# -- the true gain (a task whose data comes from a known generator) --------------------------------------
TRUTH_FLAG = "--truth-out"  # hidden harness flag: {"true_<metric>": float, "truth_rows": int} to this file


@dataclass
class TrueScore:
    value: float
    rows: int
    error: str = ""


@dataclass
class TrueGain:
    """Final minus baseline on rows drawn fresh from the task's generator: what the run really gained."""

    baseline: TrueScore
    final: TrueScore

    @property
    def gain(self) -> float:
        return self.final.value - self.baseline.value

    @property
    def text(self) -> str:
        problem = self.baseline.error or self.final.error
        if problem:
            return f"no true gain: {problem}"
        return f"{self.gain:+.4f} (baseline {self.baseline.value:.4f}, final {self.final.value:.4f})"

    @property
    def label(self) -> str:
        return f"true gain ({self.final.rows} fresh rows)" if not self.final.error else "true gain"


def read_truth(text: str, metric: str) -> TrueScore:
    """The JSON a harness wrote to --truth-out; a TrueScore with an error when it is not that."""
    try:
        found = json.loads(text)
        value, rows = float(found[f"true_{heldout_name(metric)}"]), int(found["truth_rows"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return TrueScore(math.nan, 0, f"the harness wrote no true_{heldout_name(metric)} and truth_rows")
    return TrueScore(value, rows)


def score_truth(
    prepare: Path,
    source: str,
    metric: str,
    data: str | None = None,
    env: dict | None = None,
    timeout: float = 3600,
) -> TrueScore:
    """`source`'s true score, by the frozen harness on fresh draws of its generator (`--truth-out`)."""
    with tempfile.TemporaryDirectory(prefix="autoresearch-true-") as tmp:
        train, path = Path(tmp) / "train.py", Path(tmp) / "truth.json"
        train.write_text(source)
        args = ["--train", str(train), TRUTH_FLAG, str(path), "--private-out", str(Path(tmp) / "discarded.json")]
        result, _, err = _run_harness(prepare, args, data, env, timeout)
        if result.timed_out:
            return TrueScore(math.nan, 0, f"the harness ran past {timeout:g} s scoring the true gain")
        text = path.read_text() if path.exists() else ""
    if result.returncode != 0 or not text:
        why = proc.last_line(err) or f"exit code {result.returncode}"
        return TrueScore(math.nan, 0, f"the harness could not score the true gain ({why})")
    return read_truth(text, metric)
