"""The wave's keep rule (screen, then confirm) against seed-only edits and real gains. Prints figures.

A wave: a parent and WAVE_SIZE candidates, every candidate screened against the parent on the ratchet's folds,
the best of those that pass confirmed on fresh folds (keeprules.judge_wave). The instrument is
decision_rule.py's: the heart task's random forest, whose seed-only edits are null edits, scored on the
harness's 25 repeated-CV folds in-process; a real gain is one of those seed-only edits with POWER_EFFECT_SE
plain standard errors (the median paired se of the null pairs) added to every fold, on the screen's folds and
on the fresh ones alike (decision_rule.py's construction). Fresh folds: CV seed FRESH_CV_SEED on the same rows,
as the harness's confirm step draws them.

A pool of POOL seeds, each scored on both sets of folds (cached in CACHE): wave w has seed w as its parent and
the next WAVE_SIZE seeds (mod POOL) as candidates, so there are POOL waves, each seed the parent of one and a
candidate in WAVE_SIZE; the waves overlap (the figures are unbiased, their spread wider than independent
waves' would be). A gain wave is the null wave with its first candidate given the gain.

Printed, per rule (the tabular default `corrected`, and `paired`): the wave rule's share of null waves with a
keep, and of gain waves where the gain (or something else) was kept; the same without the confirm step; and
sequential `try` per edit (every candidate against its parent), with and without `start --confirm`.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/wave_rule.py [--pool 121] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import decision_rule  # the heart task and its random forest, scored as the harness scores it
import keep_rules  # its score cache
from autoresearch import data, harness, keeprules, tabular
from autoresearch.decide import paired_test
from autoresearch.keeprules import WaveCandidate, judge_wave

POOL = 121  # random-forest seeds 0..POOL-1, each scored on both sets of folds: POOL waves (27 min uncached)
WAVE_SIZE = 8  # candidates per wave (the issue's)
TREES = 100  # decision_rule.py's default forest
POWER_EFFECT_SE = decision_rule.POWER_EFFECT_SE  # the real gain, in plain standard errors (3)
FRESH_CV_SEED = harness.confirm_seed(1)  # the fresh folds: a CV seed the screen never uses (it uses task.cv_seed)
SIZE = 100  # every candidate's code size: a seed-only edit is never simpler, so only a gain can be kept
RULES = ("corrected", "paired")  # the tabular default, and the plain paired test the issue names
CACHE = data.cache_dir() / "wave_rule_scores.json"  # fold scores by (trees, cv seed, model seed)


def score_job(job: tuple[int, int, int]) -> tuple[str, list[float]]:
    """(cache key, fold scores) of the forest of one seed on the folds of one CV seed (a worker process)."""
    seed, cv_seed, trees = job
    task = decision_rule.heart_task()
    x, y = task.load(None)
    x_dev, _, y_dev, _ = tabular.split(task, x, y)
    return f"{trees}|{cv_seed}|{seed}", decision_rule.fold_scores(
        replace(task, cv_seed=cv_seed), x_dev, y_dev, seed, trees
    )


def pool_scores(pool: int, trees: int, workers: int) -> tuple[dict, int]:
    """Every seed of the pool scored on the screen's folds and the fresh ones: (the cache, scorings made now)."""
    cache = keep_rules.load_cache(CACHE)
    screen_seed = decision_rule.heart_task().cv_seed
    jobs = [(s, cv, trees) for cv in (screen_seed, FRESH_CV_SEED) for s in range(pool)]
    todo = [j for j in jobs if f"{j[2]}|{j[1]}|{j[0]}" not in cache]
    with ProcessPoolExecutor(workers) as ex:
        for k, v in ex.map(score_job, todo):
            cache[k] = v
            keep_rules.save_cache(cache, CACHE)
    return cache, len(todo)


Scores = dict[int, list[float]]


def waves(pool: int) -> list[tuple[int, list[int]]]:
    """(parent, candidates) of every wave: seed w and the WAVE_SIZE seeds after it."""
    return [(w, [(w + 1 + j) % pool for j in range(WAVE_SIZE)]) for w in range(pool)]


def plus(scores: list[float], gain: float) -> list[float]:
    return [s + gain for s in scores]


def judge(rule, screen: Scores, fresh: Scores, parent: int, seeds: list[int], gain: float, confirm: bool) -> str:
    """One wave (the first candidate given `gain`): the kept candidate's id, "gain", or "" for none."""

    def named(s: int, j: int) -> str:
        return "gain" if j == 0 and gain else f"seed {s}"

    candidates = [
        WaveCandidate(named(s, j), plus(screen[s], gain if j == 0 else 0.0), SIZE) for j, s in enumerate(seeds)
    ]
    by_id = {named(s, j): (s, gain if j == 0 else 0.0) for j, s in enumerate(seeds)}

    def rescore(c: WaveCandidate) -> tuple[list[float], list[float]]:
        seed, g = by_id[c.id]
        return plus(fresh[seed], g), fresh[parent]

    verdict = judge_wave(
        rule,
        candidates,
        screen[parent],
        higher_is_better=True,
        history=[],
        best_size=SIZE,
        confirm=rescore if confirm else None,
    )
    return verdict.kept or ""


def sequential(rule, screen: Scores, fresh: Scores, parent: int, seed: int, gain: float, confirm: bool) -> bool:
    """One `try` of `seed` (plus `gain`) against `parent`, with or without the confirm step, as loop.py does."""
    candidate = plus(screen[seed], gain)
    decision = rule.judge(
        candidate, screen[parent], higher_is_better=True, history=[], candidate_size=SIZE, best_size=SIZE
    )
    if not (decision.keep and confirm and not decision.simpler):
        return decision.keep
    return rule.confirm(plus(fresh[seed], gain), fresh[parent], higher_is_better=True).keep


def share(hits: int, n: int) -> str:
    return f"{hits / n:.3f}  ({hits}/{n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=POOL, help="seeds scored, and waves judged")
    parser.add_argument("--workers", type=int, default=2, help="scorings in parallel")
    args = parser.parse_args()
    if args.pool <= WAVE_SIZE:
        parser.error(f"--pool must exceed the wave size, {WAVE_SIZE}")
    started = time.monotonic()
    cache, scored = pool_scores(args.pool, TREES, args.workers)
    scoring = time.monotonic() - started
    screen_seed = decision_rule.heart_task().cv_seed
    screen = {s: cache[f"{TREES}|{screen_seed}|{s}"] for s in range(args.pool)}
    fresh = {s: cache[f"{TREES}|{FRESH_CV_SEED}|{s}"] for s in range(args.pool)}
    plan = waves(args.pool)
    pairs = [(parent, s) for parent, seeds in plan for s in seeds]
    se = statistics.median(paired_test(screen[s], screen[p], True)[1] for p, s in pairs)
    gain = POWER_EFFECT_SE * se
    n = len(plan)
    print("---")
    print(f"waves:                        {n} null, {n} with one real gain ({WAVE_SIZE} candidates each)")
    print(f"model:                        random forest, {TREES} trees, seed-only edits, heart task")
    print(f"folds:                        screen cv seed {screen_seed}, fresh cv seed {FRESH_CV_SEED} (same rows)")
    print(f"median_paired_se:             {se:.5f}")
    print(f"real_gain:                    {gain:.4f} AUC ({POWER_EFFECT_SE:g} plain se)")
    for name in RULES:
        rule = keeprules.rule_named(name, cv_folds=decision_rule.heart_task().n_folds)
        for confirm, label in ((True, "wave"), (False, "wave_no_confirm")):
            null = sum(bool(judge(rule, screen, fresh, p, seeds, 0.0, confirm)) for p, seeds in plan)
            kept = [judge(rule, screen, fresh, p, seeds, gain, confirm) for p, seeds in plan]
            print(f"{name}_{label}_false_keep_waves: {share(null, n)}")
            print(f"{name}_{label}_gain_kept:       {share(kept.count('gain'), n)}")
            print(f"{name}_{label}_other_kept:      {share(sum(k not in ('', 'gain') for k in kept), n)}")
        for confirm, label in ((False, "try"), (True, "try_confirm")):
            null = sum(sequential(rule, screen, fresh, p, s, 0.0, confirm) for p, s in pairs)
            waves_hit = sum(
                any(sequential(rule, screen, fresh, p, s, 0.0, confirm) for s in seeds) for p, seeds in plan
            )
            power = sum(sequential(rule, screen, fresh, p, seeds[0], gain, confirm) for p, seeds in plan)
            print(f"{name}_{label}_false_keep_per_edit: {share(null, len(pairs))}")
            print(f"{name}_{label}_waves_of_8_with_a_false_keep: {share(waves_hit, n)}")
            print(f"{name}_{label}_gain_kept:       {share(power, n)}")
        # Screen and confirm score the same rows: is a null edit that passed the screen more likely to pass the
        # confirm step than a fresh one (ALPHA)? Measured, not assumed.
        passed = [(p, s) for p, s in pairs if sequential(rule, screen, fresh, p, s, 0.0, False)]
        confirmed = sum(sequential(rule, screen, fresh, p, s, 0.0, True) for p, s in passed)
        print(f"{name}_null_confirmed_given_screen_passed: {share(confirmed, len(passed)) if passed else 'n/a (0/0)'}")
    print(f"scorings_this_run:            {scored} ({scoring:.0f} s; the rest from {CACHE.name})")
    print(f"seconds:                      {time.monotonic() - started:.1f}")


if __name__ == "__main__":
    main()
