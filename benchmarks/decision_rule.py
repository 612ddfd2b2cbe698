"""How often does the keep rule keep noise, and how often does it keep a real gain? Prints figures.

Null edits: a stochastic model (random forest) whose only change is its seed, scored on the heart task's
25 repeated-CV folds exactly as the harness scores it. Each seed in turn is the candidate against the seed
before it as the best. Compared: the plain paired t-test, the corrected repeated-CV t (the default rule
since issue 11; decide.py) and karpathy's strict `>` on the mean of a single 5-fold CV. Power: the same null
pairs with a true gain of K standard errors added to every fold of the candidate (the paired noise stays as
measured).

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/decision_rule.py [--seeds 41] [--trees 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
from autoresearch import tabular
from autoresearch.decide import decide, paired_test
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

ROOT = Path(__file__).resolve().parents[1]
POWER_EFFECT_SE = 3.0  # the "real improvement of about 3 standard errors"


def heart_task():
    spec = importlib.util.spec_from_file_location("heart_prepare", ROOT / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HEART


def fold_scores(task, x_dev, y_dev, seed: int, trees: int) -> list[float]:
    scores = []
    for train, test in tabular.folds(task, y_dev, task.cv_seed):
        model = make_pipeline(SimpleImputer(), RandomForestClassifier(trees, random_state=seed, n_jobs=2))
        model.fit(x_dev.iloc[train], y_dev.iloc[train])
        scores.append(roc_auc_score(y_dev.iloc[test], model.predict_proba(x_dev.iloc[test])[:, 1]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=41, help="41 seeds give 40 null edits")
    parser.add_argument("--trees", type=int, default=100)
    args = parser.parse_args()
    task = heart_task()
    x, y = task.load(None)
    x_dev, _, y_dev, _ = tabular.split(task, x, y)
    started = time.monotonic()
    runs = [fold_scores(task, x_dev, y_dev, seed, args.trees) for seed in range(args.seeds)]
    pairs = list(zip(runs[1:], runs[:-1], strict=True))  # (candidate, best): each seed against the previous one
    lines = 100  # same code length: only the gain can keep
    paired_keeps = sum(decide(c, b, True, lines, lines).keep for c, b in pairs)
    strict_keeps = sum(np.mean(c[:5]) > np.mean(b[:5]) for c, b in pairs)  # single 5-fold CV, strict >
    ses = [paired_test(c, b, True)[1] for c, b in pairs]
    se = statistics.median(ses)
    shifted = [([s + POWER_EFFECT_SE * se for s in c], b) for c, b in pairs]
    power_keeps = sum(decide(c, b, True, lines, lines).keep for c, b in shifted)
    k = task.n_folds  # the corrected rule (Nadeau-Bengio): the same pairs, the variance widened for overlap
    corrected_keeps = sum(decide(c, b, True, lines, lines, cv_folds=k).keep for c, b in pairs)
    corrected_power = sum(decide(c, b, True, lines, lines, cv_folds=k).keep for c, b in shifted)
    n = len(pairs)
    print("---")
    print(f"null_edits:              {n}")
    print(f"model:                   random forest, {args.trees} trees, seed-only edits")
    print(f"paired_t_false_keep:     {paired_keeps / n:.3f}  ({paired_keeps}/{n})")
    print(f"strict_gt_5fold_keep:    {strict_keeps / n:.3f}  ({strict_keeps}/{n})")
    print(f"median_paired_se:        {se:.5f}")
    gain = POWER_EFFECT_SE * se
    print(f"keep_rate_at_{POWER_EFFECT_SE:g}se_gain:   {power_keeps / n:.3f}  ({power_keeps}/{n}, gain {gain:.4f} AUC)")
    print(f"corrected_t_false_keep:  {corrected_keeps / n:.3f}  ({corrected_keeps}/{n})")
    print(f"corrected_keep_rate_at_{POWER_EFFECT_SE:g}se: {corrected_power / n:.3f}  ({corrected_power}/{n})")
    print(f"seconds:                 {time.monotonic() - started:.1f}")


if __name__ == "__main__":
    main()
