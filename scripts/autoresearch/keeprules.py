"""Keep rules as objects: a task's harness names its rule (`Capabilities.keep_rule`), `start` fixes the name in
the run record (or the one `start --keep-rule` names) and calibrates it (`calibration_runs` scorings of the
baseline), and `try` looks it up there to judge each candidate: keep, discard, or run again; and, in a run
started with `--confirm`, to confirm a gain on fresh folds. The statistics are decide.py's; a new rule is one
class here plus its entry in RULES.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

from autoresearch import decide, summary
from autoresearch.decide import Decision

KEEP, DISCARD, RUN_AGAIN = "keep", "discard", "run again"  # what `judge` can answer (`verdict_of`)
# Whether a run confirms a "better beyond noise" keep on fresh folds when `start` is given neither --confirm nor
# --no-confirm. Set from the keep-rule benchmark (issue 11); off until it says the cost is worth it.
DEFAULT_CONFIRM = False
DEFAULT_CV_FOLDS = 5  # k of a run recorded before `cv_folds` was (tabular.N_FOLDS, every tabular task's then)


class UnknownRule(ValueError):
    """A run record or a harness names a keep rule this library does not have."""


def verdict_of(decision: Decision) -> str:
    return RUN_AGAIN if decision.rerun else KEEP if decision.keep else DISCARD


class KeepRule(ABC):
    name: ClassVar[str]
    calibration_runs: ClassVar[int] = 1  # scorings of the baseline at `start` (seeds 0, 1, ...)
    needs_seeds: ClassVar[bool] = False  # whether it scores the same code again with `--seed N`
    needs_folds: ClassVar[bool] = False  # whether it pairs scores fold by fold (a tabular harness's folds)
    can_confirm: ClassVar[bool] = False  # whether it has a confirm step on fresh folds (`confirm`)

    @abstractmethod
    def judge(
        self,
        candidate: list[float],
        best: list[float],
        *,
        higher_is_better: bool,
        history: list[dict],
        candidate_size: int,
        best_size: int,
    ) -> Decision:
        """Compare the candidate's scores with the best's. `history`: the run's rows so far (for the noise
        estimate and the best score ever kept); sizes: decide.code_size of each one's train.py. The
        Decision's `verdict_of` is keep, discard or run again."""

    def confirm(self, candidate: list[float], best: list[float], *, higher_is_better: bool) -> Decision:
        """The screen's "beyond noise" test on fresh folds (no simpler branch): a kept gain stands only if
        this keeps it too."""
        raise NotImplementedError(f"keep rule {self.name} has no confirm step")


class FoldRule(KeepRule):
    """Both were scored on the same folds: a one-sided t-test on the per-fold differences, or equal within
    noise and simpler (decide.code_size) while within the loss cap of the best score ever kept."""

    needs_folds = True
    can_confirm = True

    def __init__(self, cv_folds: int | None = None):
        self.cv_folds = cv_folds or DEFAULT_CV_FOLDS  # folds per repeat (k); only the corrected test uses it

    def correction(self) -> int | None:
        """k for the corrected repeated-CV t-test; None for the plain paired t."""
        return None

    def judge(self, candidate, best, *, higher_is_better, history, candidate_size, best_size) -> Decision:
        return decide.decide(
            candidate,
            best,
            higher_is_better,
            candidate_size,
            best_size,
            best_ever=best_ever(history, higher_is_better, len(candidate)),
            cv_folds=self.correction(),
        )

    def confirm(self, candidate, best, *, higher_is_better) -> Decision:
        return decide.beyond_noise(candidate, best, higher_is_better, cv_folds=self.correction())


class PairedFolds(FoldRule):
    """The paired t-test over the J fold differences, as if they were independent (decide.paired_test)."""

    name = "paired"


class CorrectedFolds(FoldRule):
    """The corrected repeated-CV t-test (Nadeau & Bengio; Bouckaert & Frank): the variance of the mean
    difference is (1/J + 1/(k-1)) s^2, since the folds of a repeated k-fold CV share their training rows."""

    name = "corrected"

    def correction(self) -> int | None:
        return self.cv_folds


class RunToRun(KeepRule):
    """One training run is one draw of the noise: each scoring is one score, the noise is the spread between
    runs of the same code (pooled over every scored row's runs), and a candidate better within noise is run
    again, up to decide.MAX_RERUNS more times (decide.decide_reruns)."""

    name = "rerun"
    calibration_runs = decide.CALIBRATION_RUNS
    needs_seeds = True

    def judge(self, candidate, best, *, higher_is_better, history, candidate_size, best_size) -> Decision:
        sd, df = noise(history)
        return decide.decide_reruns(
            candidate,
            best,
            higher_is_better,
            sd,
            df,
            candidate_size,
            best_size,
            best_ever=best_ever(history, higher_is_better),
        )


def noise(rows: list[dict]) -> tuple[float, int]:
    """The between-run spread of the run's scored rows (each row's fold_scores are its runs): (sd, df)."""
    scored = [r for r in rows if r.get("status") in ("keep", "discard")]
    return decide.pooled_sd([summary.parse_floats(r.get("fold_scores")) for r in scored])


def best_ever(rows: list[dict], higher_is_better: bool, n_scores: int | None = None) -> list[float] | None:
    """The scores of the row with the best mean of all those kept in the run (the baseline counts), or None.
    `n_scores`: only rows with that many scores (the same folds as the candidate's)."""
    kept = []
    for row in rows:
        if row.get("status") != "keep":
            continue
        scores = summary.parse_floats(row.get("fold_scores"))
        if scores and all(map(math.isfinite, scores)) and (n_scores is None or len(scores) == n_scores):
            kept.append(scores)
    if not kept:
        return None
    sign = 1 if higher_is_better else -1
    return max(kept, key=lambda scores: sign * sum(scores) / len(scores))


RULES: dict[str, type[KeepRule]] = {rule.name: rule for rule in (PairedFolds, CorrectedFolds, RunToRun)}
DEFAULT = PairedFolds.name  # a run recorded before rules were named: judged as it was then


def rule_named(name: str | None, cv_folds: int | None = None) -> KeepRule:
    """The rule a run record (or a harness, or `start --keep-rule`) names; the default for a record that names
    none. `cv_folds`: k of the run's k-fold CV (DEFAULT_CV_FOLDS when not recorded); only fold rules use it."""
    rule = RULES.get(name or DEFAULT)
    if rule is None:
        raise UnknownRule(f"keep rule {name!r} is not one of {', '.join(RULES)}")
    return rule(cv_folds) if issubclass(rule, FoldRule) else rule()
