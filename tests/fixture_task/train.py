"""The one file the agent edits, in the test suite's fixture task: predict `target` from eight heart-like columns.

Same contract as the heart task's train.py: `feature_fn(df)` (row-wise, no labels; `ca` has NaN) and
`build_pipeline()` (an unfitted estimator with `fit` and `predict_proba`, refitted in every fold). The tests
edit the lines below by their exact text (the first occurrence): keep each of them, and nowhere else.
"""

import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HYPOTHESIS = "baseline: scaled logistic regression on the raw features"
C = 1.0  # inverse regularisation strength
MAX_ITER = 1000


def feature_fn(df: pd.DataFrame) -> pd.DataFrame:
    return df


def build_pipeline():
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))


if __name__ == "__main__":
    # Hand the run to the frozen harness in a fresh interpreter: the scorer never shares a process with this file.
    import os
    import sys

    harness = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prepare.py")
    os.execv(sys.executable, [sys.executable, harness, "--train", os.path.abspath(__file__), *sys.argv[1:]])
