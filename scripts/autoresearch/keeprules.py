"""Keep rules as objects: a task's harness names its rule (`Capabilities.keep_rule`), `start` fixes the name in
the run record (or the one `start --keep-rule` names) and calibrates it (`calibration_runs` scorings of the
baseline), and `try` looks it up there to judge each candidate: keep, discard, or run again; and, in a run
started with `--confirm`, to confirm a gain on fresh folds. The statistics are decide.py's; a new rule is one
class here plus its entry in RULES.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from autoresearch import decide, summary
from autoresearch.decide import Decision

KEEP, DISCARD, RUN_AGAIN = "keep", "discard", "run again"  # what `judge` can answer (`verdict_of`)
# What a wave (judge_wave) says of a candidate besides keep and discard: passed the screen but was not the one
# kept (a near miss, to combine in the next wave), or had no usable scores (a crash or NaN: never kept).
NEAR_MISS, CRASH = "near miss", "crash"
# Whether a run confirms a "better beyond noise" keep on fresh folds when `start` is given neither --confirm nor
# --no-confirm. Set from the keep-rule benchmark (issue 11); off until it says the cost is worth it.
DEFAULT_CONFIRM = False
WAVE_SCREEN_RULE = "paired"  # a wave's screen, always followed by the confirm step (benchmarks/wave_rule.py)
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


# -- a wave of candidates: screen all, confirm the best ------------------------------------------------------
# Every candidate of a wave is screened against the wave's parent by the run's rule, on the ratchet's folds.
# Of those the screen keeps, only the best is confirmed, on fresh folds, and kept if it passes there too; the
# others are near misses. However many candidates a wave has, one test decides its keep: when the screen and
# the confirm are independent, a wave of candidates that are all noise keeps one with chance at most the
# rule's ALPHA (measured in benchmarks/wave_rule.py, where they are not quite independent: see the README).


@dataclass(frozen=True)
class WaveCandidate:
    id: str  # the caller's name for it (a commit, a branch)
    scores: list[float]  # fold scores on the ratchet's folds (the best's); empty when it crashed
    size: int  # decide.code_size of its train.py


@dataclass(frozen=True)
class WaveJudgement:
    id: str
    status: str  # KEEP, DISCARD, NEAR_MISS or CRASH
    reason: str  # one line, in the style of Decision.reason
    decision: Decision | None  # the screen's; None for a crash


@dataclass(frozen=True)
class WaveVerdict:
    judged: list[WaveJudgement]  # one per candidate, in the wave's order
    winner: str | None  # the candidate sent to the confirm step (None: nothing passed the screen)
    confirmation: Decision | None  # its test on fresh folds (None: not confirmed, or it did not score there)

    @property
    def kept(self) -> str | None:
        return next((j.id for j in self.judged if j.status == KEEP), None)

    @property
    def near_misses(self) -> list[str]:
        return [j.id for j in self.judged if j.status == NEAR_MISS]


# confirm(candidate) -> (the candidate's fresh fold scores, the best's on the same fresh folds): the caller
# scores both (a CV seed never used before in the run) and records the seed.
Confirm = Callable[[WaveCandidate], tuple[list[float], list[float]]]


def judge_wave(
    rule: KeepRule,
    candidates: list[WaveCandidate],
    best_scores: list[float],
    *,
    higher_is_better: bool,
    history: list[dict],
    best_size: int,
    confirm: Confirm | None,
    where: str = "fresh folds",
) -> WaveVerdict:
    """Screen each candidate against the best with `rule.judge`; confirm the best of those it keeps with
    `confirm` (None: keep it on the screen alone) and keep that one only if it holds on the fresh folds. The
    best: a gain beyond noise before an "equal within noise and simpler" keep, then the larger mean gain, then
    the smaller code. `where` names the fresh folds in the reasons (e.g. "fresh folds (seed 1003)")."""
    if rule.needs_seeds:
        raise ValueError(f"keep rule {rule.name} reruns a candidate; a wave needs a rule that judges fold scores")
    screened: dict[str, Decision] = {}
    crashed: dict[str, str] = {}
    for c in candidates:
        why = _unusable(c.scores, best_scores)
        if why:
            crashed[c.id] = why
            continue
        screened[c.id] = rule.judge(
            c.scores,
            best_scores,
            higher_is_better=higher_is_better,
            history=history,
            candidate_size=c.size,
            best_size=best_size,
        )
    passed = [c for c in candidates if c.id in screened and screened[c.id].keep]
    sign = 1 if higher_is_better else -1
    winner = max(passed, key=lambda c: (not screened[c.id].simpler, sign * screened[c.id].delta, -c.size), default=None)
    confirmation, kept, confirm_reason = None, False, ""
    if winner is not None:
        screen = screened[winner.id]
        if confirm is None:
            kept, confirm_reason = True, f"{screen.reason}, the best of {len(passed)} that passed"
        else:
            kept, confirmation, confirm_reason = _confirm_winner(rule, winner, screen, confirm, higher_is_better, where)
    judged = []
    for c in candidates:
        if c.id in crashed:
            judged.append(WaveJudgement(c.id, CRASH, crashed[c.id], None))
            continue
        decision = screened[c.id]
        if c is winner:
            status = KEEP if kept else NEAR_MISS if confirmation is not None else DISCARD
            judged.append(WaveJudgement(c.id, status, confirm_reason, decision))
        elif decision.keep:
            reason = f"{decision.reason}, but {winner.id} was the best of the wave ({screened[winner.id].delta:+.4f})"
            judged.append(WaveJudgement(c.id, NEAR_MISS, reason, decision))
        else:
            judged.append(WaveJudgement(c.id, DISCARD, decision.reason, decision))
    return WaveVerdict(judged, winner.id if winner else None, confirmation)


def _unusable(scores: list[float], best: list[float]) -> str:
    """Why a candidate's scores cannot be judged (a crash, a NaN, other folds); "" when they can."""
    if not scores:
        return "no scores (it crashed)"
    if not all(map(math.isfinite, scores)):
        return "a score is not a number (NaN or infinite)"
    if len(scores) != len(best):
        return f"scored on {len(scores)} folds, the best on {len(best)}"
    return ""


def _confirm_winner(
    rule: KeepRule,
    winner: WaveCandidate,
    screen: Decision,
    confirm: Confirm,
    higher_is_better: bool,
    where: str,
) -> tuple[bool, Decision | None, str]:
    """(kept, the fresh folds' decision, the reason) of the wave's best. A gain must be beyond noise there too
    (`rule.confirm`); an "equal and simpler" winner must not be worse there beyond noise (decide.not_worse): a
    wave picks it from several, so its "equal" is confirmed as a gain is."""
    fresh, best_fresh = confirm(winner)
    why = "the best has no usable scores there" if _unusable(best_fresh, best_fresh) else _unusable(fresh, best_fresh)
    if why:
        return False, None, f"{screen.reason} on the ratchet's folds, but not scored on {where}: {why}"
    if screen.simpler:
        fresh_decision = decide.not_worse(fresh, best_fresh, higher_is_better)
        there = "equal within noise" if fresh_decision.keep else fresh_decision.reason
        confirmed = f"{screen.reason}, confirmed on {where} ({there})"
        failed = f"{screen.reason} on the ratchet's folds, but on {where} {there}"
    else:
        fresh_decision = rule.confirm(fresh, best_fresh, higher_is_better=higher_is_better)
        p = f"p={fresh_decision.p_value:.3f}"
        confirmed = f"{screen.reason}, confirmed on {where} ({p})"
        failed = f"{screen.reason} on the ratchet's folds, but not on {where} ({p})"
    return fresh_decision.keep, fresh_decision, confirmed if fresh_decision.keep else failed
