"""Keep rules against the truth: does what the ratchet keeps hold on new data? Prints one table.

The instrument is the calibration task (tasks/calibration): its rows come from a known generator, so the TRUE
AUC of any model is measured on 100,000 fresh rows. Each stream is one run of the ratchet on its own draw of
303 rows (split, folds and held-out fifth exactly as the harness makes them), driven by a random agent for
ITERATIONS edits: model families and hyper-parameters, feature tweaks, and seed-only edits. Every rule sees the
same agent (same random choices), so the streams differ between rules only by what each rule kept.

The agent's candidates are fitted here, in-process, on the harness's own folds: this is a replay of the
ratchet's decisions, not the CLI (4 rules x 5 streams x 100 iterations through the sandboxed CLI would take
about 10 hours on 2 cores). The decisions are the library's: `keeprules.rule_named(...).judge` and `.confirm`
on the fold scores, with the same history rows the ratchet passes. Fold scores are cached by (stream, edit,
folds) in CACHE, so a second run of the table costs seconds.

Printed per rule: keeps; seed-only edits kept (of those that changed the scores: the null edits); kept edits
that were worse in truth than the best they replaced; the gain the ratchet saw (best minus baseline on its
folds); the true gain of the final model over the baseline (both fitted on the development rows, scored on the
fresh rows); the share of the seen gain that is real (sum over streams of true / sum of seen); and the runs
that ended below their baseline in truth.

    uv run benchmarks/keep_rules.py [--streams 5] [--iterations 100] [--rules paired,corrected,...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per fit: the streams run in parallel processes

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from autoresearch import data, keeprules, tabular  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STREAMS = 5  # runs per rule, each on its own draw of the data
ITERATIONS = 100  # edits per run (the issue: at least 100 x 5 per rule)
STREAM_SEED_BASE = 1000  # stream s draws its rows with seed STREAM_SEED_BASE + s (never the task's DATA_SEED)
CONFIRM_SEED_BASE = 10_000  # the confirm step's fresh folds for iteration n: cv seed CONFIRM_SEED_BASE + n
RULES = ("paired", "corrected", "paired+confirm", "corrected+confirm")
CACHE = data.cache_dir() / "keep_rules_scores.json"  # fold scores by (stream, folds, edit): reruns are cheap

# The random agent's vocabulary. Interactions and bins are candidates a person might try; one of each is real.
PAIRS = (("x03", "x04"), ("x01", "x02"), ("x05", "x06"), ("x01", "x07"), ("x02", "x10"), ("x08", "x11"))
BINNED = ("x05", "x06", "x01", "x12")
THRESHOLDS = (-0.5, 0.0, 0.6, 1.2)
FEATURES = tuple(f"x{i:02d}" for i in range(1, 14))
FAMILIES = {
    "lr": {"C": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)},
    "rf": {"n_estimators": (50, 100), "max_depth": (3, 5, 8, None), "min_samples_leaf": (1, 3, 10)},
    "hgb": {"max_iter": (30, 60, 120), "learning_rate": (0.03, 0.1, 0.3), "max_depth": (2, 3, None)},
    "knn": {"n_neighbors": (5, 15, 35, 75)},
}
STOCHASTIC = ("rf", "hgb")  # families whose seed changes the fit (hgb through max_features)
EDIT_MIX = (("seed", 0.2), ("hyper", 0.35), ("family", 0.15), ("feature", 0.3))  # the agent's choice of edit


def calibration():
    spec = importlib.util.spec_from_file_location("calibration_prepare", ROOT / "tasks" / "calibration" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the edits, as plain data ------------------------------------------------------------------------------
BASELINE = {"family": "lr", "params": {"C": 1.0}, "pairs": [], "bins": [], "drop": [], "squares": False, "seed": 0}
# Two starts: the task's own baseline (train.py: real gains to find, one of them large) and a strong start that
# already has the interaction and the threshold (little left to find: what a rule keeps there is mostly noise,
# the regime of the heart task's own runs).
STARTS = {
    "baseline": BASELINE,
    "strong": {**BASELINE, "pairs": [["x03", "x04"]], "bins": ["x05"]},
}


def key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def size(config: dict) -> int:
    """The edit's code size, in the units the rule compares: each feature tweak and parameter is code."""
    return (
        40
        + 4 * len(config["pairs"])
        + 6 * len(config["bins"])
        + 3 * len(config["drop"])
        + 5 * config["squares"]
        + (2 * len(config["params"]))
    )


def propose(best: dict, rng: random.Random) -> tuple[dict, str]:
    """One random edit of the best: (the candidate, its kind)."""
    kinds, weights = zip(*EDIT_MIX, strict=True)
    kind = rng.choices(kinds, weights)[0]
    config = json.loads(key(best))
    if kind == "seed" and config["family"] not in STOCHASTIC:
        kind = "hyper"  # a seed does nothing to a deterministic model: the agent tries something else
    if kind == "seed":
        config["seed"] = rng.randrange(1, 10**6)
    elif kind == "hyper":
        name, values = rng.choice(list(FAMILIES[config["family"]].items()))
        config["params"][name] = rng.choice([v for v in values if v != config["params"].get(name)])
    elif kind == "family":
        family = rng.choice([f for f in FAMILIES if f != config["family"]])
        config["family"] = family
        config["params"] = {name: rng.choice(values) for name, values in FAMILIES[family].items()}
    else:
        what = rng.choice(("pairs", "bins", "drop", "squares"))
        if what == "squares":
            config["squares"] = not config["squares"]
        else:
            choices = {"pairs": [list(p) for p in PAIRS], "bins": list(BINNED), "drop": list(FEATURES)}[what]
            item = rng.choice(choices)
            config[what] = [c for c in config[what] if c != item] if item in config[what] else [*config[what], item]
            config[what].sort()
    return config, kind


def features(config: dict, x: pd.DataFrame) -> pd.DataFrame:
    """The edit's feature_fn: row-wise, as train.py's must be."""
    x = x.copy()
    for a, b in config["pairs"]:
        x[f"{a}*{b}"] = x[a] * x[b]
    for name in config["bins"]:
        for t in THRESHOLDS:
            x[f"{name}>{t}"] = (x[name] > t).astype(float)
    if config["squares"]:
        for name in FEATURES:
            x[f"{name}^2"] = x[name] ** 2
    return x.drop(columns=config["drop"])


def pipeline(config: dict):
    """The edit's build_pipeline()."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    params, seed = config["params"], config["seed"]
    family = config["family"]
    if family == "lr":
        return make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=2000, **params)
        )
    if family == "knn":
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), KNeighborsClassifier(**params))
    if family == "rf":
        return make_pipeline(SimpleImputer(strategy="median"), RandomForestClassifier(random_state=seed, **params))
    return HistGradientBoostingClassifier(max_features=0.8, early_stopping=False, random_state=seed, **params)


def fit_predict(config: dict, x_train: pd.DataFrame, y_train: np.ndarray, x_eval: pd.DataFrame) -> np.ndarray:
    model = pipeline(config)
    model.fit(features(config, x_train), y_train)
    return model.predict_proba(features(config, x_eval))[:, 1]


# -- one stream: a draw of the data, its folds, and a cache of every edit's scores ---------------------------
@dataclass
class Stream:
    index: int
    task: object  # the calibration TabularTask
    fresh: tuple  # (x, y) of the truth rows
    cache: dict
    x_dev: pd.DataFrame = field(init=False)
    y_dev: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        module = calibration()
        x, y = module.generate(module.ROWS, STREAM_SEED_BASE + self.index)
        x_dev, _, y_dev, _ = tabular.split(self.task, x, y)
        self.x_dev, self.y_dev = x_dev.reset_index(drop=True), y_dev.to_numpy()

    def scores(self, config: dict, cv_seed: int) -> list[float]:
        """The edit's fold scores on the folds of `cv_seed`, as the harness computes them."""
        from sklearn.metrics import roc_auc_score

        cache_key = f"{self.index}|{cv_seed}|{key(config)}"
        if cache_key not in self.cache:
            out = []
            for train, test in tabular.folds(self.task, pd.Series(self.y_dev), cv_seed):
                pred = fit_predict(config, self.x_dev.iloc[train], self.y_dev[train], self.x_dev.iloc[test])
                out.append(round(float(roc_auc_score(self.y_dev[test], pred)), 6))
            self.cache[cache_key] = out
        return self.cache[cache_key]

    def truth(self, config: dict) -> float:
        """The edit's true AUC: fitted on the development rows, scored on the fresh rows."""
        from sklearn.metrics import roc_auc_score

        cache_key = f"{self.index}|truth|{key(config)}"
        if cache_key not in self.cache:
            x_fresh, y_fresh = self.fresh
            pred = fit_predict(config, self.x_dev, self.y_dev, x_fresh)
            self.cache[cache_key] = round(float(roc_auc_score(y_fresh, pred)), 6)
        return self.cache[cache_key]


def rule_of(name: str) -> tuple[keeprules.KeepRule, bool]:
    base, _, confirm = name.partition("+")
    return keeprules.rule_named(base, cv_folds=5), confirm == "confirm"


def run(stream: Stream, rule_name: str, iterations: int, start: dict) -> dict:
    """One ratchet run: the agent proposes, the rule judges, the best moves. Returns the run's figures."""
    rule, confirms = rule_of(rule_name)
    rng = random.Random(f"agent-{stream.index}")  # the same agent for every rule
    best = start
    base_scores = stream.scores(best, 0)
    rows = [{"status": "keep", "fold_scores": ",".join(map(str, base_scores)), "iter": 0}]
    keeps = seed_tried = seed_kept = worse_in_truth = 0
    best_scores = base_scores
    for n in range(1, iterations + 1):
        candidate, kind = propose(best, rng)
        scores = stream.scores(candidate, 0)
        decision = rule.judge(
            scores,
            best_scores,
            higher_is_better=True,
            history=rows,
            candidate_size=size(candidate),
            best_size=size(best),
        )
        keep = decision.keep
        if keep and confirms and not decision.simpler:
            seed = CONFIRM_SEED_BASE + n
            keep = rule.confirm(stream.scores(candidate, seed), stream.scores(best, seed), higher_is_better=True).keep
        null = kind == "seed" and scores != best_scores
        seed_tried += null
        seed_kept += null and keep
        rows.append({"status": "keep" if keep else "discard", "fold_scores": ",".join(map(str, scores)), "iter": n})
        if keep:
            keeps += 1
            worse_in_truth += stream.truth(candidate) <= stream.truth(best)
            best, best_scores = candidate, scores
    seen = statistics.fmean(best_scores) - statistics.fmean(base_scores)
    true = stream.truth(best) - stream.truth(start)
    return {
        "keeps": keeps,
        "seed_tried": seed_tried,
        "seed_kept": seed_kept,
        "worse_in_truth": worse_in_truth,
        "seen": seen,
        "true": true,
        "final": best,
    }


def summarise(rule_name: str, runs: list[dict]) -> str:
    keeps = sum(r["keeps"] for r in runs)
    tried, kept = sum(r["seed_tried"] for r in runs), sum(r["seed_kept"] for r in runs)
    worse = sum(r["worse_in_truth"] for r in runs)
    seen, true = sum(r["seen"] for r in runs), sum(r["true"] for r in runs)
    below = sum(r["true"] < 0 for r in runs)
    real = f"{true / seen:>5.0%}" if seen > 0 else "  n/a"
    return (
        f"{rule_name:<18} {keeps:>5} {kept:>3}/{tried:<4} {kept / max(tried, 1):>5.1%} {worse:>3}/{keeps:<4}"
        f" {seen / len(runs):>+8.4f} {true / len(runs):>+8.4f} {real} {below:>3}/{len(runs)}"
    )


def load_cache(path: Path = CACHE) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_cache(cache: dict, path: Path = CACHE) -> None:
    """Written whole and renamed into place: a benchmark killed mid-write keeps the cache it had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, path)


def stream_job(args: tuple) -> tuple[int, dict, dict]:
    """All rules on one stream (a worker process): (stream index, runs by rule, new cache entries)."""
    index, rules, iterations, start, cache = args
    module = calibration()
    stream = Stream(index, module.CALIBRATION, module.fresh_rows(), dict(cache))
    runs = {rule: run(stream, rule, iterations, STARTS[start]) for rule in rules}
    return index, runs, {k: v for k, v in stream.cache.items() if k not in cache}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=STREAMS)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--start", choices=STARTS, default="baseline", help="the run's first best (see STARTS)")
    parser.add_argument("--workers", type=int, default=2, help="streams scored in parallel (one core each)")
    args = parser.parse_args()
    rules = args.rules.split(",")
    cache = load_cache()
    started, results = time.monotonic(), {rule: [] for rule in rules}
    from concurrent.futures import ProcessPoolExecutor

    jobs = [
        (s, rules, args.iterations, args.start, {k: v for k, v in cache.items() if k.startswith(f"{s}|")})
        for s in range(args.streams)
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        for index, runs, added in pool.map(stream_job, jobs):
            cache.update(added)
            save_cache(cache)
            for rule, figures in runs.items():
                results[rule].append(figures)
                print(
                    f"stream {index} {rule:<18} keeps {figures['keeps']:>2}  seen {figures['seen']:+.4f}  "
                    f"true {figures['true']:+.4f}",
                    flush=True,
                )
    print(f"\ncalibration task, start {args.start}: {args.streams} streams x {args.iterations} iterations per rule")
    header = ("rule", "keeps", "seed-only kept", "worse", "seen/run", "true/run", "real", "below")
    print("{:<18} {:>5} {:>14} {:>8} {:>8} {:>8} {:>5} {}".format(*header))
    for rule in rules:
        print(summarise(rule, results[rule]))
    print(f"seconds: {time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
