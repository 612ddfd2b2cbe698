"""The morning report: the audit's statistics and wording, and a real run reported end to end (chart, HTML
opened in a headless chromium, markdown), with the held-out figures kept out of what the agent sees."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from autoresearch import audit, report, sandbox
from conftest import FIXTURE_DATA, RATCHET, fixture_rows, make_env, make_project

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
            return {"heldout_auc": roc_auc_score(y, p), "heldout_true": y.tolist(), "heldout_pred": p.tolist()}

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


def labelled_pair(n: int = 61, seed: int = 4):
    """Two held-out records as the harness writes them now (predictions, no labels) and their labels."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a, b = rng.random(n) + 0.3 * y, rng.random(n) + 0.9 * y
    records = [{"heldout_auc": roc_auc_score(y, p), "heldout_pred": p.tolist()} for p in (a, b)]
    return records, y.tolist()


def test_recomputed_labels_must_reproduce_the_recorded_score():
    records, y = labelled_pair()
    truth = audit.Truth(y, [0, 1])
    with_labels = [audit.with_truth(r, "val_auc", truth) for r in records]
    assert all(r["heldout_true"] == y for r in with_labels) and "heldout_true" not in records[0]  # in memory only
    flipped = audit.Truth(y[:-1] + [1 - y[-1]], [0, 1])  # one row's label changed in the data since the run
    with pytest.raises(audit.TruthError, match="recorded 0.*the data or the split changed"):
        audit.with_truth(records[0], "val_auc", flipped)
    with pytest.raises(audit.TruthError, match="60 held-out rows, the run predicted 61"):
        audit.with_truth(records[0], "val_auc", audit.Truth(y[:-1], [0, 1]))
    named = dict(records[0], heldout_classes=["benign", "malignant"])
    with pytest.raises(audit.TruthError, match="other classes"):
        audit.with_truth(named, "val_auc", audit.Truth(y, ["malignant", "benign"]))
    assert audit.with_truth(named, "val_auc", audit.Truth(y, ["benign", "malignant"]))["heldout_true"] == y
    with pytest.raises(audit.TruthError, match="not an array of numbers"):
        audit.with_truth(dict(records[0], heldout_pred=[[0.1], 0.2]), "val_auc", truth)


def test_records_that_carry_their_own_truth_never_run_the_harness(tmp_path):
    """Old records (labels stored) and per-item values (the language-model task) need no harness at all."""
    records, y = labelled_pair()
    old = [dict(r, heldout_true=y) for r in records]
    lm = [{"heldout_bpb": 1.6, "heldout_bpb_values": [1.5, 1.7]}] * 2
    missing = tmp_path / "no-such-prepare.py"  # running it would fail: these calls must not
    assert audit.complete_records([*old, None], "val_auc", missing) == [*old, None]
    assert audit.complete_records(lm, "val_bpb", missing) == lm
    with pytest.raises(audit.TruthError, match="could not recompute the held-out labels"):
        audit.complete_records(records, "val_auc", missing)


def fresh_scores(commit: str, per_seed: list[list[float]], rows: int = 242) -> list[audit.FreshScore]:
    return [
        audit.FreshScore(commit, seed, float(np.mean(v)), list(v), dev_rows=rows) for seed, v in enumerate(per_seed, 1)
    ]


def seeds_of_folds(rng, seeds: int = 3, folds: int = 25, level: float = 0.90, shift: float = 0.0):
    """Per-seed fold scores shaped like the heart task's 5x5 CV: a common level, fold noise of ±0.03."""
    return [list(level + shift + rng.normal(0, 0.03, folds)) for _ in range(seeds)]


def test_fresh_gain_takes_its_spread_from_the_seeds_and_says_what_it_resamples():
    base = fresh_scores("a", [[0.80, 0.82, 0.81], [0.79, 0.83, 0.80], [0.80, 0.80, 0.80]])
    final = fresh_scores("b", [[0.81, 0.83, 0.82], [0.80, 0.84, 0.81], [0.83, 0.83, 0.83]])
    seen = audit.SeenGain(0.04, 0.005, "paired over 25 fold scores")
    g = audit.fresh_gain(seen, base, final, higher_is_better=True)
    seed_means = [0.01, 0.01, 0.03]
    assert g.fresh == pytest.approx(np.mean(seed_means)) and g.seeds == 3 and g.folds == 9
    # the sd between the three seeds' mean gains over sqrt(3), not the sd of 9 overlapping folds over sqrt(9)
    assert g.fresh_se == pytest.approx(np.std(seed_means, ddof=1) / np.sqrt(3))
    assert g.fraction == pytest.approx(g.fresh / 0.04)
    words = g.verdict
    assert words.startswith("on fresh folds of the same 242 development rows: +0.0167 ± 0.0067")
    assert "sd between 3 fold seeds' mean gains / √3" in words
    assert "42% ± 17% of the seen gain +0.0400 holds there" in words
    assert "catches lucky fold splits, not luck in which rows are in the development set" in words
    assert "survived" not in words
    lost = audit.fresh_gain(seen, final, base, higher_is_better=True)
    assert "none of the seen gain" in lost.verdict and "%" not in lost.verdict
    one = audit.fresh_gain(seen, base[:1], final[:1], higher_is_better=True)
    assert "+0.0100 (one fold seed: no spread between seeds to give a ±, 3 folds)" in one.verdict


def test_a_gain_within_its_noise_is_too_small_to_tell():
    """The seen gain must stand 2 standard errors clear of zero before the report divides anything by it."""
    rng = np.random.default_rng(5)
    base_folds = [round(x, 6) for x in 0.90 + rng.normal(0, 0.03, 25)]
    # +0.0007 AUC over 25 folds whose paired differences spread ±0.004: a gain well inside its own noise
    tiny = [round(x + 0.0005 + 0.004 * (-1) ** k, 6) for k, x in enumerate(base_folds)]
    rows = [
        {
            "iter": "0",
            "status": "keep",
            "val_auc": str(np.mean(base_folds)),
            "fold_scores": ",".join(map(str, base_folds)),
        },
        {"iter": "3", "status": "keep", "val_auc": str(np.mean(tiny)), "fold_scores": ",".join(map(str, tiny))},
    ]
    seen = audit.seen_gain(rows[0], rows[1], rows, "val_auc", "paired")
    assert seen.gain == pytest.approx(np.mean(np.subtract(tiny, base_folds)))
    assert seen.how == "paired over 25 fold scores" and 0 < seen.gain < 2 * seen.se
    per_seed = seeds_of_folds(rng)
    g = audit.fresh_gain(seen, fresh_scores("a", per_seed), fresh_scores("b", per_seed, 242), True)
    g2 = audit.fresh_gain(
        seen, fresh_scores("a", per_seed), fresh_scores("b", [[x + 0.01 for x in v] for v in per_seed]), True
    )
    for verdict in (g.verdict, g2.verdict):
        assert "too small to tell" in verdict and "%" not in verdict
    assert math.isnan(g2.fraction)
    clear = audit.SeenGain(0.02, 0.004, "")
    assert (
        "too small to tell"
        not in audit.fresh_gain(clear, fresh_scores("a", per_seed), fresh_scores("b", per_seed), True).verdict
    )
    # lower is better: a loss that went down by 2.5 se is a clear gain; by 1.5 se it is not
    assert audit.SeenGain(-0.010, 0.004, "").clear(higher_is_better=False)
    assert not audit.SeenGain(-0.006, 0.004, "").clear(higher_is_better=False)


def test_heldout_audit_says_the_smallest_difference_it_can_detect():
    records, y = labelled_pair()
    labelled = [audit.with_truth(r, "val_auc", audit.Truth(y, [0, 1])) for r in records]
    c = audit.compare(*labelled, "val_auc", higher_is_better=True)
    lo, hi = c.diff_ci
    assert c.unit == "rows" and c.detectable == pytest.approx((hi - lo) / 2)
    assert 0.02 < c.detectable < 0.2  # 61 rows: a few hundredths at best
    assert c.detectable_text.startswith(
        f"61 held-out rows can only detect a difference larger than about ±{c.detectable:.3f}"
    )
    lm = audit.compare(*[{"heldout_bpb": 1.6, "heldout_bpb_values": [1.5, 1.7, 1.6]}] * 2, "val_bpb", False)
    assert lm.detectable_text.startswith("3 held-out items")


# -- the chart's direction, on constructed rows ----------------------------------------------------------
def constructed_report(higher_is_better: bool) -> report.Report:
    from autoresearch import digest
    from autoresearch.runs import RunConfig

    metric = "val_auc" if higher_is_better else "val_bpb"
    sign = 1 if higher_is_better else -1
    values = {0: 1.0, 1: 1.0 + 0.05 * sign, 2: 1.0 - 0.02 * sign, 3: None, 4: 1.0 + 0.12 * sign}
    status = {0: "keep", 1: "keep", 2: "discard", 3: "crash", 4: "keep"}
    rows = [
        {
            "iter": str(i),
            "commit": f"c{i}",
            metric: "" if v is None else str(v),
            "status": status[i],
            "description": f"edit {i}",
            "seconds": "10",
            "timestamp": f"2026-01-01T00:0{i}:00",
        }
        for i, v in values.items()
    ]
    config = RunConfig("t", ".", "c0", metric, higher_is_better, 60.0, "2026-01-01T00:00:00")
    d = digest.digest(config, rows)
    chain = [report.Step(e, e["commit"], "", float("nan"), float("nan")) for e in d["kept_chain"]]
    return report.Report(config, None, rows, d, chain)


def test_markdown_gives_each_kind_of_evidence_a_line_with_room_for_the_true_gain():
    """Real-shaped inputs (25 fold scores per seed, 61 held-out rows) through the markdown the terminal shows."""
    rng = np.random.default_rng(6)
    r = constructed_report(True)
    assert report.chart_title(r) == ". · run t: 4 experiments, 2 kept improvements"
    r.digest["kept"] = 1
    assert report.chart_title(r).endswith("4 experiments, 1 kept improvement")
    r.seen = audit.SeenGain(0.0217, 0.006, "paired over 25 fold scores")
    base = seeds_of_folds(rng)
    final = [[x + 0.017 + rng.normal(0, 0.004) for x in v] for v in base]
    r.fresh_seeds = (1, 2, 3)
    r.fresh = audit.fresh_gain(r.seen, fresh_scores("a", base), fresh_scores("b", final), True)
    records, y = labelled_pair()
    r.heldout = audit.compare(
        *[audit.with_truth(x, "val_auc", audit.Truth(y, [0, 1])) for x in records], "val_auc", True
    )
    md = report.markdown(r)
    lines = md.split("**What the gain is worth**")[1].splitlines()
    labels = [line.split("**")[1] for line in lines if line.startswith("**")]
    assert labels[:4] == ["Seen gain", "Fresh folds (cv seeds 1, 2, 3)", "Held-out audit", "Crashes"]
    [fresh] = [line for line in lines if line.startswith("**Fresh folds")]
    assert "on fresh folds of the same 242 development rows: +0.01" in fresh and "of the seen gain +0.0217" in fresh
    [held] = [line for line in lines if line.startswith("**Held-out audit")]
    assert "61 held-out rows can only detect a difference larger than about ±0.0" in held
    assert "**Seen gain**: +0.0217 ± 0.0060 (paired over 25 fold scores) on the ratchet's own folds" in md

    # the calibration task's harness can score the true metric on fresh draws: one more line, last
    truth = audit.read_truth('{"true_auc": 0.8125, "truth_rows": 100000}', "val_auc")
    r.truth = audit.TrueGain(audit.TrueScore(0.8050, 100000), truth)
    assert report.gain_lines(r)[-1] == ("True gain (100000 fresh rows)", "+0.0075 (baseline 0.8050, final 0.8125)")
    assert "**True gain (100000 fresh rows)**: +0.0075" in report.markdown(r)
    broken = audit.read_truth('{"true_bpb": 1.2}', "val_auc")
    assert broken.error == "the harness wrote no true_auc and truth_rows"
    assert audit.TrueGain(broken, broken).text.startswith("no true gain: ")


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
ALL_FEATURES = "    return df  # every feature <all 8>\n"


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, data_mirror):
    """A run through the real CLI: a weak baseline, a kept edit, a discarded edit, a crash; then reported."""
    base = tmp_path_factory.mktemp("report-run")
    project = make_project(base / "repo", make_env(data_mirror, base / "cache"))
    project.edit("    return df\n", WEAK_BASELINE)
    project.git("commit", "-qam", "a weak baseline the run can improve on")

    def ratchet(*args):
        out = project.ratchet(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout

    ratchet("start", "r1")
    project.edit(WEAK_BASELINE, ALL_FEATURES)
    assert "KEPT" in ratchet("try", "use all 8 features")
    project.edit(ALL_FEATURES, "    return df[['chol']]\n")
    assert "DISCARDED" in ratchet("try", "cholesterol alone")
    crash = "def build_pipeline():\n    raise RuntimeError('deliberate crash')\n"
    project.edit("def build_pipeline():\n", crash)
    assert "CRASH" in ratchet("try", "a pipeline that raises")
    out_dir = base / "out"
    done = project.ratchet("report", "--out", str(out_dir), "--fresh-seeds", "1")
    assert done.returncode == 0, done.stderr
    project.report_stderr = done.stderr  # the progress lines; stdout is the markdown alone
    return project, out_dir, done.stdout


@pytest.mark.slow
def test_report_counts_chain_diffs_and_intervals(reported_run):
    project, out_dir, terminal = reported_run
    md = (out_dir / "report.md").read_text()
    assert terminal.strip() == md.strip()
    # the slow steps said as they ended, on stderr: the labels, then one line per fresh-fold scoring
    progress = project.report_stderr.splitlines()
    assert progress[0] == "held-out audit: the harness recomputes the held-out labels"
    assert progress[1] == "re-measure: the baseline and the final commit on fresh folds of 1 cv seed (2 scorings)"
    assert re.fullmatch(r"re-measure: baseline [0-9a-f]{7}, cv seed 1: val_auc 0\.\d{4} \(\d+\.\d s\)", progress[2])
    assert progress[3].startswith("re-measure: final ") and ", cv seed 1: val_auc 0." in progress[3]
    live = project.path / project.git("rev-parse", "--git-common-dir") / "autoresearch" / "r1" / "live.html"
    assert progress[4:] == [f"live page (rewritten after each try): {live}"] and live.is_file()
    assert "**device**: cpu (the only device its harness runs on)" in md
    assert "**kept / discarded / crashed**: 1 / 1 / 1" in md
    assert "**iterations**: 3" in md
    chain = md.split("**Kept chain**")[1].split("**Held-out audit**")[0]
    assert "baseline: scaled logistic regression" in chain and "use all 8 features" in chain
    assert "cholesterol alone" not in chain and "a pipeline that raises" not in chain
    assert "deliberate crash" in md  # crash causes, grouped
    assert "CI" in md and "better than the baseline on held-out data" in md  # 2 weak features -> all 8
    [fresh] = [line for line in md.splitlines() if line.startswith("**Fresh folds")]
    assert "on fresh folds of the same 160 development rows" in fresh and "one fold seed" in fresh
    assert "catches lucky fold splits, not luck in which rows are in the development set" in fresh
    assert "survived" not in md
    [held] = [line for line in md.splitlines() if line.startswith("**Held-out audit")]
    assert "40 held-out rows can only detect a difference larger than about ±" in held

    page = (out_dir / "report.html").read_text()
    assert "every feature &lt;all 8&gt;" in page and "<all 8>" not in page  # the diff, escaped
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
    assert json.loads(out.stdout)["kept_chain"][-1]["description"] == "use all 8 features"
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
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        (out_dir / "report.html").as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.03  # text, tables and the chart, not a blank page
    green = np.abs(pixels - KEPT_GREEN).max(axis=2) < 0.08
    assert green.sum() > 100  # the chart's kept points and frontier made it onto the screen


# -- held-out labels: never stored, recomputed at report time --------------------------------------------
HOLDOUT_FRACTION, SPLIT_SEED = 0.2, 42  # the fixture prepare.py's fixed split, restated to compute it on its own


def fixture_split() -> tuple[list[int], list[int]]:
    """(development labels, held-out labels) in the harness's order, computed here apart from the harness."""
    from sklearn.model_selection import train_test_split

    _, rows = fixture_rows()
    y = [int(row["target"]) for row in rows]
    y_dev, y_hold = train_test_split(y, test_size=HOLDOUT_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return list(y_dev), list(y_hold)


def bits(labels: list[int]) -> str:
    return "".join(map(str, labels))


def heldout_file(project, tag: str):
    return project.path / project.git("rev-parse", "--git-common-dir") / "autoresearch" / tag / "heldout.jsonl"


def report_with(project, out_dir, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RATCHET), "report", "--out", str(out_dir), "--no-remeasure"],
        cwd=project.path,
        env={**project.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def audit_lines(markdown_text: str) -> list[str]:
    return [line for line in markdown_text.splitlines() if line.startswith(("**Held-out audit**", "(baseline "))]


@pytest.mark.slow
def test_heldout_record_holds_predictions_but_no_labels(reported_run, data_mirror):
    from sklearn.metrics import roc_auc_score

    project, _, _ = reported_run
    text = heldout_file(project, "r1").read_text()
    _, y_hold = fixture_split()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["iter"] for r in records] == [0, 1, 2]  # the crash wrote none
    for record in records:
        # these are the labels the run was scored on: the check below is not vacuous
        assert record["heldout_auc"] == pytest.approx(roc_auc_score(y_hold, record["heldout_pred"]), abs=1e-12)
        assert "heldout_true" not in record
        assert not any(isinstance(v, list) and [round(x) for x in v] == y_hold for v in record.values())
    assert "heldout_true" not in text and json.dumps(y_hold) not in text
    assert not list(heldout_file(project, "r1").parent.glob("heldout.next*"))  # no pending record left behind


def test_harness_writes_the_heldout_labels_only_when_asked(project, data_mirror, tmp_path):
    help_text = subprocess.run(
        [sys.executable, "prepare.py", "--help"],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "--private-out" not in help_text and "--heldout-truth" not in help_text  # hidden, like --private-out
    out = tmp_path / "truth.json"
    done = subprocess.run(
        [sys.executable, "prepare.py", "--heldout-truth", str(out)],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == "", done.stderr  # nothing printed, no candidate run
    truth = json.loads(out.read_text())
    assert truth == {"heldout_true": fixture_split()[1], "heldout_classes": [0, 1]}
    assert project.status() == ""


@pytest.mark.slow
def test_old_records_with_labels_give_the_same_audit(reported_run, data_mirror, tmp_path):
    """A heldout.jsonl written before labels stopped being stored: read as it is, with the same figures as
    labels recomputed from the data, and without the data (so the figures can only come from the records)."""
    project, out_dir, _ = reported_run
    path = heldout_file(project, "r1")
    new_text = path.read_text()
    _, y_hold = fixture_split()
    new = [json.loads(line) for line in new_text.splitlines()]
    old = [dict(r, heldout_true=y_hold) for r in new]
    try:
        path.write_text("".join(json.dumps(r) + "\n" for r in old))
        out = report_with(project, tmp_path / "old", AUTORESEARCH_DATA_MIRROR=str(tmp_path / "no-data"))
    finally:
        path.write_text(new_text)
    assert out.returncode == 0, out.stderr
    assert audit_lines(out.stdout) == audit_lines((out_dir / "report.md").read_text())
    assert "better than the baseline on held-out data" in out.stdout

    # exactly, not just to four digits: the recomputed path against the stored-labels path
    recomputed = audit.complete_records([new[0], new[1]], "val_auc", project.path / "prepare.py", env=project.env)
    assert audit.compare(*recomputed, "val_auc", True) == audit.compare(old[0], old[1], "val_auc", True)


@pytest.mark.slow
def test_report_says_so_when_the_labels_cannot_be_recomputed(reported_run, data_mirror, tmp_path):
    project, _, _ = reported_run
    gone = report_with(project, tmp_path / "gone", AUTORESEARCH_DATA_MIRROR=str(tmp_path / "no-data"))
    assert gone.returncode == 0, gone.stderr
    [line] = [x for x in gone.stdout.splitlines() if x.startswith("**Held-out audit**")]
    assert "no held-out audit: the harness could not recompute the held-out labels (error: " in line
    assert f"fixture/{FIXTURE_DATA.name} is not there" in line and "Traceback" not in gone.stdout + gone.stderr

    # the data rewritten since the run (every label flipped): no audit on other labels, and it says why
    flipped = tmp_path / "flipped"
    header, *rows = (data_mirror / "fixture" / FIXTURE_DATA.name).read_text().splitlines()
    (flipped / "fixture").mkdir(parents=True)
    (flipped / "fixture" / FIXTURE_DATA.name).write_text(
        "".join(f"{line}\n" for line in [header, *(f"{row[:-1]}{1 - int(row[-1])}" for row in rows)])
    )
    changed = report_with(project, tmp_path / "changed", AUTORESEARCH_DATA_MIRROR=str(flipped))
    assert changed.returncode == 0, changed.stderr
    # the task pins its data's sha256, so the harness refuses the rewritten file; were it not pinned, the
    # recomputed labels would fail to reproduce the recorded score
    assert "sha256" in changed.stdout or "the data or the split changed since the run" in changed.stdout
    assert "than the baseline on held-out data" not in changed.stdout


@pytest.mark.slow
def test_report_leaves_no_label_file_behind(reported_run, data_mirror, tmp_path):
    project, _, _ = reported_run
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = report_with(project, tmp_path / "out", TMPDIR=str(scratch))
    assert out.returncode == 0, out.stderr
    assert "better than the baseline on held-out data" in out.stdout  # the labels were recomputed and used
    assert not list(scratch.glob("autoresearch-truth-*"))
    y_hold = fixture_split()[1]
    everywhere = [project.path, tmp_path / "out", scratch]
    for path in (p for root in everywhere for p in root.rglob("*") if p.is_file() and ".git/objects" not in str(p)):
        text = path.read_text(errors="replace")
        assert json.dumps(y_hold) not in text and bits(y_hold) not in text, path


LABEL_PROBE = '''def build_pipeline():
    """Hostile: gather every 0/1 vector within reach (stack frames, the run's private files), then crash
    with the short ones (held-out sized) in the message the ratchet quotes."""
    import json
    import sys
    from pathlib import Path

    import numpy as np

    found, seen = [], {}  # seen keeps what it scanned alive: a freed object's id is soon someone else's

    def scan(obj, depth=0):
        if id(obj) in seen or depth > 8:
            return
        seen[id(obj)] = obj
        if hasattr(obj, "to_numpy") and not hasattr(obj, "columns"):
            obj = obj.to_numpy()
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (int, float)) for v in obj):
            obj = np.asarray(obj)
        if isinstance(obj, np.ndarray) and obj.ndim == 1 and obj.size and obj.dtype != object:
            if np.isin(obj, (0, 1)).all():
                found.append("".join(str(int(v)) for v in obj))
        elif isinstance(obj, dict):
            for v in list(obj.values())[:1000]:
                scan(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj[:1000]:
                scan(v, depth + 1)

    frame = sys._getframe()
    while frame is not None:
        scan(dict(frame.f_locals))
        frame = frame.f_back
    for path in sorted(Path(__file__).resolve().parent.glob(".git/autoresearch/*/*")):
        if path.is_file():
            print("READ", path.name, file=sys.stderr)
            for line in path.read_text(errors="replace").splitlines():
                try:
                    scan(json.loads(line))
                except ValueError:
                    pass
    for vector in found:
        print("BITS", vector, file=sys.stderr)
    raise RuntimeError("LEAK " + (" ".join(v for v in found if len(v) <= 100) or "none"))
'''


@pytest.mark.slow
def test_a_crash_cannot_quote_the_heldout_labels(project, data_mirror):
    """A train.py that raises with every label it can reach: the development labels are within reach (that is
    the lead's slice, fold isolation), the held-out ones must be nowhere it can look."""
    assert project.ratchet("start", "t1").returncode == 0
    source = project.read()
    head, _ = source.split("def build_pipeline():")
    _, main = source.split('if __name__ == "__main__":')
    project.write(head + LABEL_PROBE + '\n\nif __name__ == "__main__":' + main)
    out = project.ratchet("try", "a candidate that hunts for labels")
    assert out.returncode == 0, out.stderr
    assert "CRASH" in out.stdout and "LEAK" in out.stdout  # the probe ran and its message is quoted
    log = (project.path / "run.log").read_text()
    y_dev, y_hold = (bits(v) for v in fixture_split())
    if sandbox.detect().active:  # the sandbox hides the records, and a fold never holds all development labels
        assert "READ heldout.jsonl" not in log and y_dev not in log
    else:
        assert "READ heldout.jsonl" in log  # it did read the run's private records...
        assert y_dev in log  # ...and its memory scan works: it found the development labels
    visible = {
        "line": out.stdout + out.stderr,
        "run.log": log,
        "results.tsv": (project.path / "results.tsv").read_text(),
        "status": project.ratchet("status").stdout + project.ratchet("status", "--json").stdout,
    }
    for where, text in visible.items():
        assert y_hold not in text, f"held-out labels in {where}"
    assert project.status() == ""


def test_the_seen_gain_of_a_corrected_run_carries_the_overlap_of_its_folds():
    """A run judged by the corrected rule reports its seen gain with the same se the rule used (2.7x on 5x5)."""
    base = [0.80 + 0.01 * (i % 5) for i in range(25)]
    final = [b + 0.01 + 0.004 * ((-1) ** i) for i, b in enumerate(base)]
    rows = [{"fold_scores": ",".join(map(str, base)), "val_auc": sum(base) / 25}]
    rows.append({"fold_scores": ",".join(map(str, final)), "val_auc": sum(final) / 25})
    plain = audit.seen_gain(rows[0], rows[1], rows, "val_auc", "paired")
    corrected = audit.seen_gain(rows[0], rows[1], rows, "val_auc", "corrected", 5)
    assert corrected.gain == plain.gain
    assert corrected.se / plain.se == pytest.approx((1 + 25 / 4) ** 0.5)
    assert "corrected for their overlap" in corrected.how


# -- the chart's noise band and crash lane, the device line, progress as the re-measure goes ----------------
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_chart_has_a_noise_band_and_its_crashes_inside_the_axes_clear_of_the_legend(higher_is_better):
    import matplotlib.pyplot as plt

    r = constructed_report(higher_is_better)
    for row in r.rows:
        if row["status"] != "crash" and row["iter"] != "0":
            row.update(delta="0.01", delta_se="0.01")
    fig = report.draw_chart(r)
    try:
        [ax] = fig.axes
        fig.canvas.draw()
        low, high = sorted(ax.get_ylim())
        [crashes] = [c for c in ax.collections if c.get_gid() == "crashed"]
        ys = crashes.get_offsets()[:, 1]
        assert len(ys) == 1 and crashes.get_clip_on() and low < ys.min() and ys.max() < high  # inside the axes
        kept_values = [s.entry[r.config.metric] for s in r.chain]
        sign = 1 if higher_is_better else -1
        assert all(sign * y < sign * v for y in ys for v in kept_values)  # in the lane under every score
        # the legend sits wholly under the axes: no marker is hidden under it
        legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.y1 < axes.y0
        assert "crashed (1)" in [t.get_text() for t in ax.get_legend().get_texts()]
        # the band: ±1 se (each row's 0.01, back-filled to the baseline) around the best so far, 1.0 -> 1.05 -> 1.12
        [band] = [c for c in ax.collections if c.get_gid() == "noise band"]
        vertices = np.concatenate([p.vertices for p in band.get_paths()])
        at = {round(float(x), 6): [] for x in vertices[:, 0]}
        for x, y in vertices:
            at[round(float(x), 6)].append(float(y))
        assert min(at[0.0]) == pytest.approx(1.0 - 0.01) and max(at[0.0]) == pytest.approx(1.0 + 0.01)
        assert min(at[2.0]) == pytest.approx(1.0 + 0.05 * sign - 0.01)
        assert max(at[2.0]) == pytest.approx(1.0 + 0.05 * sign + 0.01)
    finally:
        plt.close(fig)


def test_device_line_says_what_is_known():
    from autoresearch import digest

    assert digest.device_text({"device": "cuda"}) == "cuda"
    assert digest.device_text({"capabilities": {"devices": ["cpu"]}}) == "cpu (the only device its harness runs on)"
    assert digest.device_text({"capabilities": {"devices": ["cpu", "cuda"]}}) == (
        "not reported (its harness runs on cpu, cuda)"
    )
    assert digest.device_text({"capabilities": None}) == "not recorded"


def test_the_remeasure_says_each_scoring_as_it_ends(monkeypatch, tmp_path):
    said, scored = [], []

    def score(prepare, source, commit, seeds):
        [seed] = seeds  # one scoring per call: its line is printed before the next begins
        scored.append(seed)
        assert len(said) == len(scored) - 1
        error = "boom" if seed == 3 else ""
        return [audit.FreshScore(commit, seed, math.nan if error else 0.8 + seed / 100, [], error=error)]

    monkeypatch.setattr(audit, "score_on_fresh_folds", score)
    repo = type("R", (), {"show": lambda self, sha, rel: "source"})()
    task = type("T", (), {"dir": tmp_path, "train_rel": "train.py"})()
    out = report._fresh_scores(repo, task, "abcdef0123", "final", (1, 2, 3), "val_auc", said.append)
    assert [s.cv_seed for s in out] == [1, 2, 3]
    assert [line.split(" (")[0] for line in said] == [
        "re-measure: final abcdef0, cv seed 1: val_auc 0.8100",
        "re-measure: final abcdef0, cv seed 2: val_auc 0.8200",
        "re-measure: final abcdef0, cv seed 3: error: boom",
    ]
