"""The morning report: the audit's statistics and wording, and a real run reported end to end (chart, HTML
opened in a headless chromium, markdown), with the held-out figures kept out of what the agent sees."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from autoresearch import audit, report
from conftest import make_project

CHART_SHAPE = (int(report.CHART_INCHES[1] * report.CHART_DPI), int(report.CHART_INCHES[0] * report.CHART_DPI))
KEPT_GREEN = np.array([0x2C, 0xA0, 0x2C]) / 255  # report.py's kept colour, as matplotlib reads PNG pixels


# -- the audit's statistics and wording, on constructed inputs ------------------------------------------
def test_verdict_says_not_distinguishable_when_the_interval_holds_zero():
    words = audit.heldout_verdict(0.012, -0.02, 0.05, higher_is_better=True, items=61)
    assert words.startswith("not distinguishable")
    assert "includes 0" in words and "61 held-out items" in words


def test_verdict_names_the_direction_when_the_interval_excludes_zero():
    assert audit.heldout_verdict(0.04, 0.01, 0.07, True, 61).startswith("better than the baseline")
    assert audit.heldout_verdict(-0.04, -0.07, -0.01, True, 61).startswith("worse than the baseline")
    # lower is better (a loss, bits per byte): a negative difference is an improvement
    assert audit.heldout_verdict(-0.04, -0.07, -0.01, False, 61).startswith("better than the baseline")


def test_bootstrap_auc_matches_sklearn_and_pairs_the_resamples():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(50, 61))
    scores = rng.random((50, 61)) + 0.5 * y
    mine = audit._auc_rows(y, scores)
    assert np.allclose(mine, [roc_auc_score(a, b) for a, b in zip(y, scores, strict=True)])

    labels = rng.integers(0, 2, 61)
    pred = 0.5 * labels + rng.random(61)
    auc = roc_auc_score(labels, pred)
    same = {"heldout_auc": auc, "heldout_true": labels.tolist(), "heldout_pred": pred.tolist()}
    c = audit.compare(same, same, "val_auc", higher_is_better=True)
    assert c.diff == 0 and c.diff_ci == (0.0, 0.0)  # paired: the same model never differs from itself
    assert c.verdict.startswith("not distinguishable")
    assert c.baseline_ci[0] < c.baseline < c.baseline_ci[1]
    assert 0.05 < c.baseline_ci[1] - c.baseline_ci[0] < 0.4  # 61 rows: an interval of tenths


def test_clear_gain_on_many_rows_is_distinguishable_and_noise_on_61_is_not():
    rng = np.random.default_rng(2)

    def records(n: int, signal_b: float):
        y = rng.integers(0, 2, n)
        a, b = rng.random(n) + 0.6 * y, rng.random(n) + signal_b * y
        from sklearn.metrics import roc_auc_score

        def rec(p):
            return {"heldout_auc": roc_auc_score(y, p), "heldout_true": y.tolist(),
                    "heldout_pred": p.tolist()}  # fmt: skip

        return rec(a), rec(b)

    clear = audit.compare(*records(2000, 1.2), "val_auc", True)
    assert clear.diff_ci[0] > 0 and clear.verdict.startswith("better")
    noisy = audit.compare(*records(61, 0.65), "val_auc", True)
    assert noisy.diff_ci[0] < 0 < noisy.diff_ci[1] and noisy.verdict.startswith("not distinguishable")


def test_per_item_values_bootstrap_for_a_loss_metric():
    """The language-model task's shape: per-chunk bits per byte, lower is better, keyed by metric name."""
    rng = np.random.default_rng(3)
    base = rng.normal(1.60, 0.05, 40)
    base_rec = {"heldout_bpb": base.mean(), "heldout_bpb_values": base.tolist()}
    final_rec = {"heldout_bpb": (base - 0.05).mean(), "heldout_bpb_values": (base - 0.05).tolist()}
    c = audit.compare(base_rec, final_rec, "val_bpb", higher_is_better=False)
    assert c.items == 40 and c.diff == pytest.approx(-0.05)
    assert c.verdict.startswith("better than the baseline")


def test_fresh_gain_reports_the_fraction_that_survived():
    def scores(commit, values):
        return [audit.FreshScore(commit, seed, float(np.mean(v)), list(v))
                for seed, v in enumerate(values, 1)]  # fmt: skip

    base = scores("a", [[0.80, 0.82, 0.81], [0.79, 0.83, 0.80]])
    final = scores("b", [[0.81, 0.83, 0.82], [0.80, 0.84, 0.81]])
    g = audit.fresh_gain(0.02, base, final, higher_is_better=True)
    assert g.fresh == pytest.approx(0.01) and g.folds == 6
    assert g.survived == pytest.approx(0.5)
    assert "50% of the gain survived" in g.verdict
    lost = audit.fresh_gain(0.02, final, base, higher_is_better=True)
    assert "none of the gain survived" in lost.verdict


# -- the chart's direction, on constructed rows ----------------------------------------------------------
def constructed_report(higher_is_better: bool) -> report.Report:
    from autoresearch import digest
    from autoresearch.runs import RunConfig

    metric = "val_auc" if higher_is_better else "val_bpb"
    sign = 1 if higher_is_better else -1
    values = {0: 1.0, 1: 1.0 + 0.05 * sign, 2: 1.0 - 0.02 * sign, 3: None, 4: 1.0 + 0.12 * sign}
    status = {0: "keep", 1: "keep", 2: "discard", 3: "crash", 4: "keep"}
    rows = [{"iter": str(i), "commit": f"c{i}", metric: "" if v is None else str(v), "status": status[i],
             "description": f"edit {i}", "seconds": "10", "timestamp": f"2026-01-01T00:0{i}:00"}
            for i, v in values.items()]  # fmt: skip
    config = RunConfig("t", ".", "c0", metric, higher_is_better, 60.0, "2026-01-01T00:00:00")
    d = digest.digest(config, rows)
    chain = [report.Step(e, e["commit"], "", float("nan"), float("nan")) for e in d["kept_chain"]]
    return report.Report(config, None, rows, d, chain)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_chart_puts_better_up_for_either_direction(tmp_path, higher_is_better):
    import matplotlib.image

    path = report.progress_chart(constructed_report(higher_is_better), tmp_path / "p.png")
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == CHART_SHAPE
    green_rows, green_cols = np.nonzero(np.abs(pixels[..., :3] - KEPT_GREEN).max(axis=2) < 0.08)
    first = green_rows[green_cols <= green_cols.min() + 3].mean()  # the frontier's start: the baseline
    last = green_rows[green_cols >= green_cols.max() - 3].mean()  # its end: the final kept value
    assert last < first - 100  # the final value is drawn well above the baseline: better is up


# -- a real run, reported -------------------------------------------------------------------------------
WEAK_BASELINE = "    return df[['chol', 'fbs']]  # baseline: two weak features\n"
ALL_FEATURES = "    return df  # every feature <all 13>\n"


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, data_mirror):
    """A run through the real CLI: a weak baseline, a kept edit, a discarded edit, a crash; then reported."""
    import os

    base = tmp_path_factory.mktemp("report-run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "GIT_"))}
    env.update(AUTORESEARCH_DATA_MIRROR=str(data_mirror), AUTORESEARCH_CACHE=str(base / "cache"),
               PYTHONDONTWRITEBYTECODE="1")  # fmt: skip
    project = make_project(base / "repo", env)
    project.edit("    return df\n", WEAK_BASELINE)
    project.git("commit", "-qam", "a weak baseline the run can improve on")

    def ratchet(*args):
        out = project.ratchet(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout

    ratchet("start", "r1")
    project.edit(WEAK_BASELINE, ALL_FEATURES)
    assert "KEPT" in ratchet("try", "use all 13 features")
    project.edit(ALL_FEATURES, "    return df[['chol']]\n")
    assert "DISCARDED" in ratchet("try", "cholesterol alone")
    crash = "def build_pipeline():\n    raise RuntimeError('deliberate crash')\n"
    project.edit("def build_pipeline():\n", crash)
    assert "CRASH" in ratchet("try", "a pipeline that raises")
    out_dir = base / "out"
    terminal = ratchet("report", "--out", str(out_dir), "--fresh-seeds", "1")
    return project, out_dir, terminal


@pytest.mark.slow
def test_report_counts_chain_diffs_and_intervals(reported_run):
    project, out_dir, terminal = reported_run
    md = (out_dir / "report.md").read_text()
    assert terminal.strip() == md.strip()
    assert "**kept / discarded / crashed**: 1 / 1 / 1" in md
    assert "**iterations**: 3" in md
    chain = md.split("**Kept chain**")[1].split("**Held-out audit**")[0]
    assert "baseline: scaled logistic regression" in chain and "use all 13 features" in chain
    assert "cholesterol alone" not in chain and "a pipeline that raises" not in chain
    assert "deliberate crash" in md  # crash causes, grouped
    assert "CI" in md and "better than the baseline on held-out data" in md  # 2 weak features -> all 13
    assert "of the gain survived" in md

    page = (out_dir / "report.html").read_text()
    assert "every feature &lt;all 13&gt;" in page and "<all 13>" not in page  # the diff, escaped
    assert '<span class="del">-    return df[[&#x27;chol&#x27;, &#x27;fbs&#x27;]]' in page
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert "95% CI" in page and "Fresh-fold re-measure" in page and "Near misses" in page


@pytest.mark.slow
def test_progress_png_has_the_expected_size(reported_run):
    import matplotlib.image

    _, out_dir, _ = reported_run
    pixels = matplotlib.image.imread(out_dir / "progress.png")
    assert pixels.shape[:2] == CHART_SHAPE
    green = np.abs(pixels[..., :3] - KEPT_GREEN).max(axis=2) < 0.08
    assert green.sum() > 200  # the kept points and the frontier are drawn


@pytest.mark.slow
def test_heldout_figures_stay_out_of_status(reported_run):
    project, _, _ = reported_run
    out = project.ratchet("status", "--json")
    assert out.returncode == 0, out.stderr
    assert "heldout" not in out.stdout.lower()
    assert json.loads(out.stdout)["kept_chain"][-1]["description"] == "use all 13 features"
    assert "heldout" not in project.ratchet("status").stdout.lower()


@pytest.mark.slow
def test_no_remeasure_skips_the_fresh_folds(reported_run, tmp_path):
    project, _, _ = reported_run
    out = project.ratchet("report", "--all", "--out", str(tmp_path), "--no-remeasure")
    assert out.returncode == 0, out.stderr
    assert "skipped (--no-remeasure)" in out.stdout
    assert (tmp_path / "r1" / "progress.png").is_file()  # --all: one folder per run


def test_report_outside_a_run_is_one_line_error(project):
    out = project.ratchet("report")
    assert out.returncode == 2
    assert out.stderr.startswith("error: not on an autoresearch run branch") and out.stderr.count("\n") == 1
    assert project.status() == ""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_html_renders_in_headless_chromium_with_the_chart(reported_run, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    _, out_dir, _ = reported_run
    shot = tmp_path / "page.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           (out_dir / "report.html").as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.03  # text, tables and the chart, not a blank page
    green = np.abs(pixels - KEPT_GREEN).max(axis=2) < 0.08
    assert green.sum() > 100  # the chart's kept points and frontier made it onto the screen
