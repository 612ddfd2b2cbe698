"""The one file the agent edits. Calibration task: predict `y` from 13 generated features.

What the frozen harness (prepare.py: data, metric, budget, keep rule) asks of this file, which it imports only
in a sandboxed process per fold:
- `feature_fn(df) -> DataFrame`: row-wise feature engineering on raw features (no labels). It is applied to
  training and evaluation rows separately in every fold; columns may contain NaN (`x02`, `x09`).
- `build_pipeline()` returns an unfitted estimator with `fit(X, y)` and `predict_proba(X)`; it is fitted
  anew in every fold, so anything learned from data (scaling, imputation, encoding) lives here.
- FLAML's `AutoML` needs NaN-free or DataFrame input. Printing, timing or scoring here changes nothing recorded.
Run by hand: `uv run tasks/calibration/train.py` prints the summary block.
"""

import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HYPOTHESIS = "baseline: scaled logistic regression on the raw features"
C = 1.0  # inverse regularisation strength
MAX_ITER = 1000  # lbfgs converges in well under this on 13 features


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
