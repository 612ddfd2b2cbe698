"""The candidate's side of the tabular trust boundary: the only process that imports train.py.

Run by the frozen harness as `python -m autoresearch.tabular_child TRAIN_PY IO_DIR`. It imports train.py
while the harness prepares the folds (both take seconds of imports), then reads from stdin the rows the
harness chose to show (training rows with labels, evaluation rows without), fits `build_pipeline()` on
`feature_fn(...)` fold by fold, and writes predictions as plain arrays (never a pickle: the harness does
not unpickle what candidate code wrote). Nothing here is trusted: the harness checks every array it reads.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import traceback
from pathlib import Path

import numpy as np


def load_candidate(path: Path):
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    for name in ("feature_fn", "build_pipeline"):
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"{path.name} must define {name}()")
    return module


def predict(module, problem: str, x_train, y_train, x_eval, n_classes: int = 0) -> np.ndarray:
    # A fresh copy per fit: a build_pipeline() that returns one shared (warm-started) object would otherwise
    # carry what it learned in one fold into the next, whose evaluation rows it has then already seen.
    from sklearn.base import clone

    model = module.build_pipeline()
    try:
        model = clone(model, safe=False)
    except Exception:  # noqa: BLE001 - an object clone cannot copy is used as built
        pass
    model.fit(module.feature_fn(x_train.copy()), y_train)
    features = module.feature_fn(x_eval.copy())
    if problem == "regression":
        return np.asarray(model.predict(features), dtype=float)
    proba = np.asarray(model.predict_proba(features), dtype=float)
    if problem == "multiclass":
        return all_classes(proba, getattr(model, "classes_", None), n_classes)
    return proba[:, 1]


def all_classes(proba: np.ndarray, seen, n_classes: int) -> np.ndarray:
    """One column per class of the task (codes 0..K-1): a class absent from a fit's rows gets probability 0."""
    if seen is None or proba.ndim != 2 or proba.shape[1] != len(seen) or len(seen) == n_classes:
        return proba  # the harness checks the shape; nothing to realign
    full = np.zeros((proba.shape[0], n_classes))
    full[:, np.asarray(seen, dtype=int)] = proba
    return full


def main(train_path: str, io_dir: str) -> None:
    io = Path(io_dir)
    module = load_candidate(Path(train_path))
    job = pickle.load(sys.stdin.buffer)
    x_dev, problem, n_classes = job["x_dev"], job["problem"], job.get("n_classes", 0)
    predictions = {}
    for k, (train_idx, y_train, eval_idx) in enumerate(job["folds"]):
        x_train, x_eval = x_dev.iloc[train_idx], x_dev.iloc[eval_idx]
        predictions[f"fold_{k}"] = predict(module, problem, x_train, y_train, x_eval, n_classes)
    if job.get("x_holdout") is not None:
        predictions["holdout"] = predict(module, problem, x_dev, job["y_dev"], job["x_holdout"], n_classes)
    np.savez(io / "predictions.npz", **predictions)


def report(exc: BaseException) -> None:
    """Print the traceback from train.py's frames on: the harness's own frames only hide the cause."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = [f for f in tb.stack if not f.filename.startswith("<frozen") and f.filename != __file__]
    tb.stack = traceback.StackSummary.from_list(frames)
    sys.stderr.write("".join(tb.format()))


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except Exception as exc:  # SystemExit and KeyboardInterrupt keep their own meaning
        report(exc)
        sys.exit(1)
