"""`ratchet.py new-task`: a CSV becomes tasks/NAME/ (frozen harness, baseline, card) that the ratchet runs.

End-to-end tests write CSVs from scikit-learn's bundled datasets, run new-task, start and one scripted try
through the real CLI in a temp repository. Messy files must give their one-line message and write nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from autoresearch import newtask, tabular, tabular_child
from autoresearch.gitops import Repo
from autoresearch.runs import RunError
from sklearn import datasets

RATCHET = Path(__file__).resolve().parents[1] / "scripts" / "ratchet.py"
_spec = importlib.util.spec_from_file_location("ratchet_cli", RATCHET)
ratchet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ratchet)


def one_repeat(project, task: str) -> None:
    """The generated harness with 5x1 folds instead of 5x5 (edited before its first commit, as a task author
    may): new-task's own baseline already scored the 5x5 harness; the ratchet only needs to run it, a fifth
    as many fold processes per scoring."""
    project.edit("N_REPEATS = 5", "N_REPEATS = 1", rel=f"{task}/prepare.py")


def commit_all(project, message: str = "task") -> None:
    project.git("add", "-A")
    project.git("commit", "-q", "-m", message)


def new_task(project, csv, *args: str) -> subprocess.CompletedProcess:
    return project.ratchet("new-task", str(csv), *args)


def start_and_try(project, task: str, old: str, new: str) -> list[dict]:
    out = project.ratchet("start", "t1", "--task", task)
    assert out.returncode == 0, out.stderr
    project.edit(old, new, rel=f"{task}/train.py")
    out = project.ratchet("try", "a scripted edit")
    assert out.returncode == 0, out.stderr
    assert "iter 1 |" in out.stdout
    rows = project.rows(f"{task}/results.tsv")
    assert [r["iter"] for r in rows] == ["0", "1"]
    assert rows[1]["status"] in ("keep", "discard")
    return rows


def block_of(stdout: str) -> dict:
    from autoresearch import summary

    return summary.parse_block(stdout.split("next:")[0])


# -- the three bundled datasets, end to end ---------------------------------------------------------------
@pytest.mark.slow
def test_regression_from_diabetes_and_a_changed_file_is_refused(project, tmp_path):
    diabetes = datasets.load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    csv = tmp_path / "diabetes.csv"
    diabetes.to_csv(csv, index=False)
    out = new_task(project, csv, "--target", "progression", "--budget", "60")
    assert out.returncode == 0, out.stderr
    assert "regression (214 distinct whole numbers)" in out.stdout
    block = block_of(out.stdout)
    assert block["metric"] == "val_rmse" and block["direction"] == "lower" and block["status"] == "ok"
    assert 45 < float(block["val_rmse"]) < 65 and 0.3 < float(block["val_r2"]) < 0.7  # Ridge on 10 features
    assert "uv run scripts/ratchet.py start diabetes-1 --task tasks/diabetes" in out.stdout
    prepare = project.read("tasks/diabetes/prepare.py")
    assert f'DATA_PATH = "{csv.resolve()}"' in prepare and "DATA_SHA256 = " in prepare
    assert 'PROBLEM = "regression"' in prepare and "from autoresearch.tabular import TabularTask, main" in prepare
    assert not (project.path / "tasks" / "diabetes" / "diabetes.csv").exists()  # referenced, never copied
    card = project.read("tasks/diabetes/README.md")
    assert "baseline:  val_rmse" in card and "progression, regression" in card
    one_repeat(project, "tasks/diabetes")
    commit_all(project)
    start_and_try(project, "tasks/diabetes", "ALPHA = 1.0", "ALPHA = 3.0")

    # The data changes under the task: the harness refuses it by name, the ratchet records a crash.
    with open(csv, "a") as fh:
        fh.write("50,1,20,80,150,100,40,4,4.5,90,100\n")
    project.write(project.read("tasks/diabetes/train.py") + "# any edit\n", rel="tasks/diabetes/train.py")
    out = project.ratchet("try", "weaker penalty")
    assert out.returncode == 0 and "CRASH" in out.stdout
    assert "changed since the task was made (sha256 differs)" in out.stdout
    assert project.rows("tasks/diabetes/results.tsv")[-1]["status"] == "crash"
    csv.unlink()
    out = subprocess.run(
        [sys.executable, "tasks/diabetes/prepare.py", "--check-data"],
        cwd=project.path,
        capture_output=True,
        text=True,
        env=project.env,
    )
    assert out.returncode == 2 and f"{csv.resolve()}: no such file" in out.stderr


@pytest.mark.slow
def test_multiclass_from_digits_leaves_constant_pixels_out(project, tmp_path):
    digits = datasets.load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    digits = digits.head(900)  # half the rows, half the fitting time; the same three constant pixels
    csv = tmp_path / "digits.csv"
    digits.to_csv(csv, index=False)
    out = new_task(project, csv, "--target", "digit", "--name", "digits")
    assert out.returncode == 0, out.stderr
    assert "warning: constant column(s) left out of the features: pixel_0_0, pixel_4_0, pixel_4_7" in out.stdout
    block = block_of(out.stdout)
    assert block["metric"] == "val_logloss" and block["direction"] == "lower"
    assert float(block["val_logloss"]) < 0.2 and float(block["val_balanced_accuracy"]) > 0.93
    prepare = project.read("tasks/digits/prepare.py")
    assert '"pixel_0_0": "constant (0.0 in every row)"' in prepare
    one_repeat(project, "tasks/digits")
    commit_all(project)
    start_and_try(project, "tasks/digits", "C = 1.0", "C = 0.3")


def messy_breast_cancer(path, rows: int | None = None):
    """Breast cancer with text labels, a patient id, a constant column, a text column and blanked cells.

    Only five of the weaker columns are kept: on all 30 a logistic regression scores AUC 0.995, which leaves an
    AUC ratchet nothing to find.
    """
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame[
        ["mean texture", "mean smoothness", "mean symmetry", "texture error", "smoothness error"]
    ].copy()
    rng = np.random.default_rng(0)
    frame.loc[rng.random(len(frame)) < 0.05, "mean texture"] = np.nan
    frame.insert(0, "patient_id", [f"P{i:05d}" for i in range(len(frame))])
    frame["site"] = rng.choice(["north", "south", "east"], size=len(frame))
    frame["batch"] = "b1"
    frame["diagnosis"] = bunch.target_names[bunch.target]
    frame = frame if rows is None else frame.head(rows)
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.slow
def test_binary_from_breast_cancer_with_text_labels_ids_and_categories(project, tmp_path):
    csv = tmp_path / "Breast Cancer.csv"
    messy_breast_cancer(csv)
    out = new_task(project, csv, "--target", "diagnosis")
    assert out.returncode == 0, out.stderr
    assert "identifier-like column(s) left out of the features: patient_id" in out.stdout
    assert "constant column(s) left out of the features: batch" in out.stdout
    block = block_of(out.stdout)
    assert block["metric"] == "val_auc" and block["status"] == "ok"
    assert 0.7 < float(block["val_auc"]) < 0.99
    prepare = project.read("tasks/breast_cancer/prepare.py")
    assert '"patient_id": "identifier-like' in prepare and '"batch": "constant' in prepare
    assert "'benign' (357), 'malignant' (212)" in project.read("tasks/breast_cancer/README.md")
    train = project.read("tasks/breast_cancer/train.py")
    assert "5 numeric and 1 categorical (text) columns" in train and "0 = 'benign', 1 = 'malignant'" in train
    one_repeat(project, "tasks/breast_cancer")
    commit_all(project)
    start_and_try(project, "tasks/breast_cancer", "C = 1.0", "C = 0.1")
    heldout = (project.path / ".git" / "autoresearch" / "t1" / "heldout.jsonl").read_text().splitlines()
    assert '"heldout_classes": ["benign", "malignant"]' in heldout[0]


# -- checks: each refuses with its message and writes nothing ------------------------------------------------
def frame_of(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "age": rng.integers(20, 80, size=n),
            "score": x,
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "outcome": np.where(x + rng.normal(size=n) > 0, "yes", "no"),
        }
    )


def with_mixed_column(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"age": object})
    frame.loc[[3, 7], "age"] = "unknown"
    return frame


MESSY = {
    "missing target": (frame_of(), ["--target", "outcom"], "no column 'outcom' in messy.csv; did you mean 'outcome'?"),
    "single class": (frame_of().assign(outcome="yes"), ["--target", "outcome"], "has a single value ('yes')"),
    "empty target": (frame_of().assign(outcome=np.nan), ["--target", "outcome"], "is empty in every row"),
    "too few rows": (frame_of(30), ["--target", "outcome"], "30 rows with a target; a task needs at least 50"),
    "too few per class": (
        frame_of().assign(outcome=["rare"] * 6 + ["common"] * 114),
        ["--target", "outcome"],
        "too few rows per class for stratified 5-fold CV after the held-out part (each class needs at least 7): "
        "'rare' has 6",
    ),
    "text regression target": (
        frame_of(),
        ["--target", "colour", "--problem", "regression"],
        "non-numeric regression target 'colour'",
    ),
    "mixed types": (
        with_mixed_column(frame_of()),
        ["--target", "outcome"],
        "mixed types in column(s) age (age: 2 of 120 values are not numbers, e.g. 'unknown')",
    ),
    "metric of another problem": (
        frame_of(),
        ["--target", "outcome", "--metric", "val_rmse"],
        "--metric val_rmse does not apply to binary",
    ),
    "binary with three classes": (
        frame_of(),
        ["--target", "colour", "--problem", "binary"],
        "has 3 distinct values, not 2",
    ),
}


@pytest.mark.parametrize("case", list(MESSY))
def test_messy_file_gets_its_message_and_nothing_is_written(case, project, tmp_path, monkeypatch, capsys):
    frame, args, message = MESSY[case]
    csv = tmp_path / "messy.csv"
    frame.to_csv(csv, index=False)
    before = project.status()
    monkeypatch.chdir(project.path)  # the CLI in this process: a subprocess per case would cost seconds of imports
    assert ratchet.main(["new-task", str(csv), *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line
    assert not (project.path / "tasks").exists()
    assert project.status() == before


def test_missing_file_and_existing_folder_are_refused(project, tmp_path):
    out = new_task(project, tmp_path / "nope.csv", "--target", "y")
    assert out.returncode == 2 and "nope.csv: no such file" in out.stderr
    (project.path / "tasks" / "messy").mkdir(parents=True)
    (project.path / "tasks" / "messy" / "train.py").write_text("# mine\n")
    csv = tmp_path / "messy.csv"
    frame_of().to_csv(csv, index=False)
    out = new_task(project, csv, "--target", "outcome")
    assert out.returncode == 2 and "tasks/messy exists; pick another --name, or pass --force" in out.stderr
    assert project.read("tasks/messy/train.py") == "# mine\n"
    assert newtask.plan(Repo(project.path), csv, "outcome", force=True).name == "messy"  # --force goes on


# -- the checks that warn: left out of the features, reason recorded, --keep overrides ---------------------------
def plan_of(project, frame: pd.DataFrame, tmp_path, target: str, **options):
    csv = tmp_path / "data.csv"
    frame.to_csv(csv, index=False)
    return newtask.plan(Repo(project.path), csv, target, **options)


def test_suspicious_and_useless_columns_are_left_out_with_reasons(project, tmp_path):
    frame = frame_of()
    frame["row"] = np.arange(len(frame))  # a row number
    frame["customer_id"] = np.random.default_rng(1).permutation(10**6)[: len(frame)]
    frame["leak"] = np.where(frame["outcome"] == "yes", 2.5, -1.0) + np.random.default_rng(2).random(len(frame))
    frame["leak_code"] = np.where(frame["outcome"] == "yes", "A", "B")
    frame["empty"] = np.nan
    frame["flag"] = 1
    plan = plan_of(project, frame, tmp_path, "outcome")
    assert plan.dropped["row"].startswith("identifier-like: consecutive whole numbers")
    assert plan.dropped["customer_id"].startswith("identifier-like: named like a key")
    assert plan.dropped["leak"].startswith("likely leakage: its value ranges do not overlap")
    assert plan.dropped["leak_code"].startswith("likely leakage: each of its values goes with one class")
    assert plan.dropped["empty"] == "all missing" and plan.dropped["flag"] == "constant (1 in every row)"
    assert plan.numeric == ["age", "score"] and plan.categorical == ["colour"]
    assert any(
        "likely leakage column(s) left out of the features: leak, leak_code; --keep COL" in w for w in plan.warnings
    )
    kept = plan_of(project, frame, tmp_path, "outcome", keep=["leak"], drop=["colour"])
    assert "leak" in kept.numeric and kept.dropped["colour"] == "left out with --drop"


def test_regression_leak_and_problem_inference(project, tmp_path):
    frame = frame_of()
    frame["price"] = frame["score"] * 10 + np.random.default_rng(3).normal(size=len(frame))
    frame["price_copy"] = np.exp(frame["price"] / 10)  # a monotone transform of the target
    plan = plan_of(project, frame, tmp_path, "price")
    assert plan.problem == "regression" and plan.metric == "val_rmse"
    assert plan.dropped["price_copy"].startswith("likely leakage: rank correlation +1.0000")
    assert "score" in plan.numeric  # strongly related is not perfect
    frame["grade"] = np.random.default_rng(4).integers(1, 6, size=len(frame))
    assert plan_of(project, frame, tmp_path, "grade").problem == "multiclass"
    assert plan_of(project, frame, tmp_path, "grade", problem="regression").problem_reason.startswith(
        "--problem regression"
    )


def test_missing_target_rows_and_missing_markers(project, tmp_path):
    frame = frame_of().astype({"score": object})
    frame.loc[[1, 2], "score"] = "?"
    frame.loc[[5], "outcome"] = np.nan
    with pytest.raises(RunError, match="mixed types in column"):
        plan_of(project, frame, tmp_path, "outcome")
    plan = plan_of(project, frame, tmp_path, "outcome", missing=["?"])
    assert plan.n_rows == 119 and plan.n_missing_target == 1 and "score" in plan.numeric
    assert plan.warnings[0] == "1 rows have no 'outcome'; they are left out of the task"


def test_data_inside_the_repository_is_referenced_relative_and_ignored_by_git(project):
    csv = project.path / "data" / "churn.csv"
    csv.parent.mkdir()
    frame_of().to_csv(csv, index=False)
    repo = Repo(project.path)
    plan = newtask.plan(repo, csv, "outcome")
    assert plan.data_ref == "data/churn.csv" and plan.inside_repo and plan.name == "churn"
    assert newtask.ignore_data_file(repo, plan) == "added /data/churn.csv to .gitignore: data never goes into git"
    assert project.status() == "M .gitignore"
    assert newtask.ignore_data_file(repo, plan) is None  # already ignored: not added twice
    folder = newtask.write_files(repo, plan)
    assert 'DATA_PATH = "data/churn.csv"  # relative to ROOT' in (folder / "prepare.py").read_text()


def test_leakage_ceiling_is_flagged_after_the_baseline(project, tmp_path):
    plan = plan_of(project, frame_of(), tmp_path, "outcome")
    note = newtask.leakage_note(plan, {"val_auc": "0.9947"})
    assert "val_auc 0.9947 is at or above 0.99" in note and "val_logloss" in note
    assert newtask.leakage_note(plan, {"val_auc": "0.91"}) is None


# -- the shared harness: class labels as codes, all classes, companion metrics -------------------------------
def test_class_labels_are_encoded_in_sorted_order():
    task = tabular.TabularTask(name="t", load=None, problem="multiclass")
    codes, classes = tabular.encode_target(task, pd.Series(["b", "c", "a", "b"]))
    assert list(classes) == ["a", "b", "c"] and codes.tolist() == [1, 2, 0, 1]
    task.metric = "val_r2"
    with pytest.raises(Exception, match="does not apply to a multiclass task"):
        tabular.metric_of(task)


def test_a_class_missing_from_a_fit_gets_probability_zero():
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    full = tabular_child.all_classes(proba, np.array([0, 2]), 3)
    assert full.tolist() == [[0.2, 0.0, 0.8], [0.6, 0.0, 0.4]]
    assert tabular_child.all_classes(proba, np.array([0, 1]), 2) is proba


def test_balanced_accuracy_of_binary_probabilities():
    y = np.array([0, 0, 1, 1])
    assert tabular.score("val_balanced_accuracy", y, np.array([0.1, 0.6, 0.7, 0.9]), np.arange(2)) == 0.75


# -- the file as people have it: separators, encodings, Excel, formats that are not tables, dates --------------
def generated_prepare(folder: Path):
    """The task's frozen prepare.py as a module: its load() is what the harness reads at score time."""
    spec = importlib.util.spec_from_file_location(f"prepare_{folder.name}", folder / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def written_task(project, path: Path, target: str = "outcome", **options):
    """plan + write_files, no baseline scoring: the plan and the frozen harness's (features, target)."""
    repo = Repo(project.path)
    plan = newtask.plan(repo, path, target, **options)
    folder = newtask.write_files(repo, plan)
    return plan, folder, generated_prepare(folder).load()


def with_dates(frame: pd.DataFrame, fmt: str = "%d/%m/%Y") -> pd.DataFrame:
    """A visit date per row, all distinct (what an identifier looks like too), written in `fmt`."""
    return frame.assign(visit=pd.date_range("2021-01-05", periods=len(frame), freq="D").strftime(fmt))


def accented(frame: pd.DataFrame) -> pd.DataFrame:
    regions = {"red": "Île-de-France", "green": "Bretagne", "blue": "Provence-Alpes-Côte d'Azur"}
    return frame.assign(colour=frame["colour"].map(regions)).rename(columns={"outcome": "résultat"})


@pytest.mark.parametrize(
    ("sep", "decimal", "note"),
    [(";", ",", "';'-separated, decimal comma"), ("\t", ".", "tab-separated"), ("|", ".", "'|'-separated")],
)
def test_semicolon_tab_and_pipe_separated_files_become_tasks(project, tmp_path, sep, decimal, note):
    frame = frame_of()
    csv = tmp_path / "measures.csv"
    frame.to_csv(csv, sep=sep, decimal=decimal, index=False)
    plan, folder, (x, y) = written_task(project, csv)
    assert plan.source.options == {"sep": sep, "decimal": decimal, "encoding": "utf-8"} and plan.source.note == note
    assert plan.numeric == ["age", "score"] and plan.categorical == ["colour"]  # 0,53 read as a number, not text
    np.testing.assert_allclose(x["score"].to_numpy(), frame["score"].to_numpy())
    assert y.tolist() == frame["outcome"].tolist()
    assert f"Read as: {note}." in (folder / "prepare.py").read_text()
    assert f"read as:   {note}" in (folder / "README.md").read_text()


def test_names_quoted_with_apostrophes_lose_their_quotes(project, tmp_path):
    """As statsmodels' anes96.csv: tab-separated, every name in 'quotes'."""
    path = tmp_path / "anes.csv"
    body = frame_of().to_csv(sep="\t", index=False).split("\n", 1)[1]
    path.write_text("'age'\t'score'\t'colour'\t'outcome'\n" + body)
    plan, _, (x, _) = written_task(project, path)
    assert plan.source.options["quotechar"] == "'" and plan.source.note == "tab-separated, names quoted with '"
    assert list(x.columns) == ["age", "score", "colour"]


def test_a_comma_file_stays_comma_separated_with_semicolons_in_its_text(project, tmp_path):
    frame = frame_of().assign(colour=lambda f: f["colour"] + ";dark")  # unquoted by pandas: ';' needs no quotes
    csv = tmp_path / "plain.csv"
    frame.to_csv(csv, index=False)
    plan = newtask.plan(Repo(project.path), csv, "outcome")
    assert plan.source.options["sep"] == "," and plan.source.note == ""
    assert "Read as: comma-separated UTF-8." in newtask.taskfiles.prepare_py(plan)


@pytest.mark.parametrize(
    ("encoding", "sep", "bom"), [("utf-8-sig", ",", b"\xef\xbb\xbfage,"), ("utf-16", "\t", b"\xff\xfea\x00g\x00")]
)
def test_a_file_with_a_bom_has_none_in_its_first_column_name(project, tmp_path, encoding, sep, bom):
    csv = tmp_path / "excel_export.csv"  # UTF-16 and tabs: Excel's "Unicode text"
    frame_of().to_csv(csv, index=False, sep=sep, encoding=encoding)
    assert csv.read_bytes().startswith(bom)
    plan, _, (x, _) = written_task(project, csv)
    assert plan.source.options["encoding"] == encoding and plan.numeric == ["age", "score"]
    assert list(x.columns) == ["age", "score", "colour"]


def test_a_latin1_file_with_accents_reads_them_right(project, tmp_path):
    frame = accented(frame_of())
    csv = tmp_path / "régions.csv"
    frame.to_csv(csv, sep=";", decimal=",", index=False, encoding="cp1252")
    with pytest.raises(UnicodeDecodeError):
        csv.read_text(encoding="utf-8")
    plan, folder, (x, y) = written_task(project, csv, target="résultat")
    assert plan.source.note == "';'-separated, decimal comma, Windows-1252 (Latin-1) text"
    assert set(x["colour"]) == {"Île-de-France", "Bretagne", "Provence-Alpes-Côte d'Azur"}
    assert set(y) == {"yes", "no"} and plan.target == "résultat" and plan.name == "regions"
    assert 'READ_OPTIONS = {"sep": ";", "decimal": ",", "encoding": "cp1252"}' in (folder / "prepare.py").read_text()


def test_an_xlsx_saved_as_csv_becomes_a_task_the_harness_reads(project, tmp_path):
    frame = with_dates(frame_of()).assign(visit=lambda f: pd.to_datetime(f["visit"], format="%d/%m/%Y"))
    book = tmp_path / "book.xlsx"
    with pd.ExcelWriter(book) as writer:
        frame.to_excel(writer, sheet_name="data", index=False)
        frame.head(3).to_excel(writer, sheet_name="notes", index=False)
    csv = tmp_path / "book.csv"
    book.rename(csv)  # the name says CSV; the bytes are a workbook
    plan, folder, (x, y) = written_task(project, csv)
    assert plan.source.kind == "excel" and plan.source.options == {"sheet_name": "data"}
    assert plan.source.note == "an Excel workbook (sheet 'data', the first of 2; the others are not read)"
    assert plan.numeric == ["age", "score"] and plan.categorical == ["colour"] and list(plan.dates) == ["visit"]
    assert plan.dates["visit"].format is None  # the workbook holds dates, not text: nothing to parse
    assert pd.api.types.is_datetime64_any_dtype(x["visit"]) and len(x) == len(y) == len(frame)
    assert "pd.read_excel(source, na_values=MISSING_VALUES, **READ_OPTIONS)" in (folder / "prepare.py").read_text()
    out = subprocess.run(
        [sys.executable, str(folder / "prepare.py"), "--check-data"],
        capture_output=True,
        text=True,
        env=project.env,
    )
    assert out.returncode == 0, out.stderr  # a fresh harness process reads the workbook and its checksum


NOT_TABLES = {
    "parquet": (b"PAR1\x15\x04\x15\x10" + bytes(64), "is a Parquet file, not a CSV: write it as CSV"),
    "xls": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "is an old Excel workbook (.xls), not a CSV: open it"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(64), "is gzip-compressed, not a CSV: decompress it"),
    "zip": (None, "is a zip archive, not a CSV: unzip it"),
    "binary": (b"age,score\x00\x01\x02\n" * 4, "is binary (it has NUL bytes), not a CSV"),
    "one column": (b"age score outcome\n1 2 yes\n3 4 no\n", "1 column(s) (no separator among comma, ';', tab and '|'"),
}


@pytest.mark.parametrize("case", list(NOT_TABLES))
def test_a_file_that_is_not_a_table_gets_one_line_naming_its_format(case, project, tmp_path, monkeypatch, capsys):
    content, message = NOT_TABLES[case]
    path = tmp_path / "data.csv"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data/part-1.csv", "age,outcome\n1,yes\n")
    else:
        path.write_bytes(content)
    before = project.status()
    monkeypatch.chdir(project.path)
    assert ratchet.main(["new-task", str(path), "--target", "outcome"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (project.path / "tasks").exists() and project.status() == before


def test_a_date_column_is_kept_as_dates_and_noted_in_the_card(project, tmp_path):
    frame = with_dates(frame_of())
    frame.loc[[4, 9], "visit"] = ["soon", "31/02/2021"]  # not dates in the format: read as missing, with a warning
    frame["band"] = np.where(frame["age"] < 50, "20-49", "50-79")  # a range, not a date
    frame["year"] = 2000 + np.arange(len(frame)) % 20  # numbers stay numbers
    frame["code"] = np.arange(len(frame))  # a row number stays an identifier
    csv = tmp_path / "visits.csv"
    frame.to_csv(csv, index=False)
    plan, folder, (x, _) = written_task(project, csv)
    assert list(plan.dates) == ["visit"] and plan.dates["visit"].format == "%d/%m/%Y"
    assert "visit" not in plan.dropped and plan.dropped["code"].startswith("identifier-like")
    assert plan.categorical == ["colour", "band"] and plan.numeric == ["age", "score", "year"]
    assert "2 value(s) of date column 'visit' do not fit %d/%m/%Y: read as missing" in plan.warnings
    assert x["visit"].isna().sum() == 2 and x["visit"].iloc[0] == pd.Timestamp("2021-01-05")
    prepare = (folder / "prepare.py").read_text()
    assert 'DATE_COLUMNS = {\n    "visit": "%d/%m/%Y",\n}' in prepare
    card = (folder / "README.md").read_text()
    assert "date:      visit (text in %d/%m/%Y), handed to train.py as datetime64" in card
    assert "features:  3 numeric, 2 categorical and 1 date" in card and "not cut by time" in card

    # The baseline uses the dates as numbers and fits (the harness runs this same code in each fold).
    train = generated_train(folder)
    features = train.feature_fn(x.copy())
    assert {"visit_year", "visit_month", "visit_day", "visit_weekday"} <= set(features.columns)
    assert "visit" not in features.columns
    pipeline = train.build_pipeline().fit(features, (generated_prepare(folder).load()[1] == "yes").astype(int))
    assert pipeline.predict_proba(features).shape == (len(x), 2)


def generated_train(folder: Path):
    spec = importlib.util.spec_from_file_location(f"train_{folder.name}", folder / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dates_whose_day_and_month_could_swap_are_flagged(project, tmp_path):
    frame = frame_of(60).assign(visit=[f"{m:02d}/{d:02d}/2021" for m in range(1, 13) for d in range(1, 6)])
    plan = plan_of(project, frame, tmp_path, "outcome")
    assert plan.dates["visit"].format == "%m/%d/%Y" and plan.dates["visit"].ambiguous == "%d/%m/%Y"
    assert any("%d/%m/%Y fits every value too (no day above 12)" in w for w in plan.warnings)
    unambiguous = frame_of(60).assign(visit=[f"{d:02d}/{m:02d}/2021" for m in range(1, 13) for d in range(9, 14)])
    assert plan_of(project, unambiguous, tmp_path, "outcome").dates["visit"].format == "%d/%m/%Y"


@pytest.mark.slow
def test_a_european_file_with_dates_scores_its_baseline(project, tmp_path):
    csv = tmp_path / "régions.csv"
    with_dates(accented(frame_of(150))).to_csv(csv, sep=";", decimal=",", index=False, encoding="cp1252")
    out = new_task(project, csv, "--target", "résultat", "--name", "regions")
    assert out.returncode == 0, out.stderr
    assert "read régions.csv as ';'-separated, decimal comma, Windows-1252 (Latin-1) text" in out.stdout
    assert "date column(s) kept as dates: visit (%d/%m/%Y)" in out.stdout
    assert "2 numeric, 1 categorical and 1 date features" in out.stdout
    block = block_of(out.stdout)
    assert block["status"] == "ok" and 0.6 < float(block["val_auc"]) < 1.0
