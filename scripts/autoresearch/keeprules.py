"""Keep rules as objects: a task's harness names its rule (`Capabilities.keep_rule`), `start` fixes the name in
the run record and calibrates it (`calibration_runs` scorings of the baseline), and `try` looks it up there to
judge each candidate: keep, discard, or run again. The statistics are decide.py's; a new rule is one class
here plus its entry in RULES.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from autoresearch import decide, summary
from autoresearch.decide import Decision

KEEP, DISCARD, RUN_AGAIN = "keep", "discard", "run again"  # what `judge` can answer (`verdict_of`)


class UnknownRule(ValueError):
    """A run record or a harness names a keep rule this library does not have."""


def verdict_of(decision: Decision) -> str:
    return RUN_AGAIN if decision.rerun else KEEP if decision.keep else DISCARD


class KeepRule(ABC):
    name: ClassVar[str]
    calibration_runs: ClassVar[int] = 1  # scorings of the baseline at `start` (seeds 0, 1, ...)
    needs_seeds: ClassVar[bool] = False  # whether it scores the same code again with `--seed N`

    @abstractmethod
    def judge(
        self,
        candidate: list[float],
        best: list[float],
        *,
        higher_is_better: bool,
        history: list[dict],
        candidate_lines: int,
        best_lines: int,
    ) -> Decision:
        """Compare the candidate's scores with the best's. `history`: the run's rows so far (for rules that
        estimate their noise from them). The Decision's `verdict_of` is keep, discard or run again."""


class PairedFolds(KeepRule):
    """Both were scored on the same folds: a one-sided paired t-test on the per-fold differences
    (decide.decide), or equal within noise and fewer lines."""

    name = "paired"

    def judge(self, candidate, best, *, higher_is_better, history, candidate_lines, best_lines) -> Decision:
        return decide.decide(candidate, best, higher_is_better, candidate_lines, best_lines)


class RunToRun(KeepRule):
    """One training run is one draw of the noise: each scoring is one score, the noise is the spread between
    runs of the same code (pooled over every scored row's runs), and a candidate better within noise is run
    again, up to decide.MAX_RERUNS more times (decide.decide_reruns)."""

    name = "rerun"
    calibration_runs = decide.CALIBRATION_RUNS
    needs_seeds = True

    def judge(self, candidate, best, *, higher_is_better, history, candidate_lines, best_lines) -> Decision:
        sd, df = noise(history)
        return decide.decide_reruns(candidate, best, higher_is_better, sd, df, candidate_lines, best_lines)


def noise(rows: list[dict]) -> tuple[float, int]:
    """The between-run spread of the run's scored rows (each row's fold_scores are its runs): (sd, df)."""
    scored = [r for r in rows if r.get("status") in ("keep", "discard")]
    return decide.pooled_sd([summary.parse_floats(r.get("fold_scores")) for r in scored])


RULES: dict[str, type[KeepRule]] = {rule.name: rule for rule in (PairedFolds, RunToRun)}
DEFAULT = PairedFolds.name  # a run recorded before rules were named: judged as it was then


def rule_named(name: str | None) -> KeepRule:
    """The rule a run record (or a harness) names; the default for a record that names none."""
    rule = RULES.get(name or DEFAULT)
    if rule is None:
        raise UnknownRule(f"keep rule {name!r} is not one of {', '.join(RULES)}")
    return rule()
