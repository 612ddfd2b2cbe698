"""The keep rule: a candidate replaces the best only when its gain is beyond noise.

Both were scored on the same folds, so the test is paired: fold by fold differences, a one-sided t-test.
Measured on the heart task (benchmarks/decision_rule.py): strict `>` on the mean keeps about half of the
edits that change only a random seed; this rule keeps about 5%, the chance its significance level allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05  # one-sided significance level of the paired t-test: the false-keep rate on null edits
SIMPLER_TOLERANCE_SE = 1.0  # "equal within noise": the mean loss is at most this many standard errors


@dataclass
class Decision:
    keep: bool
    delta: float  # candidate minus best, in the metric's own units and sign
    se: float  # standard error of that mean difference
    p_value: float  # one-sided: chance of a gain this large from noise alone
    reason: str


def paired_test(candidate: list[float], best: list[float], higher_is_better: bool) -> tuple[float, float, float]:
    """(mean difference, its standard error, one-sided p-value for an improvement)."""
    n = len(candidate)
    diffs = [c - b for c, b in zip(candidate, best)]
    delta = sum(diffs) / n
    if n < 2:
        return delta, math.nan, math.nan
    var = sum((d - delta) ** 2 for d in diffs) / (n - 1)
    se = math.sqrt(var / n)
    gain = delta if higher_is_better else -delta
    if se == 0.0:
        return delta, 0.0, 0.0 if gain > 0 else 1.0
    from scipy.special import stdtr  # scipy.stats takes a second to import; this is the t CDF alone

    return delta, se, float(stdtr(n - 1, -gain / se))


def decide(
    candidate: list[float],
    best: list[float],
    higher_is_better: bool,
    candidate_lines: int,
    best_lines: int,
    alpha: float = ALPHA,
) -> Decision:
    """Keep if better beyond noise (paired one-sided t-test at `alpha`), or equal within noise and shorter."""
    if len(candidate) != len(best) or not candidate:
        raise ValueError(f"cannot pair {len(candidate)} scores with {len(best)}")
    delta, se, p = paired_test(candidate, best, higher_is_better)
    gain = delta if higher_is_better else -delta
    if len(candidate) < 2:  # a single score leaves no noise estimate: only a strict gain can count
        return Decision(gain > 0, delta, se, p, "better (single score)" if gain > 0 else "not better")
    if gain > 0 and p < alpha:
        return Decision(True, delta, se, p, f"better beyond noise (p={p:.3f})")
    within_noise = gain >= -SIMPLER_TOLERANCE_SE * se
    if within_noise and candidate_lines < best_lines:
        return Decision(True, delta, se, p, f"equal within noise and simpler ({best_lines} -> {candidate_lines} lines)")
    if gain > 0:
        return Decision(False, delta, se, p, f"gain within noise (p={p:.3f})")
    return Decision(False, delta, se, p, "not better")


def code_lines(source: str) -> int:
    """Lines that are neither blank nor comments: the measure of 'simpler'."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))
