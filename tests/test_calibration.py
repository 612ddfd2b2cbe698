"""The calibration task: a task with known truth, the instrument that checks what the ratchet claims.

Its rows come from a seeded generator, so a train.py's true AUC is measured on fresh rows from the same
generator; the harness gives it only through the report's hidden `--truth-out`, fitted in the sandbox like
every other job.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from autoresearch import contract
from conftest import ROOT, make_project

TASK = ROOT / "tasks" / "calibration"


def calibration():
    spec = importlib.util.spec_from_file_location("calibration_prepare", TASK / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TASK / "prepare.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_the_generator_is_fixed_heart_sized_and_its_truth_rows_are_new_draws():
    task = calibration()
    x, y = task.load()
    again, _ = task.load()
    assert x.equals(again)  # every run of the task is scored on the same rows
    assert x.shape == (303, 13) and set(y.unique()) == {0, 1}
    assert x["x02"].isna().any() and x["x09"].isna().any()  # missing values, as heart's ca and thal
    fresh_x, fresh_y = task.fresh_rows(2_000)
    assert not fresh_x.iloc[:303].equals(x)  # another seed: rows no run has seen
    assert 0.3 < fresh_y.mean() < 0.6


def test_the_true_logit_holds_signal_a_linear_model_cannot_reach():
    """The gap a good edit can close: the generator's own log-odds beat a logistic regression on fresh rows."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    task = calibration()
    x, y = task.load()
    fresh_x, fresh_y = task.fresh_rows(20_000)
    linear = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000)).fit(x, y)
    linear_auc = roc_auc_score(fresh_y, linear.predict_proba(fresh_x)[:, 1])
    bayes_auc = roc_auc_score(fresh_y, task.true_logit(np.nan_to_num(fresh_x.to_numpy())))
    assert bayes_auc > linear_auc + 0.05


def test_truth_out_scores_the_candidate_on_fresh_rows_and_the_capability_says_so(tmp_path):
    caps = contract.parse_capabilities(harness(contract.CAPABILITIES_FLAG).stdout)
    assert caps.truth and caps.fresh_folds
    out = tmp_path / "truth.json"
    run = harness("--truth-out", str(out))
    assert run.returncode == 0, run.stderr
    block = contract.Block.parse(run.stdout)
    truth = json.loads(out.read_text())
    assert truth["truth_rows"] == calibration().TRUTH_ROWS
    # the same baseline, fitted on 242 rows: its true AUC sits near (not at) what the folds estimate
    assert 0.6 < truth["true_auc"] < 0.9 and abs(truth["true_auc"] - block.value) < 0.1
    assert "true_auc" not in run.stdout  # the block, which the agent reads, never carries the truth


def test_a_task_without_a_generator_refuses_truth_out_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fixture_task" / "prepare.py"), "--truth-out", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "no true score" in run.stderr
    assert not (tmp_path / "t").exists()
    caps = contract.parse_capabilities(harness(contract.CAPABILITIES_FLAG).stdout)
    assert caps.truth  # and the fixture's own declaration says it has none
    fixture_caps = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fixture_task" / "prepare.py"), contract.CAPABILITIES_FLAG],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not contract.parse_capabilities(fixture_caps.stdout).truth


@pytest.mark.slow
def test_a_report_on_a_calibration_run_shows_the_true_gain_beside_the_seen_and_fresh_ones(tmp_path, env):
    """The instrument in use: a run on the calibration task, one real gain (the generator's interaction), and a
    report whose true gain is measured on fresh rows, next to what the ratchet saw and the fresh folds."""
    project = make_project(tmp_path / "repo", env, task=TASK)
    assert project.ratchet("start", "cal").returncode == 0
    train = project.path / "train.py"
    train.write_text(
        train.read_text().replace(
            "def feature_fn(df: pd.DataFrame) -> pd.DataFrame:\n    return df",
            'def feature_fn(df: pd.DataFrame) -> pd.DataFrame:\n    return df.assign(x34=df["x03"] * df["x04"])',
        )
    )
    tried = project.ratchet("try", "the interaction x03*x04")
    assert tried.returncode == 0 and "KEPT" in tried.stdout, tried.stdout + tried.stderr
    out = project.ratchet("report", "--out", str(tmp_path / "out"), "--fresh-seeds", "1", timeout=900)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "out" / "report.md").read_text()
    line = next(t for t in text.splitlines() if "true gain" in t.lower())
    assert "100000 fresh rows" in line or "100,000 fresh rows" in line
    gain = float(re.search(r"([+-]\d\.\d{4}) \(baseline", line).group(1))
    assert gain > 0.02  # the interaction is real: it holds on rows no run has seen
    assert "fresh folds of the same" in text  # the re-measure still says what it re-samples
