"""Your own CSV as a task: check it, infer the problem, write a frozen prepare.py, a baseline train.py and a card.

`plan(...)` reads the file (`tablefile.py` finds its format, encoding, separator and date columns) and runs every
check before anything is written; a fault is a RunError naming the
column(s). What is certainly broken (no target, one class, too few rows, mixed types, a text target for
regression) refuses; what is only suspicious (identifier-like columns, perfect predictors of the target) and
what carries no information (constant or all-missing columns) is left out of the features, with a warning
printed and the reason recorded in the frozen prepare.py (`--keep COL` keeps a column anyway).
`new_task(...)` writes the files (`taskfiles.py` renders them) and runs the harness once as a sanity check.
"""

from __future__ import annotations

import difflib
import io
import math
import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from autoresearch import data, proc, summary, tablefile, taskfiles
from autoresearch.contract import WALL_CAP_FACTOR, Block
from autoresearch.gitops import Repo
from autoresearch.harness import HARNESS_GRACE_SECONDS
from autoresearch.runs import RunError
from autoresearch.stopping import LEAKAGE_CEILINGS
from autoresearch.tabular import (
    HOLDOUT_FRACTION,
    METRIC_CHOICES,
    N_FOLDS,
    SPLIT_SEED,
    TabularTask,
    higher_is_better,
    split,
)
from autoresearch.taskfiles import TASKS_DIR

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_BUDGET_SECONDS = 60.0  # as the heart task: room for gradient boosting on a few thousand rows
MIN_ROWS = 50  # below this a 20 % held-out part and 5 folds leave under 10 rows per evaluation fold
MAX_INFERRED_CLASSES = 20  # an integer target with more distinct values than this is taken as regression
MIXED_NUMERIC_SHARE = 0.5  # a text column whose values are mostly numbers is a dirty numeric column, not a category
ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^(id|index)([_\W]|$)", re.IGNORECASE)
PERFECT_RANK_CORRELATION = 0.999  # a regression feature this monotone in the target is the target in disguise
EXAMPLES = 3  # offending values quoted in a message


@dataclass
class Plan:
    """Everything the task files say, decided from the data before anything is written."""

    name: str
    csv: Path
    data_ref: str  # DATA_PATH as written: relative to the repository root if the file is inside it
    inside_repo: bool
    sha256: str
    target: str
    problem: str
    problem_reason: str
    metric: str
    budget: float
    missing_values: list[str]
    n_rows: int
    n_missing_target: int
    target_summary: str
    numeric: list[str]
    categorical: list[str]
    classes: list = field(default_factory=list)  # the labels in sorted order: code k stands for classes[k]
    source: tablefile.Source = field(default_factory=lambda: tablefile.Source("csv"))  # how the file is read
    dates: dict[str, tablefile.DateColumn] = field(default_factory=dict)  # feature columns read as datetimes
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    warnings: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: date.today().isoformat())

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


def _names(columns, most: int = 6) -> str:
    columns = [str(c) for c in columns]
    shown = ", ".join(columns[:most])
    return shown + (f" and {len(columns) - most} more" if len(columns) > most else "")


def _show(value) -> str:
    """A value as a person wrote it: 'yes', 3, 0.5 (not np.float64(0.5))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def read_table(path: Path, missing_values: list[str]) -> tuple[pd.DataFrame, tablefile.Source]:
    """The table and how it was read: the same call, with the same options, as the generated prepare.py."""
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    source = tablefile.sniff(path)
    try:
        frame = tablefile.read(path, source, missing_values)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{path}: not a readable table with a header row ({' '.join(str(exc).split())})") from exc
    if frame.shape[1] < 2:
        tried = "" if source.kind == "excel" else " (no separator among comma, ';', tab and '|' splits its header)"
        raise RunError(f"{path}: {frame.shape[1]} column(s){tried}; a task needs a target and at least one feature")
    return frame, source


def is_text(values: pd.Series) -> bool:
    """Read as text: pandas 3 gives text columns the `str` dtype, older pandas `object`."""
    return pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)


def mixed_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Text columns whose values are mostly numbers: a number column with stray text (e.g. '?' for missing)."""
    found = {}
    for column in [c for c in frame.columns if is_text(frame[c])]:
        present = frame[column].dropna()
        if present.empty:
            continue
        numbers = pd.to_numeric(present, errors="coerce").notna()
        if numbers.mean() >= MIXED_NUMERIC_SHARE and not numbers.all():
            text = pd.unique(present[~numbers].astype(str))[:EXAMPLES]
            found[str(column)] = f"{(~numbers).sum()} of {len(present)} values are not numbers, e.g. " + ", ".join(
                repr(t) for t in text
            )
    return found


def infer_problem(y: pd.Series) -> tuple[str, str]:
    """(problem type, why) from the target's values (missing ones already removed)."""
    distinct = y.nunique()
    if distinct == 2:
        return "binary", "2 distinct values"
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "multiclass", f"{distinct} distinct text values"
    integral = bool(np.all(np.mod(y.to_numpy(dtype=float), 1) == 0))
    if integral and distinct <= MAX_INFERRED_CLASSES:
        return "multiclass", f"{distinct} distinct whole numbers; up to {MAX_INFERRED_CLASSES} are taken as classes"
    kind = "whole numbers" if integral else "numbers"
    return "regression", f"{distinct} distinct {kind}"


def identifier_like(column: str, values: pd.Series) -> str | None:
    present = values.dropna()
    if len(present) < 2 or present.nunique() != len(values):
        return None  # a repeated or missing value: not a key
    if ID_NAME.search(column):
        return "identifier-like: named like a key, every value distinct"
    if is_text(values):
        return "identifier-like: text with every value distinct"
    if pd.api.types.is_integer_dtype(values) and values.max() - values.min() == len(values) - 1:
        return "identifier-like: consecutive whole numbers, every value distinct (a row number)"
    return None


def perfect_predictor(values: pd.Series, y: pd.Series, problem: str) -> str | None:
    """Why `values` gives the target away (likely leakage), or None."""
    present = values.notna()
    v, t = values[present], y[present]
    if len(v) < 10 or v.nunique() < 2:
        return None
    if problem == "regression":
        if not pd.api.types.is_numeric_dtype(v):
            return None
        rho = v.rank().corr(t.rank())
        if math.isfinite(rho) and abs(rho) >= PERFECT_RANK_CORRELATION:
            return f"likely leakage: rank correlation {rho:+.4f} with the target"
        return None
    if t.nunique() != y.nunique():
        return None
    if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
        ranges = v.groupby(t).agg(["min", "max"]).sort_values("min").to_numpy()
        if np.all(ranges[1:, 0] > ranges[:-1, 1]):
            return "likely leakage: its value ranges do not overlap between classes (it alone predicts the target)"
        return None
    if v.nunique() <= len(v) / 2 and (t.groupby(v.astype(str)).nunique() == 1).all():
        return "likely leakage: each of its values goes with one class only (it alone predicts the target)"
    return None


def min_rows_per_class() -> int:
    """The smallest class that still has N_FOLDS rows in the development part after the held-out cut."""
    rows = N_FOLDS
    while rows - math.ceil(rows * HOLDOUT_FRACTION) < N_FOLDS:
        rows += 1
    return rows


def check_rows(y: pd.Series, problem: str) -> None:
    if len(y) < MIN_ROWS:
        raise RunError(
            f"{len(y)} rows with a target; a task needs at least {MIN_ROWS} for a held-out part and {N_FOLDS} folds"
        )
    if problem == "regression":
        return
    counts = y.value_counts()
    need = min_rows_per_class()
    small = counts[counts < need]
    if not small.empty:
        shown = ", ".join(f"{_show(k)} has {v}" for k, v in small.items())
        raise RunError(
            f"too few rows per class for stratified {N_FOLDS}-fold CV after the held-out part "
            f"(each class needs at least {need}): {shown}; merge rare classes, or --problem regression "
            "if the target is a quantity"
        )
    codes = pd.Series(pd.factorize(y)[0], index=y.index)
    task = TabularTask(
        name="check", load=None, problem=problem, holdout_fraction=HOLDOUT_FRACTION, split_seed=SPLIT_SEED
    )
    try:
        _, _, y_dev, _ = split(task, codes.to_frame(), codes)
    except ValueError as exc:
        raise RunError(f"the held-out split fails on this target: {exc}") from exc
    if y_dev.value_counts().min() < N_FOLDS:
        raise RunError(f"a class has fewer than {N_FOLDS} rows in the development part; add rows or merge classes")


def target_summary(y: pd.Series, problem: str) -> str:
    if problem == "regression":
        return f"mean {y.mean():.4g}, sd {y.std():.4g}, range {y.min():.4g} to {y.max():.4g}"
    counts = y.value_counts().sort_index()
    shown = ", ".join(f"{_show(k)} ({v})" for k, v in list(counts.items())[:6])
    return f"{len(counts)} classes: {shown}" + (" …" if len(counts) > 6 else "")


def data_reference(repo: Repo, csv: Path) -> tuple[str, bool]:
    """DATA_PATH: relative to the repository root when the file is inside it (the repository can move with its
    data folder), absolute otherwise (the file stays where the person keeps it)."""
    resolved, root = csv.resolve(), repo.root.resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix(), True
    return str(resolved), False


def plan(
    repo: Repo,
    csv: str | Path,
    target: str,
    *,
    name: str | None = None,
    problem: str | None = None,
    metric: str | None = None,
    budget: float = DEFAULT_BUDGET_SECONDS,
    drop: list[str] | None = None,
    keep: list[str] | None = None,
    missing: list[str] | None = None,
    force: bool = False,
) -> Plan:
    """Read `csv` and run every check; nothing is written. Raises RunError with a one-line reason."""
    csv = Path(csv).expanduser()
    stem = unicodedata.normalize("NFKD", csv.stem).encode("ascii", "ignore").decode()  # régions -> regions
    name = name or re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-").lower() or "task"
    if not NAME_PATTERN.match(name):
        raise RunError(f"task name {name!r}: use letters, digits, '_' or '-' (at most 64), e.g. --name churn")
    folder = repo.root / TASKS_DIR / name
    if folder.exists() and not force:
        raise RunError(
            f"{repo.rel(folder)} exists; pick another --name, or pass --force to overwrite its "
            "prepare.py, train.py and README.md"
        )
    if not (budget > 0 and math.isfinite(budget)):
        raise RunError(f"--budget {budget}: give the seconds a candidate may take, e.g. --budget 60")
    missing_values, drop, keep = _split_list(missing), _split_list(drop), _split_list(keep)
    frame, source = read_table(csv, missing_values)
    columns = list(frame.columns)
    if target not in columns:
        close = difflib.get_close_matches(target, columns, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RunError(f"no column {target!r} in {csv.name}; {hint}columns: {_names(columns)}")
    unknown = [c for c in drop + keep if c not in columns]
    if unknown:
        raise RunError(f"--drop/--keep name(s) not in {csv.name}: {_names(unknown)}")
    if target in drop:
        raise RunError(f"--drop {target}: that is the target")
    mixed = mixed_columns(frame.drop(columns=drop))
    if target in mixed:
        raise RunError(
            f"target {target!r} mixes numbers and text ({mixed[target]}); clean the column, or name "
            "the missing-value marker with --missing"
        )
    if mixed:
        first = next(iter(mixed))
        raise RunError(
            f"mixed types in column(s) {_names(mixed)} ({first}: {mixed[first]}); clean them, name a "
            f"missing-value marker with --missing, or leave them out with --drop"
        )
    dates = tablefile.find_dates(frame, [c for c in columns if c != target and c not in drop])
    for column, found in dates.items():
        if found.format:  # as prepare.py does: the checks below see the dates the harness will hand to train.py
            frame[column] = tablefile.parse_dates(frame[column], found.format)
    y = frame[target].dropna()
    n_missing_target = len(frame) - len(y)
    if y.empty:
        raise RunError(f"target {target!r} is empty in every row")
    if y.nunique() < 2:
        raise RunError(
            f"target {target!r} has a single value ({_show(y.iloc[0])}) in all {len(y)} rows: nothing to predict"
        )
    inferred, reason = infer_problem(y)
    if problem and problem != inferred:
        if problem == "regression" and not pd.api.types.is_numeric_dtype(y):
            raise RunError(
                f"non-numeric regression target {target!r} (e.g. {_show(y.iloc[0])}); "
                "leave out --problem for classification"
            )
        if problem == "binary" and y.nunique() != 2:
            raise RunError(f"--problem binary: target {target!r} has {y.nunique()} distinct values, not 2")
        if problem == "multiclass" and y.nunique() == 2:
            raise RunError(
                f"--problem multiclass: target {target!r} has 2 values; use binary (--metric val_logloss for log loss)"
            )
        reason = f"--problem {problem} ({reason})"
    problem = problem or inferred
    if problem == "regression" and pd.api.types.is_bool_dtype(y):
        raise RunError(f"non-numeric regression target {target!r} (true/false values)")
    metric = metric or METRIC_CHOICES[problem][0]
    if metric not in METRIC_CHOICES[problem]:
        raise RunError(
            f"--metric {metric} does not apply to {problem}; choose from {', '.join(METRIC_CHOICES[problem])}"
        )
    check_rows(y, problem)

    features = frame.loc[y.index].drop(columns=[target])
    dropped = {c: "left out with --drop" for c in drop}
    warnings = []
    if n_missing_target:
        warnings.append(f"{n_missing_target} rows have no {target!r}; they are left out of the task")
    for column in features.columns:
        if column in dropped:
            continue
        values = features[column]
        if values.isna().all():
            dropped[column] = "all missing"
        elif values.nunique(dropna=False) == 1:
            dropped[column] = f"constant ({_show(values.iloc[0])} in every row)"
        elif column not in keep:
            # every value distinct is what a column of dates looks like too: a date is never taken for a key
            key = None if column in dates else identifier_like(column, values)
            why = key or perfect_predictor(values, y, problem)
            if why:
                dropped[column] = why
    for reason_kind in ("all missing", "constant", "identifier-like", "likely leakage"):
        hit = [c for c, why in dropped.items() if why.startswith(reason_kind)]
        if hit:
            tail = "" if reason_kind in ("all missing", "constant") else "; --keep COL to use it anyway"
            warnings.append(f"{reason_kind} column(s) left out of the features: {_names(hit)}{tail}")
    kept = features.drop(columns=list(dropped))
    if kept.shape[1] == 0:
        raise RunError(f"no feature column left (left out: {_names(dropped)})")
    dates = {c: d for c, d in dates.items() if c in kept.columns}
    warnings += date_warnings(dates)
    numeric = [
        c for c in kept.columns if pd.api.types.is_numeric_dtype(kept[c]) and not pd.api.types.is_bool_dtype(kept[c])
    ]
    categorical = [c for c in kept.columns if c not in numeric and c not in dates]
    data_ref, inside = data_reference(repo, csv)
    return Plan(
        name=name,
        csv=csv.resolve(),
        data_ref=data_ref,
        inside_repo=inside,
        sha256=data.sha256_of(csv),
        target=target,
        problem=problem,
        problem_reason=reason,
        metric=metric,
        budget=float(budget),
        missing_values=missing_values,
        n_rows=len(y),
        n_missing_target=n_missing_target,
        target_summary=target_summary(y, problem),
        numeric=numeric,
        categorical=categorical,
        dropped=dropped,
        warnings=warnings,
        classes=[] if problem == "regression" else [_plain(v) for v in np.unique(y.to_numpy())],
        source=source,
        dates=dates,
    )


def date_warnings(dates: Mapping[str, tablefile.DateColumn]) -> list[str]:
    """What a person should check about the columns read as dates."""
    found = []
    for column, how in dates.items():
        if how.unparsed:
            found.append(f"{how.unparsed} value(s) of date column {column!r} do not fit {how.format}: read as missing")
        if how.ambiguous:
            found.append(
                f"date column {column!r} is read as {how.format}; {how.ambiguous} fits every value too (no day "
                "above 12): if the file writes them so, rewrite the column as YYYY-MM-DD and make the task anew"
            )
    return found


def ignore_data_file(repo: Repo, plan: Plan) -> str | None:
    """A data file inside the repository must stay out of git (and out of `git status`, which the ratchet checks)."""
    if not plan.inside_repo:
        return None
    tracked = repo.git.ls_files("--", plan.data_ref)
    ignored = repo.repo.ignored(plan.data_ref)
    if tracked or ignored:
        return None
    gitignore = repo.root / ".gitignore"
    existing = gitignore.read_text() if gitignore.exists() else ""
    with open(gitignore, "a") as fh:
        fh.write(("" if not existing or existing.endswith("\n") else "\n") + f"/{plan.data_ref}\n")
    return f"added /{plan.data_ref} to .gitignore: data never goes into git"


def write_files(repo: Repo, plan: Plan, block: dict | None = None) -> Path:
    folder = repo.root / TASKS_DIR / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prepare.py").write_text(taskfiles.prepare_py(plan))
    (folder / "train.py").write_text(taskfiles.train_py(plan))
    (folder / "README.md").write_text(taskfiles.card(plan, block))
    return folder


def run_baseline(folder: Path, budget: float) -> tuple[Block, str]:
    """Run the new harness once on the baseline; (block, error) where error is empty when it scored."""
    out, err = io.BytesIO(), io.BytesIO()
    # The harness's own clocks stop the candidate (CPU budget, wall cap); this only bounds a harness that hangs.
    wall = budget * WALL_CAP_FACTOR + HARNESS_GRACE_SECONDS
    result = proc.run_in_group(
        [sys.executable, str(folder / "prepare.py")],
        timeout=wall,
        stdout=out,
        stderr=err,
        cwd=folder,
    )
    block = Block.parse(out.getvalue().decode("utf-8", errors="replace"))
    if result.timed_out:
        return block, f"the harness ran past {wall:g} s"
    if not block:
        return block, proc.last_line(err.getvalue()) or f"the harness exited with code {result.returncode}"
    if not block.ok:
        return block, block.error or block.status or "?"
    return block, ""


def _plain(value):
    """A numpy scalar as the Python value it holds (for the generated files)."""
    return value.item() if isinstance(value, np.generic) else value


def leakage_note(plan: Plan, fields: Mapping[str, str]) -> str | None:
    """A warning when the baseline's score (in a block's `fields`) is already at the metric's leakage ceiling."""
    ceiling = LEAKAGE_CEILINGS.get(plan.metric)
    value = summary.parse_float(fields.get(plan.metric))
    if ceiling is None or not math.isfinite(value) or value < ceiling:
        return None
    others = [m for m in METRIC_CHOICES[plan.problem] if m not in LEAKAGE_CEILINGS]
    alternative = " or ".join(others) or "another metric"
    return (
        f"the baseline's {plan.metric} {value:.4f} is at or above {ceiling}: look for a leaking column; if the task "
        f"is just easy, {plan.metric} has little left to gain (ratchet on {alternative} with --metric), and the "
        "ratchet's leakage stop will not fire since the baseline starts there"
    )


def new_task(repo: Repo, csv: str, target: str, *, echo=print, **options) -> int:
    """Check `csv`, write tasks/<name>/, score the baseline once; return 0, or 2 when the baseline did not score."""
    p = plan(repo, csv, target, **options)
    for warning in p.warnings:
        echo(f"warning: {warning}")
    ignored_note = ignore_data_file(repo, p)
    if ignored_note:
        echo(ignored_note)
    if p.source.note:
        echo(f"read {p.csv.name} as {p.source.note}")
    if p.dates:
        shown = ", ".join(f"{c} ({d.format or 'dates in the workbook'})" for c, d in p.dates.items())
        echo(f"date column(s) kept as dates: {shown}; the baseline uses their year, month, day and weekday")
    folder = write_files(repo, p)
    rel = repo.rel(folder)
    echo(f"wrote {rel}/prepare.py (frozen harness), {rel}/train.py (baseline), {rel}/README.md (task card)")
    echo(
        f"task {p.name}: {p.problem} ({p.problem_reason}), {p.n_rows} rows, {taskfiles.feature_counts(p)} "
        f"features, metric {p.metric}; scoring the baseline…"
    )
    block, error = run_baseline(folder, p.budget)
    if error:
        echo(summary.format_block(block.fields).rstrip() if block else "(no summary block)")
        raise RunError(
            f"the baseline did not score: {error}; {rel} was written: fix it (e.g. a larger --budget) "
            "and rerun with --force"
        )
    write_files(repo, p, block)
    echo(summary.format_block(block.fields).rstrip())
    note = leakage_note(p, block.fields)
    if note:
        echo(f"warning: {note}")
    to_add = " .gitignore" if ignored_note else ""
    echo("next: review the harness and the card, commit them, start a run:")
    echo(f'  git add {rel}{to_add} && git commit -m "task {p.name}"')
    echo(f"  uv run scripts/ratchet.py start {p.name}-1 --task {rel}")
    return 0
