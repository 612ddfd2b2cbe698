"""Frozen harness of the heart task. Do not edit it: the ratchet refuses to score while it differs by a byte.

How you are scored (the whole contract; program.md says how the loop runs):
- Data: UCI Heart Disease, Cleveland: 303 patients, 13 clinical features (NaN in `ca` and `thal`), target
  `num > 0`. A fixed, seeded, stratified 20% (61 rows) is held out: train.py never sees its labels, and its
  score goes only to the person's morning report.
- Metric: `val_auc` (ROC AUC, higher is better) by 5x5 repeated stratified cross-validation on the other 242
  rows, the same 25 folds for every candidate.
- What train.py gives: `feature_fn(df)` and `build_pipeline()` (train.py's docstring). Each fold runs in a
  fresh sandboxed process that gets that fold's training rows with labels and its evaluation rows without.
- Budget: 60 s of CPU time for the whole evaluation (25 folds and the held-out fit, all they start; a busy
  machine does not eat it), and 240 s of wall time for one that sleeps or hangs. Past either: CRASH.
- Allowed: anything in the declared dependencies (scikit-learn, LightGBM, XGBoost CPU, FLAML). The candidate
  has no network, no file but its own private /tmp, and half the machine's memory.
- Kept when the paired test over the 25 fold scores, corrected for their overlap, says the gain is beyond
  noise, or the score is equal within noise and the code smaller in syntax nodes (docstrings, comments and
  formatting do not count): the keep rule `corrected`, README.md, "The keep rule". Otherwise the ratchet
  puts train.py back to the best.

    uv run prepare.py --check-data     fetch (or find) the data, check it, cache it
    uv run prepare.py                  score train.py and print the summary block (same as `uv run train.py`)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from autoresearch import data
from autoresearch.tabular import TabularTask, main

TASK = "heart"
DATA_FILE = "processed.cleveland.data"
DATA_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/" + DATA_FILE
DATA_SHA256 = "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"  # UCI's 303-row file (18,461 bytes)
COLUMNS = "age sex cp trestbps chol fbs restecg thalach exang oldpeak slope ca thal num".split()
MIN_ROWS = 100  # the real file has 303; the tests' synthetic copies have fewer, a truncated download far fewer
TIME_BUDGET_SECONDS = 60  # CPU-s, whole evaluation of a candidate (26 fits); LogReg needs 1 s, RF(300) ~6 s
HOLDOUT_FRACTION = 0.2  # 61 of 303 rows held out for the morning audit
SPLIT_SEED = 42  # fixes the held-out rows for every run of this task
N_FOLDS = 5
N_REPEATS = 5  # single 5-fold CV moves 0.007-0.010 AUC between shuffles; 5x5 gives 25 paired scores
CV_SEED = 0  # the ratchet's folds; the report re-measures on fresh seeds


def read(path: Path) -> pd.DataFrame:
    """Read and check a Cleveland file; another file, or one edited by a byte, is a one-line DataError."""
    data.check_sha256(path, DATA_SHA256)
    try:
        frame = pd.read_csv(path, header=None, na_values="?", skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise data.DataError(f"{path}: not a Cleveland heart-disease file ({exc})") from exc
    if frame.shape[1] != len(COLUMNS):
        raise data.DataError(f"{path}: {frame.shape[1]} columns, expected {len(COLUMNS)}")
    if len(frame) < MIN_ROWS:
        raise data.DataError(f"{path}: {len(frame)} rows, expected at least {MIN_ROWS}")
    frame.columns = COLUMNS
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = (numeric.isna() & frame.notna()).any()
    if bad.any():
        raise data.DataError(f"{path}: non-numeric values in column(s) {', '.join(bad[bad].index)}")
    if not numeric["num"].isin(range(5)).all():
        raise data.DataError(f"{path}: target column num must be 0-4")
    return numeric


def load(path: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    source = data.resolve(TASK, DATA_FILE, DATA_URL, read, explicit=path)
    frame = read(source)
    return frame.drop(columns="num"), (frame["num"] > 0).astype(int).rename("target")


HEART = TabularTask(
    name=TASK,
    load=load,
    problem="binary",
    time_budget_seconds=TIME_BUDGET_SECONDS,
    holdout_fraction=HOLDOUT_FRACTION,
    split_seed=SPLIT_SEED,
    n_folds=N_FOLDS,
    n_repeats=N_REPEATS,
    cv_seed=CV_SEED,
)

if __name__ == "__main__":
    sys.exit(main(HEART, default_train=Path(__file__).resolve().parent / "train.py"))
