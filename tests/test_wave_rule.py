"""The wave's keep rule (keeprules.judge_wave), by hand: every candidate screened against the best, only the best
of those that pass confirmed on fresh folds, at most one kept, the other passes near misses, crashes never kept."""

from __future__ import annotations

import math

import pytest
from autoresearch import decide, keeprules
from autoresearch.keeprules import CRASH, DISCARD, KEEP, NEAR_MISS, WaveCandidate, judge_wave

BEST = [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.80, 0.84, 0.77]
NOISE = [0.01 * s for s in (1, -1, 1, -1, 1, -1, 1, -1, 1, -1)]  # zero-mean fold noise: se 0.0033 (plain)
SIZE = 100  # the best's code size; candidates of the same size unless a test says otherwise


def shifted(gain: float, noise: list[float] = NOISE) -> list[float]:
    return [b + gain + e for b, e in zip(BEST, noise, strict=True)]


def candidate(name: str, gain: float, size: int = SIZE) -> WaveCandidate:
    return WaveCandidate(name, shifted(gain), size)


class Fresh:
    """A confirm step: the fresh folds' scores of each candidate (by id) and of the best; records its calls."""

    def __init__(self, gains: dict[str, float]):
        self.gains, self.calls = gains, []

    def __call__(self, c: WaveCandidate) -> tuple[list[float], list[float]]:
        self.calls.append(c.id)
        return shifted(self.gains[c.id], NOISE[::-1]), BEST


def never(c: WaveCandidate):
    raise AssertionError(f"confirm called for {c.id} though nothing passed the screen")


def wave(candidates: list[WaveCandidate], confirm, rule: str = "paired", **kw) -> keeprules.WaveVerdict:
    return judge_wave(
        keeprules.rule_named(rule),
        candidates,
        BEST,
        higher_is_better=True,
        history=[],
        best_size=SIZE,
        confirm=confirm,
        **kw,
    )


def statuses(verdict: keeprules.WaveVerdict) -> dict[str, str]:
    return {j.id: j.status for j in verdict.judged}


@pytest.mark.parametrize("rule", ["paired", "corrected"])
def test_nothing_passes_the_screen_so_nothing_is_confirmed_or_kept(rule):
    verdict = wave([candidate("a", 0.0), candidate("b", -0.02), candidate("c", 0.001)], never, rule)
    assert verdict.kept is None and verdict.winner is None and verdict.confirmation is None
    assert statuses(verdict) == {"a": DISCARD, "b": DISCARD, "c": DISCARD}
    assert [j.reason for j in verdict.judged][:2] == ["not better", "not better"]
    assert verdict.judged[2].reason.startswith("gain within noise (p=")


@pytest.mark.parametrize("rule", ["paired", "corrected"])
def test_one_passes_and_is_confirmed(rule):
    fresh = Fresh({"gain": 0.03})
    verdict = wave([candidate("a", 0.0), candidate("gain", 0.03)], fresh, rule, where="fresh folds (seed 1003)")
    assert fresh.calls == ["gain"] and verdict.kept == "gain" and verdict.confirmation.keep
    assert statuses(verdict) == {"a": DISCARD, "gain": KEEP}
    kept = verdict.judged[1]
    assert kept.decision.keep and kept.reason.startswith("better beyond noise (p=")
    assert kept.reason.endswith(f", confirmed on fresh folds (seed 1003) (p={verdict.confirmation.p_value:.3f})")


def test_one_passes_and_fails_on_fresh_folds_a_near_miss():
    fresh = Fresh({"lucky": -0.005})
    verdict = wave([candidate("lucky", 0.03), candidate("b", -0.01)], fresh)
    assert fresh.calls == ["lucky"] and verdict.kept is None and verdict.winner == "lucky"
    assert not verdict.confirmation.keep and verdict.confirmation.reason == "not better"
    assert statuses(verdict) == {"lucky": NEAR_MISS, "b": DISCARD} and verdict.near_misses == ["lucky"]
    p = verdict.confirmation.p_value
    assert p > 0.9 and verdict.judged[0].reason == (
        f"better beyond noise (p=0.000) on the ratchet's folds, but not on fresh folds (p={p:.3f})"
    )


def test_two_pass_only_the_better_is_confirmed_the_other_is_a_near_miss():
    fresh = Fresh({"good": 0.02, "better": 0.04})
    verdict = wave([candidate("good", 0.02), candidate("better", 0.04), candidate("c", 0.0)], fresh)
    assert fresh.calls == ["better"] and verdict.kept == "better"
    assert statuses(verdict) == {"good": NEAR_MISS, "better": KEEP, "c": DISCARD}
    assert verdict.near_misses == ["good"]
    assert verdict.judged[0].reason.endswith("but better was the best of the wave (+0.0400)")
    # a winner that fails its confirmation does not pass the keep on to the runner-up: one test per wave
    fresh = Fresh({"good": 0.02, "better": 0.0})
    verdict = wave([candidate("good", 0.02), candidate("better", 0.04)], fresh)
    assert fresh.calls == ["better"] and verdict.kept is None and verdict.near_misses == ["good", "better"]


def test_a_crash_or_a_nan_never_wins():
    nan_best = WaveCandidate("nan", [math.nan] + shifted(0.5)[1:], SIZE)  # huge on every fold it scored
    crashed = WaveCandidate("crashed", [], 1)
    other_folds = WaveCandidate("short", shifted(0.5)[:4], SIZE)
    verdict = wave([nan_best, crashed, other_folds], never)
    assert verdict.kept is None and statuses(verdict) == {"nan": CRASH, "crashed": CRASH, "short": CRASH}
    assert all(j.decision is None for j in verdict.judged)
    assert verdict.judged[0].reason == "a score is not a number (NaN or infinite)"
    fresh = Fresh({"fine": 0.02})
    verdict = wave([nan_best, candidate("fine", 0.02), crashed], fresh)
    assert verdict.kept == "fine" and fresh.calls == ["fine"]
    # the winner crashing on the fresh folds is not kept (and not a near miss: it does not score there)
    verdict = wave([candidate("fine", 0.02)], lambda c: ([], BEST))
    assert verdict.kept is None and statuses(verdict) == {"fine": DISCARD} and verdict.confirmation is None
    assert verdict.judged[0].reason.endswith("but not scored on fresh folds: no scores (it crashed)")


def test_a_gain_beats_a_simpler_keep_and_a_tie_goes_to_the_smaller_code():
    simpler = candidate("simpler", 0.0, size=SIZE - 10)
    fresh = Fresh({"gain": 0.02, "simpler": 0.0, "small": 0.02})
    verdict = wave([simpler, candidate("gain", 0.02)], fresh)
    assert verdict.judged[0].decision.simpler and fresh.calls == ["gain"] and verdict.kept == "gain"
    assert verdict.near_misses == ["simpler"]
    fresh.calls.clear()
    verdict = wave([candidate("gain", 0.02), candidate("small", 0.02, size=SIZE - 1)], fresh)
    assert fresh.calls == ["small"] and verdict.kept == "small"


def test_a_simpler_winner_must_not_be_worse_on_fresh_folds():
    simpler = candidate("simpler", -0.001, size=SIZE - 10)
    verdict = wave([simpler, candidate("worse", -0.05, size=SIZE - 20)], Fresh({"simpler": 0.0}))
    assert verdict.kept == "simpler" and verdict.confirmation.simpler
    assert verdict.judged[0].reason == (
        f"equal within noise and simpler ({SIZE} -> {SIZE - 10} syntax nodes), confirmed on fresh folds "
        "(equal within noise)"
    )
    verdict = wave([simpler], Fresh({"simpler": -0.02}))
    assert verdict.kept is None and verdict.near_misses == ["simpler"]
    assert "on the ratchet's folds, but on fresh folds 0.0200 worse (more than 1 se," in verdict.judged[0].reason


def test_lower_is_better_and_no_confirm_step():
    loss = WaveCandidate("lower", shifted(-0.03), SIZE)
    higher = WaveCandidate("higher", shifted(0.03), SIZE)
    verdict = judge_wave(
        keeprules.rule_named("corrected"),
        [higher, loss],
        BEST,
        higher_is_better=False,
        history=[],
        best_size=SIZE,
        confirm=None,
    )
    assert verdict.kept == "lower" and verdict.confirmation is None
    assert verdict.judged[1].reason.endswith(", the best of 1 that passed")
    with pytest.raises(ValueError, match="keep rule rerun reruns a candidate"):
        judge_wave(
            keeprules.rule_named("rerun"), [loss], BEST, higher_is_better=False, history=[], best_size=1, confirm=None
        )


def test_the_screen_is_the_rules_own_judge():
    """The same scores, judged alone by `try` (rule.judge) and in a wave: the same decision."""
    rule = keeprules.rule_named("corrected")
    c = candidate("c", 0.008)
    verdict = wave([c], never, "corrected")
    alone = rule.judge(c.scores, BEST, higher_is_better=True, history=[], candidate_size=SIZE, best_size=SIZE)
    assert verdict.judged[0].decision == alone and not alone.keep  # within noise under the correction
    assert wave([c], Fresh({"c": 0.008}), "paired").kept == "c"  # beyond it without


def test_not_worse_by_hand():
    d = decide.not_worse(shifted(-0.003), BEST, True)  # 0.003 below, plain se 0.0033: within one se
    assert d.keep and d.simpler and d.delta == pytest.approx(-0.003)
    d = decide.not_worse(shifted(0.004), BEST, False)  # lower is better: 0.004 worse, beyond one se
    assert not d.keep and d.reason.startswith("0.0040 worse (more than 1 se, 0.0033)")
    with pytest.raises(ValueError, match="cannot pair"):
        decide.not_worse([0.8], BEST, True)
