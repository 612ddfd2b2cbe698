"""The ratchet loop end to end: real repositories, the real CLI, the real harness, on the fixture task.

Two runs are started per module (the fixture baseline, and a deliberately weak one) and copied for each test
that needs a started run; a test that needs other start options starts its own.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import uuid

import pytest
from autoresearch.decide import code_lines
from conftest import (
    FIXTURE_FOLDS,
    FIXTURE_TASK,
    RATCHET,
    ROOT,
    Project,
    copy_run,
    make_project,
    started_project,
)

SEED_EDIT = ("C = 1.0", "C = 0.9999")  # numerically a no-op: the same model, a different file
WORSE_EDIT = ("C = 1.0", "C = 1e-5")  # crushes the coefficients: clearly worse
BETTER_EDIT = ('return df[["age"]]', "return df")  # all features after age alone: better on any heart-like data
ONE_FEATURE = ("    return df\n", '    return df[["age"]]\n')
PROGRAM = "# directions\n"  # a program.md on main, as the real repository has, for the test that edits it


def test_each_edit_the_tests_make_hits_one_line_of_the_fixture():
    """project.edit replaces the first occurrence: a second one (a docstring quoting it) would make an edit
    that changes nothing, and a test of a worse or a crashing edit would pass for the wrong reason."""
    source = (FIXTURE_TASK / "train.py").read_text()
    for old in [
        SEED_EDIT[0],
        ONE_FEATURE[0],
        "def build_pipeline():",
        'HYPOTHESIS = "',
        "MAX_ITER = 1000\n",
        "max_iter=MAX_ITER",
        "    return df\n",
    ]:
        assert source.count(old) == 1, old


def weaken_baseline(project):
    """Start from a deliberately weak model, so that a real improvement exists on real and synthetic data."""
    project.edit(*ONE_FEATURE)
    project.git("commit", "-qam", "weak baseline: age alone")


def start(project, tag="t1", *args):
    out = project.ratchet("start", tag, *args)
    assert out.returncode == 0, out.stderr
    return out


def with_program_md(project) -> None:
    (project.path / "program.md").write_text(PROGRAM)
    project.git("add", "program.md")
    project.git("commit", "-qm", "program")


def weak_with_program_md(project) -> None:
    with_program_md(project)
    weaken_baseline(project)


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_mirror) -> Project:
    """Run t1 on the fixture baseline, started once for the module."""
    return started_project(tmp_path_factory.mktemp("started"), data_mirror, "t1", setup=with_program_md)


@pytest.fixture(scope="module")
def started_weak(tmp_path_factory, data_mirror) -> Project:
    """Run t1 on a weak baseline (age alone), so that a real improvement exists."""
    return started_project(tmp_path_factory.mktemp("weak"), data_mirror, "t1", setup=weak_with_program_md)


@pytest.fixture
def run(started, tmp_path) -> Project:
    return copy_run(started, tmp_path / "repo")


@pytest.fixture
def weak_run(started_weak, tmp_path) -> Project:
    return copy_run(started_weak, tmp_path / "repo")


def test_start_creates_branch_baseline_row_and_ignores_results(started, run):
    project = run
    assert started.start_output.startswith("run t1 started on autoresearch/t1 | baseline val_auc=")
    assert project.git("rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/t1"
    rows = project.rows()
    assert [r["status"] for r in rows] == ["keep"]
    assert rows[0]["iter"] == "0" and rows[0]["tag"] == "t1"
    assert 0.5 < float(rows[0]["val_auc"]) < 1.0
    assert len(rows[0]["fold_scores"].split(",")) == FIXTURE_FOLDS
    assert list(rows[0])[:5] == ["commit", "val_auc", "memory_gb", "status", "description"]
    assert project.status() == ""  # results.tsv and run.log are ignored, nothing else changed


def test_start_on_an_existing_run_resumes_it_in_one_call_unless_the_task_differs(run):
    project = run
    again = project.ratchet("start", "t1", "--max-iters", "9")
    assert again.returncode == 0, again.stderr
    first, *digest_lines = again.stdout.splitlines()
    assert "run t1 resumed" in first and "next iter 1" in first
    assert "--max-iters 9 ignored: the run keeps its own (none)" in first  # options are frozen at the start
    assert any("best: iter 0" in line for line in digest_lines)  # where it stands: no `status` call needed
    other = project.ratchet("start", "t1", "--task", "tasks/elsewhere")
    assert other.returncode == 2 and "exists on task ." in other.stderr and "pick a new tag" in other.stderr
    resumed = project.ratchet("start", "t1", "--resume")
    assert resumed.returncode == 0 and "next iter 1" in resumed.stdout
    assert len(project.rows()) == 1


@pytest.mark.slow  # a run of its own, or several scorings
def test_scripted_sequence_keeps_discards_and_records(weak_run):
    project = weak_run
    base = project.git("rev-parse", "HEAD")
    project.edit(*BETTER_EDIT)
    kept = project.ratchet("try", "all features, not age alone")
    assert kept.returncode == 0, kept.stderr
    assert "| KEPT |" in kept.stdout and kept.stdout.startswith("iter 1 | val_auc=")
    kept_sha = project.git("rev-parse", "HEAD")
    assert project.git("rev-parse", "HEAD~1") == base
    message = project.git("log", "-1", "--format=%B")
    assert message.startswith("all features, not age alone") and "→" in message and "KEPT" in message

    project.edit(*WORSE_EDIT)
    dropped = project.ratchet("try", "much stronger regularisation")
    assert "| DISCARDED |" in dropped.stdout, dropped.stdout + dropped.stderr
    assert project.git("rev-parse", "HEAD") == kept_sha  # the branch did not move
    assert "return df\n" in project.read() and "C = 1.0" in project.read()  # train.py is back to the best
    refs = project.git("for-each-ref", "--format=%(refname)", "refs/autoresearch/t1").splitlines()
    assert refs == [f"refs/autoresearch/t1/000{i}" for i in range(3)]
    assert "C = 1e-5" in project.git("show", "refs/autoresearch/t1/0002:train.py")  # retrievable
    assert "DISCARDED" in project.git("log", "-1", "--format=%B", "refs/autoresearch/t1/0002")

    rows = project.rows()
    assert [(r["iter"], r["status"]) for r in rows] == [("0", "keep"), ("1", "keep"), ("2", "discard")]
    assert rows[1]["commit"] == kept_sha[:7]
    assert float(rows[1]["delta"]) > 0 and float(rows[1]["p_value"]) < 0.05
    assert project.git("log", "--format=%s", "autoresearch/t1").splitlines()[0] == "all features, not age alone"
    assert project.status() == ""

    status = json.loads(project.ratchet("status", "--json").stdout)
    assert status["best"]["iter"] == 1 and status["kept"] == 1 and status["discarded"] == 1
    assert status["next_iter"] == 3
    text = project.ratchet("status").stdout
    assert "best: iter 1" in text and "next: iter 3" in text


def test_equal_within_noise_and_simpler_is_kept(run):
    project = run
    project.edit("MAX_ITER = 1000\n", "")  # the same model, one assignment fewer
    project.edit("max_iter=MAX_ITER", "max_iter=1000")
    out = project.ratchet("try", "inline a constant")
    assert "| KEPT |" in out.stdout, out.stdout + out.stderr
    reason = project.rows()[-1]["reason"]
    assert reason.startswith("equal within noise and simpler (") and reason.endswith(" syntax nodes)"), reason


def test_docstring_and_formatting_edits_are_not_simpler(run):
    """Neither deleting the docstring nor joining, reflowing and commenting the code is a simplification (both
    cut the lines a line count measures), so neither is kept: the model, and so the score, is the same."""
    project = run
    best = project.read()
    project.write(best[best.index('"""', 3) + 3 :].lstrip("\n"))
    assert code_lines(project.read()) < code_lines(best)  # what "simpler" counted before
    out = project.ratchet("try", "delete the docstring")
    assert "| DISCARDED |" in out.stdout, out.stdout + out.stderr
    assert project.rows()[-1]["reason"] == "not better" and project.read() == best
    formatted = (
        best.replace("import pandas as pd\nfrom sklearn.impute", "import pandas as pd; from sklearn.impute")
        .replace("C = 1.0  # inverse regularisation strength\nMAX_ITER", "C = 1.0; MAX_ITER")
        .replace("def feature_fn", "# features: the raw columns\ndef feature_fn")
        .replace("StandardScaler(), LogisticRegression(", "StandardScaler(),\n        LogisticRegression(")
    )
    formatted = formatted.replace("\n\n\ndef build", "\ndef build")
    assert formatted.count(";") == best.count(";") + 2 and code_lines(formatted) < code_lines(best)
    project.write(formatted)
    out = project.ratchet("try", "join statements, reflow, comment")
    assert "| DISCARDED |" in out.stdout, out.stdout + out.stderr
    assert project.rows()[-1]["reason"] == "not better" and project.read() == best


def test_start_refuses_a_keep_rule_it_does_not_have_in_one_line(run):
    out = run.ratchet("start", "t2", "--keep-rule", "bayes")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--keep-rule: keep rule 'bayes' is not one of paired, corrected, rerun" in out.stderr
    assert "autoresearch/t2" not in run.git("branch", "--list")


def test_branch_changed_by_hand_is_refused(run):
    project = run
    project.edit(*WORSE_EDIT)
    project.git("commit", "-qam", "by hand, not through the ratchet")
    project.edit("C = 1e-5", "C = 2.0")
    out = project.ratchet("try", "on top of an unscored commit")
    assert out.returncode == 2 and "not the one scored as best" in out.stderr
    assert len(project.rows()) == 1


def test_person_may_edit_program_md_during_a_run(run):
    project = run
    assert project.read("program.md") == PROGRAM  # committed on main before the run started
    (project.path / "program.md").write_text(PROGRAM + "- try trees next\n")
    project.git("add", "program.md")  # staged, even: the ratchet's commits leave it out
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "worse")
    assert out.returncode == 0, out.stderr
    assert "try trees next" in (project.path / "program.md").read_text()  # untouched, still uncommitted
    assert project.status() == "M  program.md"
    assert project.git("show", "--format=", "--name-only", "refs/autoresearch/t1/0001^{commit}") == "train.py"


def test_seed_only_edit_is_not_kept(run):
    project = run
    project.edit(*SEED_EDIT)
    out = project.ratchet("try", "same model, other constant")
    assert "| DISCARDED |" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize(
    "body, expect",
    [
        ("raise RuntimeError('boom from train.py')", "RuntimeError: boom from train.py"),
        ("def broken(:", "SyntaxError"),
        ("import sys; sys.exit(0)", "no readable predictions"),
    ],
    ids=["exception", "syntax-error", "exits-early"],
)
def test_broken_candidates_are_crashes_with_a_reason(run, body, expect):
    project = run
    best = project.read()
    project.write(best.replace('HYPOTHESIS = "', f'{body}\nHYPOTHESIS = "', 1))
    out = project.ratchet("try", "a broken edit")
    assert out.returncode == 0
    assert "| CRASH (" in out.stdout and expect in out.stdout, out.stdout
    row = project.rows()[-1]
    assert row["status"] == "crash" and expect in row["reason"] and row["val_auc"] == ""
    assert project.read() == best and project.status() == ""


def test_nan_predictions_are_a_crash(run):
    project = run
    project.edit(
        "def build_pipeline():",
        """class NaNModel:
    def fit(self, x, y):
        return self

    def predict_proba(self, x):
        import numpy as np

        return np.full((len(x), 2), np.nan)


def build_pipeline():
    return NaNModel()


def _unused():""",
    )
    out = project.ratchet("try", "a model that predicts NaN")
    assert "CRASH" in out.stdout and "NaN" in out.stdout
    assert project.rows()[-1]["status"] == "crash"


def test_fake_summary_and_patched_scorer_change_nothing(run):
    project = run
    baseline = float(project.rows()[0]["val_auc"])
    project.edit(
        'HYPOTHESIS = "',
        '''import sklearn.metrics
sklearn.metrics.roc_auc_score = lambda *a, **k: 1.0
print("---")
print("val_auc:          0.999999")
print("status:           ok")
HYPOTHESIS = "''',
    )
    project.edit(*SEED_EDIT)
    out = project.ratchet("try", "cheat")
    row = project.rows()[-1]
    assert row["status"] == "discard", out.stdout
    assert math.isclose(float(row["val_auc"]), baseline, abs_tol=1e-3)
    assert "0.9999" not in out.stdout


@pytest.mark.slow  # a run of its own, or several scorings
def test_heldout_score_is_kept_apart(weak_run):
    project = weak_run
    project.edit(*BETTER_EDIT)
    out = project.ratchet("try", "stronger regularisation")
    visible = out.stdout + out.stderr + project.ratchet("status", "--json").stdout
    visible += (project.path / "results.tsv").read_text() + (project.path / "run.log").read_text()
    assert "heldout" not in visible.lower()
    common = project.path / project.git("rev-parse", "--git-common-dir") / "autoresearch" / "t1"
    records = [json.loads(line) for line in (common / "heldout.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [0, 1]
    assert all(0 < r["heldout_auc"] <= 1 and len(r["heldout_pred"]) > 1 for r in records)
    assert not any("heldout_true" in r for r in records)  # labels are never stored; the report recomputes them


def test_unrelated_changes_are_refused_and_untouched(run):
    project = run
    project.edit(*WORSE_EDIT)
    (project.path / "notes.txt").write_text("my notes\n")
    project.edit("Frozen harness", "Frozen harness (my local edit)", rel="prepare.py")
    before = project.status()
    out = project.ratchet("try", "stronger regularisation")
    assert out.returncode == 2
    assert out.stderr.startswith("error: only train.py may change") and len(out.stderr.strip().splitlines()) == 1
    assert "notes.txt" in out.stderr and "prepare.py" in out.stderr
    assert project.status() == before and "C = 1e-5" in project.read()
    assert (project.path / "notes.txt").read_text() == "my notes\n"
    assert len(project.rows()) == 1


def test_committed_edit_of_frozen_file_is_refused(run):
    project = run
    project.edit("MIN_ROWS = 100", "MIN_ROWS = 10", rel="prepare.py")
    project.git("commit", "-qam", "sneak a harness change in")
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "stronger regularisation")
    assert out.returncode == 2 and "prepare.py" in out.stderr
    assert len(project.rows()) == 1


def test_try_off_a_run_branch_is_refused(project):
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "on main")
    assert out.returncode == 2 and "not on an autoresearch run branch" in out.stderr
    assert project.git("log", "--format=%s") == "task files"
    assert "C = 1e-5" in project.read()


def test_unchanged_train_py_is_refused(run):
    project = run
    out = project.ratchet("try", "nothing changed")
    assert out.returncode == 2 and "edit it first" in out.stderr


def test_tabs_and_newlines_in_hypothesis(run):
    project = run
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "first line\twith a tab\nsecond line\r\nthird")
    assert out.returncode == 0, out.stderr
    row = project.rows()[-1]
    assert row["description"] == "first line with a tab second line third"
    assert len(project.rows()) == 2  # the TSV still parses as two rows
    subject = project.git("log", "-1", "--format=%s", "refs/autoresearch/t1/0001")
    assert subject == "first line with a tab second line third"


def test_hypothesis_defaults_to_train_py_constant(run):
    project = run
    project.edit(*WORSE_EDIT)
    refused = project.ratchet("try")
    assert refused.returncode == 2 and "HYPOTHESIS" in refused.stderr
    project.edit('HYPOTHESIS = "baseline: scaled', 'HYPOTHESIS = "C=1e-5: scaled')
    out = project.ratchet("try")
    assert out.returncode == 0 and "C=1e-5: scaled" in out.stdout


def test_deleted_results_tsv_is_rebuilt(run):
    project = run
    (project.path / "results.tsv").unlink()
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "crush the coefficients")
    assert "rebuilt" in out.stdout
    assert [r["iter"] for r in project.rows()] == ["0", "1"]


@pytest.mark.slow  # a run of its own, or several scorings
def test_iteration_cap_and_stop_request(project):
    start(project, "t1", "--max-iters", "1")
    project.edit(*WORSE_EDIT)
    assert project.ratchet("try", "one").returncode == 0
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "two")
    assert out.returncode == 2 and "iteration cap" in out.stderr
    assert "STOP: iteration cap" in project.ratchet("status").stdout


def test_stop_request_refuses_next_try(run):
    project = run
    assert project.ratchet("stop", "enough for tonight").returncode == 0
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "one more")
    assert out.returncode == 2 and "enough for tonight" in out.stderr


@pytest.mark.slow  # a run of its own, or several scorings
def test_commits_without_a_git_identity(tmp_path, env):
    env = dict(env, HOME=str(tmp_path / "home"), GIT_CONFIG_NOSYSTEM="1")
    (tmp_path / "home").mkdir()
    project = make_project(tmp_path / "repo", env)
    project.git("config", "--unset", "user.name")
    project.git("config", "--unset", "user.email")
    start(project)
    project.edit(*WORSE_EDIT)
    out = project.ratchet("try", "worse")
    assert out.returncode == 0, out.stderr
    assert project.git("log", "-1", "--format=%an", "refs/autoresearch/t1/0001") == "autoresearch"


# -- the heart task itself: its harness, its pinned data, `uv run train.py` -------------------------------
@pytest.mark.slow
def test_the_heart_task_scores_a_train_py_on_its_pinned_data_only(tmp_path, env, data_mirror):
    """The root prepare.py (with the fixture's train.py: the working tree's is the user's) scores 5x5 folds on
    the heart data, run as `uv run train.py` runs it; a heart file changed by one label is refused, unscored."""
    project = make_project(tmp_path / "repo", env, ["prepare.py", ".gitignore"], task=ROOT)
    project.write((FIXTURE_TASK / "train.py").read_text())

    def score(environment: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "train.py"], cwd=project.path, env=environment, capture_output=True, text=True, timeout=300
        )

    out = score(project.env)
    assert out.returncode == 0, out.stderr[-2000:]
    block = dict(line.split(":", 1) for line in out.stdout.split("---\n")[-1].splitlines())
    block = {key.strip(): value.strip() for key, value in block.items()}
    assert block["task"] == "heart" and block["status"] == "ok" and block["n_folds"] == "25", block
    assert len(block["fold_scores"].split(",")) == 25 and 0.6 < float(block["val_auc"]) < 1.0

    changed = tmp_path / "changed"
    lines = (data_mirror / "heart" / "processed.cleveland.data").read_text().splitlines()
    lines[0] = lines[0][:-1] + ("1" if lines[0][-1] == "0" else "0")
    (changed / "heart").mkdir(parents=True)
    (changed / "heart" / "processed.cleveland.data").write_text("\n".join(lines) + "\n")
    refused = score(dict(project.env, AUTORESEARCH_DATA_MIRROR=str(changed)))
    assert refused.returncode == 2 and "sha256" in refused.stderr and refused.stdout == "", refused.stderr


# -- the confirm step: a gain beyond noise on the ratchet's folds is scored again on fresh ones ---------------
def screen_folds() -> set[tuple[int, int]]:
    """(rows, sum of `age`) of the training rows of every fit the ratchet's own scoring makes on the fixture
    task (its folds on cv_seed 0, and the held-out fit on all development rows), computed apart from it."""
    import importlib.util

    from autoresearch import tabular

    spec = importlib.util.spec_from_file_location("fixture_prepare", FIXTURE_TASK / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    task = prepare.FIXTURE
    x, labels = task.load(str(FIXTURE_TASK / "table.csv"))
    y, _ = tabular.encode_target(task, labels)
    x_dev, _, y_dev, _ = tabular.split(task, x, y)
    x_dev = x_dev.reset_index(drop=True)
    keys = {(len(x_dev), int(x_dev["age"].sum()))}
    for train, _ in tabular.folds(task, y_dev, task.cv_seed):
        keys.add((len(train), int(x_dev.iloc[train]["age"].sum())))
    return keys


def lucky_edit(elsewhere: str = "") -> tuple[str, str]:
    """A model that uses every feature on the ratchet's folds (it recognises their training rows) and `age`
    alone, exactly as the weak baseline does, on any other folds: a gain that exists only on the folds it was
    screened on. `elsewhere`: code it runs on those other folds too."""
    return (
        "def build_pipeline():",
        f"""SCREEN_FOLDS = {sorted(screen_folds())!r}


class Lucky:
    def fit(self, x, y):
        key = [len(x), int(round(float(x["age"].sum())))]
        self.columns = list(x.columns) if key in [list(k) for k in SCREEN_FOLDS] else ["age"]
        if self.columns == ["age"]:
            pass{elsewhere}
        self.model = make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER)
        )
        self.model.fit(x[self.columns], y)
        return self

    def predict_proba(self, x):
        return self.model.predict_proba(x[self.columns])


def build_pipeline():
    return Lucky()


def _unused():""",
    )


@pytest.fixture(scope="module")
def started_confirm(tmp_path_factory, data_mirror) -> Project:
    """Run t1 on the weak baseline, started with --confirm."""
    return started_project(tmp_path_factory.mktemp("confirm"), data_mirror, "t1", "--confirm", setup=weaken_baseline)


@pytest.fixture
def confirm_run(started_confirm, tmp_path) -> Project:
    return copy_run(started_confirm, tmp_path / "repo")


def run_folder(project: Project):
    return project.path / ".git" / "autoresearch" / "t1"


@pytest.mark.slow  # a run of its own, and four scorings
def test_a_gain_only_on_the_ratchets_folds_is_discarded_and_a_real_one_kept(confirm_run):
    project = confirm_run
    record = json.loads((run_folder(project) / "run.json").read_text())["extra"]
    assert record["confirm"] is True and record["keep_rule"] == "paired" and record["cv_folds"] == 2
    best = project.read()
    project.edit(*BETTER_EDIT)
    project.edit(*lucky_edit())
    out = project.ratchet("try", "all features, on lucky folds only")
    assert "| DISCARDED |" in out.stdout, out.stdout + out.stderr
    row = project.rows()[-1]
    assert row["reason"].startswith("beyond noise on the ratchet's folds (p=0.0"), row["reason"]
    assert row["reason"].endswith("but not on fresh folds (seed 1001, p=1.000)"), row["reason"]
    assert float(row["p_value"]) < 0.05 and float(row["delta"]) > 0  # the screen's figures
    assert project.read() == best and project.status() == ""
    message = project.git("log", "-1", "--format=%B", "refs/autoresearch/t1/0001")
    assert "DISCARDED, beyond noise on the ratchet's folds" in message and "Autoresearch-Confirm-Seed: 1001" in message
    (confirmed,) = [json.loads(line) for line in (run_folder(project) / "confirm.jsonl").read_text().splitlines()]
    assert confirmed["iter"] == 1 and confirmed["cv_seed"] == 1001 and confirmed["keep"] is False
    fresh, again = confirmed["candidate"], confirmed["best"]
    assert fresh["fold_scores"] == again["fold_scores"] and len(fresh["fold_scores"]) == FIXTURE_FOLDS
    assert fresh["val_auc"] < float(row["val_auc"])  # age alone there: the lucky gain is gone
    assert not (run_folder(project) / "confirm").exists()

    project.edit(*BETTER_EDIT)
    out = project.ratchet("try", "all features")
    assert "| KEPT |" in out.stdout, out.stdout + out.stderr
    reason = project.rows()[-1]["reason"]
    assert reason.startswith("better beyond noise (p=") and ", confirmed on fresh folds (seed 1002, p=" in reason
    lines = (run_folder(project) / "confirm.jsonl").read_text().splitlines()
    assert [json.loads(line)["cv_seed"] for line in lines] == [1001, 1002]
    assert "Autoresearch-Confirm-Candidate: " in project.git("log", "-1", "--format=%B")


@pytest.mark.slow
def test_a_ratchet_killed_while_it_confirms_is_recovered(confirm_run):
    from test_faults import processes_with, wait_for

    project = confirm_run
    marker = f"autoresearch-test-{uuid.uuid4()}"
    sleeper = "".join(
        f"\n            {line}"
        for line in (
            "import subprocess, sys, time",
            f'subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])',
            "time.sleep(600)",
        )
    )
    best = project.read()
    project.edit(*BETTER_EDIT)
    project.edit(*lucky_edit(sleeper))
    ratchet = subprocess.Popen(
        [sys.executable, str(RATCHET), "try", "lucky, and slow off its folds"],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = run_folder(project) / "state.json"
    wait_for(lambda: state.exists() and '"confirm_seed": 1001' in state.read_text(), timeout=180)
    wait_for(lambda: processes_with(marker) != [], timeout=120)
    ratchet.send_signal(signal.SIGKILL)
    ratchet.communicate()

    out = project.ratchet("status")
    assert out.returncode == 0 and "recovered iter 1 (interrupted)" in out.stdout, out.stdout + out.stderr
    wait_for(lambda: processes_with(marker) == [], timeout=10)  # the harness and the candidate were killed
    row = project.rows()[-1]
    assert row["status"] == "interrupted" and "confirmed this iteration on fresh folds (seed 1001)" in row["reason"]
    assert project.read() == best and project.status() == ""
    assert project.git("rev-parse", "HEAD") == project.git("rev-parse", "refs/autoresearch/t1/0000^{commit}")
    assert not state.exists() and not (run_folder(project) / "confirm").exists()
    project.edit(*BETTER_EDIT)  # the run goes on: the next iteration is scored and confirmed
    again = project.ratchet("try", "all features")
    assert again.stdout.startswith("iter 2 |") and "| KEPT |" in again.stdout, again.stdout + again.stderr
