"""The three files of a generated task: the frozen prepare.py, the baseline train.py and the task card README.md.

Rendered from a `newtask.Plan`. prepare.py holds only constants and `load()`; the harness itself is the shared
`autoresearch.tabular`, as for the heart task. train.py keeps the root train.py's contract word for word.
"""

from __future__ import annotations

import json
from string import Template

from autoresearch import tabular
from autoresearch.contract import Block

TASKS_DIR = "tasks"  # generated tasks live in <repo>/tasks/<name>/, next to the heart task at the root

PREPARE = Template('''\
"""Frozen harness of the $name task, made by `ratchet.py new-task` from $file. Do not edit it: the ratchet
refuses to score while it differs by a byte.

How you are scored (the whole contract; program.md says how the loop runs, README.md here is the task card):
- Data: $file, target `$target` ($problem). A fixed, seeded $holdout_pct% is held out: train.py never sees its
  labels, and its score goes only to the person's morning report. The data is read where it lies
  (DATA_PATH), checked against DATA_SHA256 and never copied into git.
  Read as: $read_note.
- Metric: $metric ($direction is better) by ${folds}x$repeats repeated$stratified k-fold CV on the other rows,
  the same folds for every candidate.$companions
- What train.py gives: `feature_fn(df)` and `build_pipeline()` (train.py's docstring). Each fold runs in a
  fresh sandboxed process that gets that fold's training rows with labels and its evaluation rows without.
- Budget: $budget s of CPU time for the whole evaluation ($n_fits fits, all they start; a busy machine does
  not eat it), and $wall_cap s of wall time for one that sleeps or hangs. Past either: CRASH.
- Kept when the paired test over the fold scores, corrected for their overlap, says the gain is beyond noise,
  or the score is equal within noise and the code smaller in syntax nodes (docstrings, comments and
  formatting do not count): the keep rule `corrected`, the project README, "The keep rule".

    uv run $rel/prepare.py --check-data     check the data file
    uv run $rel/prepare.py                  score train.py and print the summary block (same as `uv run $rel/train.py`)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from autoresearch import data
from autoresearch.tabular import TabularTask, main

TASK = $name_lit
ROOT = Path(__file__).resolve().parents[2]  # the repository root: this file is $rel/prepare.py
DATA_PATH = $data_path  # $data_path_why
DATA_SHA256 = $sha256  # the file when the task was made
READ_OPTIONS = $read_options  # found from the file's content
MISSING_VALUES = $missing  # read as missing on top of pandas' defaults (empty, NA, NaN, ...)
DATE_COLUMNS = {$date_columns}  # text read as datetimes in this format; a value that does not fit is missing
TARGET = $target_lit  # $target_summary
PROBLEM = $problem_lit  # $problem_reason
METRIC = $metric_lit
DROP_COLUMNS = {$dropped}  # not features: why, as found when the task was made
TIME_BUDGET_SECONDS = $budget  # CPU-s, the whole evaluation of a candidate ($n_fits fits), set by new-task --budget
HOLDOUT_FRACTION = $holdout  # as the heart task
SPLIT_SEED = $split_seed  # fixes the held-out rows for every run of this task
N_FOLDS = $folds
N_REPEATS = $repeats  # ${folds}x$repeats gives $n_folds_total paired fold scores
CV_SEED = $cv_seed  # the ratchet's folds; the report re-measures on fresh seeds


def load(path: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target; a missing or changed data file is a one-line DataError, never a different result."""
    source = Path(path).expanduser() if path else ROOT / DATA_PATH
    if not source.is_file():
        raise data.DataError(f"{source}: no such file; this task reads its data there (or pass --data PATH)")
    if data.sha256_of(source) != DATA_SHA256:
        raise data.DataError(f"{source} changed since the task was made (sha256 differs); new data needs a new task")
    frame = $reader_call
    frame.columns = [str(c) for c in frame.columns]  # a workbook's header may hold numbers; columns are named
    for column, date_format in DATE_COLUMNS.items():
        frame[column] = pd.to_datetime(frame[column], format=date_format, errors="coerce")
    frame = frame.dropna(subset=[TARGET])
    return frame.drop(columns=[TARGET, *DROP_COLUMNS]), frame[TARGET]


TASK_SPEC = TabularTask(
    name=TASK,
    load=load,
    problem=PROBLEM,
    metric=METRIC,
    time_budget_seconds=TIME_BUDGET_SECONDS,
    holdout_fraction=HOLDOUT_FRACTION,
    split_seed=SPLIT_SEED,
    n_folds=N_FOLDS,
    n_repeats=N_REPEATS,
    cv_seed=CV_SEED,
)

if __name__ == "__main__":
    sys.exit(main(TASK_SPEC, default_train=Path(__file__).resolve().parent / "train.py"))
''')

TRAIN = Template('''\
"""The one file the agent edits. Task $name: predict `$target` ($problem) from the columns of $file.

Contract with the frozen harness (prepare.py), which imports this file only in a child process:
- `feature_fn(df) -> DataFrame`: row-wise feature engineering on raw features (no labels). It is applied to
  training and evaluation rows separately in every fold. $columns_note
- `build_pipeline()` returns an unfitted estimator with `fit(X, y)` and $predict; it is fitted
  anew in each of the $n_folds_total folds, so anything learned from data (scaling, imputation, encoding) lives here.
- $labels_note
- Anything in the declared dependencies is fair game: scikit-learn, LightGBM, FLAML (`AutoML` needs NaN-free
  or DataFrame input), XGBoost (CPU). The harness owns the clock ($budget CPU-s for the whole evaluation) and the
  metric ($metric); printing, timing or scoring here changes nothing that is recorded.
Run by hand: `uv run $rel/train.py` prints the summary block.
"""

import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.linear_model import $model_class
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HYPOTHESIS = "baseline: $model_desc on median-imputed scaled numbers and one-hot categories"
$model_constants


def feature_fn(df: pd.DataFrame) -> pd.DataFrame:$date_code
    text = df.select_dtypes(exclude="number").columns
    df[text] = df[text].astype(str)  # one type per column for the encoder; a missing value becomes the category "nan"
    return df


def build_pipeline():
    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categories = OneHotEncoder(handle_unknown="ignore")  # a category first seen in evaluation rows is all zeros
    features = ColumnTransformer([
        ("numbers", numbers, make_column_selector(dtype_include="number")),
        ("categories", categories, make_column_selector(dtype_exclude="number")),
    ])
    return make_pipeline(features, $model_call)


if __name__ == "__main__":
    # Hand the run to the frozen harness in a fresh interpreter: the scorer never shares a process with this file.
    import os
    import sys

    harness = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prepare.py")
    os.execv(sys.executable, [sys.executable, harness, "--train", os.path.abspath(__file__), *sys.argv[1:]])
''')

MODELS = {
    "classification": dict(
        model_class="LogisticRegression",
        model_desc="logistic regression",
        model_constants="C = 1.0  # inverse regularisation strength, sklearn's default\n"
        "MAX_ITER = 1000  # lbfgs stops well before this on scaled features",
        model_call="LogisticRegression(C=C, max_iter=MAX_ITER)",
    ),
    "regression": dict(
        model_class="Ridge",
        model_desc="ridge regression",
        model_constants="ALPHA = 1.0  # L2 penalty, sklearn's default",
        model_call="Ridge(alpha=ALPHA)",
    ),
}


def _lit(value) -> str:
    """A Python literal for a string or a list of strings, double-quoted like the rest of the code."""
    return json.dumps(value, ensure_ascii=False)


# The baseline's use of date columns (datetime64 from prepare.py): numbers a linear model can take.
DATE_CODE = """
    for column in df.select_dtypes(include=["datetime", "datetimetz"]).columns:
        when = df.pop(column)  # a date as year, month, day and weekday numbers; a missing date is NaN in each
        df[f"{column}_year"], df[f"{column}_month"] = when.dt.year, when.dt.month
        df[f"{column}_day"], df[f"{column}_weekday"] = when.dt.day, when.dt.day_of_week"""

# The call that reads the data in prepare.py, per format: the same as tablefile.read (keep the two the same).
READER_CALLS = {
    "csv": "pd.read_csv(source, na_values=MISSING_VALUES, low_memory=False, **READ_OPTIONS)",
    "excel": "pd.read_excel(source, na_values=MISSING_VALUES, **READ_OPTIONS)",
}


def feature_counts(plan) -> str:
    """ "5 numeric and 1 categorical", with the date columns when there are some."""
    counts = [f"{len(plan.numeric)} numeric", f"{len(plan.categorical)} categorical"]
    if plan.dates:
        counts.append(f"{len(plan.dates)} date")
    return ", ".join(counts[:-1]) + " and " + counts[-1]


def _common(plan) -> dict:
    classification = plan.problem != "regression"
    return dict(
        name=plan.name,
        rel=f"{TASKS_DIR}/{plan.name}",
        file=plan.csv.name,
        target=plan.target,
        problem=plan.problem,
        metric=plan.metric,
        direction="higher" if plan.higher_is_better else "lower",
        folds=tabular.N_FOLDS,
        repeats=tabular.N_REPEATS,
        n_folds_total=tabular.N_FOLDS * tabular.N_REPEATS,
        n_fits=tabular.N_FOLDS * tabular.N_REPEATS + 1,
        stratified=" stratified" if classification else "",
        budget=f"{plan.budget:g}",
        wall_cap=f"{tabular.wall_cap_seconds(plan.budget):g}",
        holdout=tabular.HOLDOUT_FRACTION,
        holdout_pct=f"{tabular.HOLDOUT_FRACTION * 100:g}",
        split_seed=tabular.SPLIT_SEED,
        cv_seed=tabular.CV_SEED,
    )


def prepare_py(plan) -> str:
    choices = tabular.METRIC_CHOICES[plan.problem]
    others = [m for m in (*tabular.COMPANIONS[plan.problem], choices[0]) if m != plan.metric]
    companions = f" Also reported: {', '.join(dict.fromkeys(others))}." if others else ""
    dropped = "".join(f"\n    {_lit(c)}: {_lit(why)}," for c, why in plan.dropped.items())
    why = (
        "relative to ROOT: the file is inside the repository, ignored by git"
        if plan.inside_repo
        else "absolute: the file lies outside the repository"
    )
    options = ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in plan.source.options.items())
    date_columns = "".join(f"\n    {_lit(c)}: {_lit(d.format)}," for c, d in plan.dates.items() if d.format)
    return PREPARE.substitute(
        _common(plan),
        read_note=plan.source.note or "comma-separated UTF-8",
        read_options="{" + options + "}",
        reader_call=READER_CALLS[plan.source.kind],
        date_columns=date_columns + ("\n" if date_columns else ""),
        name_lit=_lit(plan.name),
        data_path=_lit(plan.data_ref),
        data_path_why=why,
        sha256=_lit(plan.sha256),
        missing=_lit(plan.missing_values),
        target_lit=_lit(plan.target),
        target_summary=plan.target_summary,
        problem_lit=_lit(plan.problem),
        problem_reason=plan.problem_reason,
        metric_lit=_lit(plan.metric),
        companions=companions,
        dropped=dropped + ("\n" if dropped else ""),
    )


def train_py(plan) -> str:
    classification = plan.problem != "regression"
    columns = f"{len(plan.numeric)} numeric and {len(plan.categorical)} categorical (text) columns"
    columns_note = f"It sees {columns}; missing values are NaN."
    if plan.dates:
        columns_note += (
            f"\n  Also {len(plan.dates)} date column(s), as datetime64 (NaT when missing): {', '.join(plan.dates)}."
        )
    if classification:
        codes = ", ".join(f"{k} = {label!r}" for k, label in enumerate(plan.classes[:10]))
        codes += ", …" if len(plan.classes) > 10 else ""
        if plan.classes == list(range(len(plan.classes))):
            codes = f"the classes 0..{len(plan.classes) - 1}, as in the data"
        labels = (
            f"Labels are class codes in the sorted order of the labels: {codes}.\n  `predict_proba` columns "
            "follow `classes_`; a class a fit never saw scores 0."
        )
        predict = "`predict_proba(X)`"
    else:
        labels = "Labels are the target's values as floats; `predict` returns one number per row."
        predict = "`predict(X)`"
    model = MODELS["classification" if classification else "regression"]
    return TRAIN.substitute(
        _common(plan),
        columns_note=columns_note,
        labels_note=labels,
        predict=predict,
        date_code=DATE_CODE if plan.dates else "",
        **model,
    )


def card(plan, block: Block | None = None) -> str:
    rel = f"{TASKS_DIR}/{plan.name}"
    where = "inside the repository, ignored by git" if plan.inside_repo else "outside the repository"
    unlabelled = f" ({plan.n_missing_target} more without a target, left out)" if plan.n_missing_target else ""
    cv = f"{tabular.N_FOLDS}x{tabular.N_REPEATS} repeated CV"
    held_out = f"{tabular.HOLDOUT_FRACTION:.0%} held out (seed {tabular.SPLIT_SEED})"
    lines = [
        f"# Task {plan.name}",
        "",
        f"Made by `ratchet.py new-task` on {plan.created} from `{plan.csv.name}`. prepare.py is frozen: the ratchet",
        "refuses a run that changes it; train.py is the one file the agent edits.",
        "",
        "```",
        f"data:      {plan.data_ref} ({where}; sha256 {plan.sha256[:16]}…)",
        f"rows:      {plan.n_rows}{unlabelled}",
        f"target:    {plan.target}, {plan.problem} ({plan.problem_reason})",
        f"           {plan.target_summary}",
        f"metric:    {plan.metric}, {'higher' if plan.higher_is_better else 'lower'} is better; {cv}, {held_out}",
        f"budget:    {plan.budget:g} CPU-s for the whole evaluation of a candidate "
        f"({tabular.wall_cap_seconds(plan.budget):g} s of wall time at most)",
        f"features:  {feature_counts(plan)}",
    ]
    if plan.source.note:
        lines.insert(lines.index("```") + 2, f"read as:   {plan.source.note}")
    for column, date in plan.dates.items():
        written = f"text in {date.format}" if date.format else "dates in the workbook"
        lines.append(f"date:      {column} ({written}), handed to train.py as datetime64")
    for column, why in plan.dropped.items():
        lines.append(f"left out:  {column}: {why}")
    if block:
        scored = f"{block.value:.4f} ± {block.se:.4f}, scored in {block.total_seconds:.1f} s"
        lines.append(f"baseline:  {plan.metric} {scored}")
    lines += ["```", ""]
    if plan.warnings:
        lines += ["Warnings when the task was made:", ""] + [f"- {w}" for w in plan.warnings] + [""]
    if plan.dates:
        lines += [
            f"Date columns ({', '.join(plan.dates)}) reach train.py as datetime64 (prepare.py's DATE_COLUMNS parses",
            "text dates in the format found). The baseline turns each into year, month, day and weekday numbers.",
            "The folds and the held-out part are random rows, not cut by time: a model scored here has seen rows",
            "from after the ones it predicts, which a forecast in production never has.",
            "",
        ]
    lines += [
        "Start a run (after committing this folder):",
        "",
        "```",
        f"uv run scripts/ratchet.py start {plan.name}-1 --task {rel}",
        "```",
        "",
    ]
    return "\n".join(lines)
