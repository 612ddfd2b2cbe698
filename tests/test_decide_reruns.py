"""The keep rule for tasks whose score moves between runs (keep_rule: rerun): keep, rerun or discard."""

from __future__ import annotations

import math
import random

import pytest
from autoresearch.decide import CALIBRATION_RUNS, MAX_RERUNS, decide_reruns, pooled_sd

BASELINE = [2.40, 2.42, 2.41]  # three runs of the best, lower is better
SD, DF = pooled_sd([BASELINE])


def test_pooled_sd_is_the_spread_within_groups():
    sd, df = pooled_sd([[1.0, 3.0], [10.0, 12.0, 14.0], [5.0]])
    assert df == 1 + 2
    assert sd == pytest.approx(math.sqrt((2 + 8) / 3))
    assert pooled_sd([[1.0], [2.0]]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_a_clear_gain_is_kept_after_one_run():
    decision = decide_reruns([2.30], BASELINE, higher_is_better=False, noise_sd=SD, noise_df=DF)
    assert decision.keep and not decision.rerun
    assert decision.delta == pytest.approx(2.30 - 2.41)


def test_a_small_gain_is_run_again_then_discarded_when_it_stays_within_noise():
    first = decide_reruns([2.405], BASELINE, higher_is_better=False, noise_sd=SD, noise_df=DF)
    assert first.rerun and not first.keep
    runs = [2.405, 2.408, 2.406]
    last = decide_reruns(runs, BASELINE, higher_is_better=False, noise_sd=SD, noise_df=DF)
    assert not last.keep and not last.rerun and "within noise" in last.reason


def test_a_worse_candidate_is_discarded_without_a_rerun():
    decision = decide_reruns([2.45], BASELINE, higher_is_better=False, noise_sd=SD, noise_df=DF)
    assert not decision.keep and not decision.rerun


def test_no_noise_estimate_is_an_error():
    with pytest.raises(ValueError, match="noise"):
        decide_reruns([2.3], [2.4], higher_is_better=False, noise_sd=math.nan, noise_df=0)


def test_null_edits_are_kept_at_most_five_percent_of_the_time():
    """Seed-only edits, simulated: the candidate's runs come from the same distribution as the best's."""
    rng = random.Random(0)
    kept, trials = 0, 4000
    for _ in range(trials):
        best = [rng.gauss(2.4, 0.02) for _ in range(CALIBRATION_RUNS)]
        sd, df = pooled_sd([best])
        runs = [rng.gauss(2.4, 0.02)]
        while True:
            decision = decide_reruns(runs, best, higher_is_better=False, noise_sd=sd, noise_df=df)
            if decision.rerun and len(runs) <= MAX_RERUNS:
                runs.append(rng.gauss(2.4, 0.02))
                continue
            kept += decision.keep
            break
    assert kept / trials <= 0.05


def test_equal_and_simpler_is_kept_within_the_cap_of_the_best_ever():
    args = dict(higher_is_better=False, noise_sd=SD, noise_df=DF, candidate_size=80, best_size=90)
    equal = decide_reruns([2.41, 2.41, 2.41], BASELINE, **args)
    assert equal.keep and equal.simpler and equal.reason == "equal within noise and simpler (90 -> 80 syntax nodes)"
    assert not decide_reruns([2.41, 2.41, 2.41], BASELINE, **dict(args, candidate_size=90)).keep  # not smaller
    # Within noise of the best it would replace, but more than one se (of the runs' spread) above the best ever:
    drifted = decide_reruns([2.42], [2.415], **args, best_ever=[2.40, 2.40, 2.40])
    assert decide_reruns([2.42], [2.415], **args).keep and not drifted.keep
    assert "below the best score kept in this run" in drifted.reason
