"""Frozen harness of the calibration task. Do not edit it: the ratchet refuses to score while it differs by a byte.

A task with known truth: its rows come from a fixed, seeded generator, so the TRUE score of any train.py is
measured on as many fresh rows from the same generator as wanted. It is the instrument that checks what the
ratchet claims (benchmarks/keep_rules.py; the report's "true gain" line), not a problem to be solved for its own
sake. Heart-sized on purpose: small data is where a noisy ratchet overstates.

How you are scored (the whole contract; program.md says how the loop runs):
- Data: 303 rows drawn by `generate(ROWS, DATA_SEED)` below: 13 numeric features (x01-x13; x02 and x09 have
  missing values, x07-x09 are small integers), binary target `y`. A few features matter, two of them through an
  interaction and one through a threshold; the rest are noise. A fixed, seeded, stratified 20% (61 rows) is
  held out: train.py never sees its labels, and its score goes only to the person's morning report.
- Metric: `val_auc` (ROC AUC, higher is better) by 5x5 repeated stratified cross-validation on the other 242
  rows, the same 25 folds for every candidate. `--truth-out` (the report's) fits train.py on the 242 rows and
  scores it on TRUTH_ROWS fresh rows: the true AUC, which no figure of the ratchet sees.
- What train.py gives: `feature_fn(df)` and `build_pipeline()` (train.py's docstring). Each fold runs in a
  fresh sandboxed process that gets that fold's training rows with labels and its evaluation rows without.
- Budget: as the heart task: 60 s of CPU time for the whole evaluation (a 240 s wall cap for sleeps). Past it: CRASH.
- Allowed: anything in the declared dependencies (scikit-learn, LightGBM, XGBoost CPU, FLAML). No network, no
  file but its own private /tmp, half the machine's memory.
- Kept when the run's keep rule (by default `corrected`: README.md, "The keep rule") says the gain over the 25
  fold scores is beyond noise, or equal within noise and smaller. Otherwise train.py goes back to the best.

    uv run tasks/calibration/train.py                                   score train.py, print the summary block
    uv run scripts/ratchet.py start TAG --task tasks/calibration        start a run on it
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from autoresearch.tabular import TabularTask, main

TASK = "calibration"
ROWS = 303  # the heart task's size: 242 development rows, 61 held out
DATA_SEED = 20261130  # the one draw every run of this task is scored on
TRUTH_ROWS = 100_000  # fresh rows for the true score: its standard error is about 0.002 AUC
TRUTH_SEED = 7  # never the data's seed: the truth rows are new draws from the same generator
N_FEATURES = 13
MISSING = {"x02": 0.06, "x09": 0.03}  # share of values missing at random, as `ca` and `thal` in heart


def true_logit(x: np.ndarray) -> np.ndarray:
    """The log-odds of y given the 13 raw features (columns x01..x13, before missing values are punched)."""
    x01, x02, x03, x04, x05, x06, x07, x08, x09 = (x[:, i] for i in range(9))
    return (
        1.5 * x01
        - 1.2 * x02
        + 1.4 * x03 * x04  # an interaction a linear model cannot see
        + 2.0 * (x05 > 0.6)  # a threshold
        + 0.8 * np.sin(2.0 * x06)
        + 1.3 * x07
        - 0.5 * x08
        + 1.0 * (x09 == 2)
        - 1.1
    )


def generate(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """`n` rows of the generator: features x01..x13 (with missing values) and the binary target y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]  # x02 correlates with x01, as clinical features do
    x[:, 6] = rng.random(n) < 0.45  # x07: a binary flag
    x[:, 7] = rng.integers(0, 4, n)  # x08: an ordinal 0..3
    x[:, 8] = rng.integers(0, 3, n)  # x09: a category 0..2
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit(x)))
    frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(1, N_FEATURES + 1)])
    for column, share in MISSING.items():
        frame.loc[rng.random(n) < share, column] = np.nan
    return frame, pd.Series(y.astype(int), name="y")


def load(path: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """The task's rows: always the same draw (`--data` has nothing to point at here)."""
    return generate(ROWS, DATA_SEED)


def fresh_rows(n: int = TRUTH_ROWS) -> tuple[pd.DataFrame, pd.Series]:
    """Rows no run has seen, for the true score."""
    return generate(n, TRUTH_SEED)


CALIBRATION = TabularTask(name=TASK, load=load, problem="binary", truth=fresh_rows)

if __name__ == "__main__":
    sys.exit(main(CALIBRATION, default_train=Path(__file__).resolve().parent / "train.py"))
