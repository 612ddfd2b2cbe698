"""A scripted run of the heart task (no LLM): a fixed list of edits to train.py through the real ratchet, then
the morning report. It makes docs/progress.png and prints the report's figures as a `key: value` block.

    AUTORESEARCH_DATA_MIRROR=../shared/data uv run benchmarks/scripted_run.py [--workdir DIR] [--docs]

Each edit is applied to whatever train.py is at that moment (the best so far), so a kept edit is built on.
Takes about 3 minutes on 2 cores (14 iterations of ~7 s, then 6 fresh-fold scorings).
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATCHET = ROOT / "scripts" / "ratchet.py"
TASK_FILES = ["prepare.py", "train.py", ".gitignore"]
TAG = "scripted"


def set_constant(name: str, value: str):
    def edit(source: str) -> str:
        return re.sub(rf"^{name} = .*$", f"{name} = {value}", source, count=1, flags=re.M)

    return edit


def add_feature(line: str):
    """Insert `line` into feature_fn just before its `return df`."""

    def edit(source: str) -> str:
        head, sep, tail = source.partition("def feature_fn(df: pd.DataFrame) -> pd.DataFrame:\n")
        body, ret, rest = tail.partition("    return df\n")
        return head + sep + body + f"    {line}\n" + ret + rest

    return edit


def set_pipeline(imports: str, body: str):
    """Replace build_pipeline's body and add the imports it needs at the top."""

    def edit(source: str) -> str:
        source = re.sub(r"(def build_pipeline\(\):\n)(    .*\n)+", lambda m: m.group(1) + body + "\n", source)
        if imports:
            source = source.replace("import pandas as pd\n", f"import pandas as pd\n{imports}\n", 1)
        return source

    return edit


LR = "LogisticRegression(C=C, max_iter=1000)"
NOMINAL = (
    "df = df.assign(**{f'{col}_{v}': (df[col] == v).astype(float) for col, values in "
    "{'cp': (1, 2, 3, 4), 'thal': (3, 6, 7), 'slope': (1, 2, 3)}.items() for v in values})"
)
EDITS = [
    ("stronger regularisation: C=0.1", set_constant("C", "0.1")),
    (
        "one-hot chest pain type (cp is nominal, not ordinal)",
        add_feature("df = df.assign(**{f'cp_{v}': (df['cp'] == v).astype(float) for v in (1, 2, 3, 4)})"),
    ),
    (
        "random forest, 300 trees, instead of logistic regression",
        set_pipeline(
            "from sklearn.ensemble import RandomForestClassifier",
            "    return make_pipeline(SimpleImputer(strategy='median'), "
            "RandomForestClassifier(n_estimators=300, n_jobs=1))",
        ),
    ),
    (
        "gradient boosting (typo in a keyword argument)",
        set_pipeline(
            "from sklearn.ensemble import GradientBoostingClassifier",
            "    return make_pipeline(SimpleImputer(strategy='median'), GradientBoostingClassifier(n_estimator=100))",
        ),
    ),
    (
        "combine near misses: one-hot cp, thal, slope with C=0.1",
        lambda s: set_constant("C", "0.1")(add_feature(NOMINAL)(s)),
    ),
    ("even stronger regularisation: C=0.03", set_constant("C", "0.03")),
    ("age x max heart rate interaction", add_feature("df = df.assign(age_thalach=df['age'] * df['thalach'] / 1000)")),
    (
        "balanced class weights",
        set_pipeline(
            "",
            "    return make_pipeline(SimpleImputer(strategy='median'), StandardScaler(), "
            "LogisticRegression(C=C, max_iter=MAX_ITER, class_weight='balanced'))",
        ),
    ),
    (
        "inline the MAX_ITER constant (one line fewer)",
        lambda s: s.replace("MAX_ITER = 1000  # lbfgs converges in well under this on 13 features\n", "").replace(
            "max_iter=MAX_ITER", "max_iter=1000"
        ),
    ),
    ("drop cholesterol and fasting blood sugar (weak features)", add_feature("df = df.drop(columns=['chol', 'fbs'])")),
    ("ST depression squared (oldpeak effect is convex)", add_feature("df = df.assign(oldpeak2=df['oldpeak'] ** 2)")),
    ("unfinished edit left a syntax error", lambda s: s.replace("C = ", "C = (", 1)),
    (
        "soft-voting ensemble of logistic regression and a 200-tree forest",
        set_pipeline(
            "from sklearn.ensemble import RandomForestClassifier, VotingClassifier",
            f"    return VotingClassifier([('lr', make_pipeline(SimpleImputer(strategy='median'), "
            f"StandardScaler(), {LR})), ('rf', make_pipeline(SimpleImputer(strategy='median'), "
            f"RandomForestClassifier(n_estimators=200, n_jobs=1)))], voting='soft')",
        ),
    ),
    ("weak regularisation: C=1", set_constant("C", "1.0")),
]


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="where to build the run's repository (default: a new temp dir)")
    parser.add_argument("--docs", action="store_true", help="copy progress.png into docs/ of this checkout")
    parser.add_argument("--fresh-seeds", type=int, default=3)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scripted-run-")).resolve()
    repo = work / "repo"
    if repo.exists():
        sys.exit(f"error: {repo} exists; pick an empty --workdir")
    repo.mkdir(parents=True)
    for name in TASK_FILES:
        shutil.copy(ROOT / name, repo / name)
    identity = ["-c", "user.name=scripted", "-c", "user.email=scripted@localhost"]
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", *identity, "commit", "-qm", "task"]):
        sh(cmd, repo).check_returncode()
    started = time.monotonic()
    out = sh([sys.executable, str(RATCHET), "start", TAG], repo)
    print(out.stdout.strip() or out.stderr.strip())
    if out.returncode:
        return 1
    for hypothesis, edit in EDITS:
        train = repo / "train.py"
        train.write_text(edit(train.read_text()))
        out = sh([sys.executable, str(RATCHET), "try", hypothesis], repo)
        print(out.stdout.strip() or out.stderr.strip())
    run_seconds = time.monotonic() - started

    sys.path.insert(0, str(ROOT / "scripts"))
    from autoresearch import report
    from autoresearch.gitops import Repo

    git_repo = Repo(repo)
    ((config, task),) = report.runs_to_report(git_repo, [TAG], False)
    t0 = time.monotonic()
    built = report.build(git_repo, config, task, fresh_seeds=tuple(range(1, args.fresh_seeds + 1)))
    remeasure_seconds = time.monotonic() - t0
    files = report.write(built, repo / "report" / TAG)
    print(report.markdown(built, files))
    if args.docs:
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(files["chart"], ROOT / "docs" / "progress.png")
    d, h, f = built.digest, built.heldout, built.fresh
    figures = {
        "iterations": d["iterations"],
        "kept": d["kept"],
        "discarded": d["discarded"],
        "crashed": d["crashed"],
        "run_seconds": round(run_seconds, 1),
        "report_seconds": round(remeasure_seconds, 1),
        "seen_gain": d["gain_over_baseline"],
        "fresh_gain": f.fresh if f else math.nan,
        "fresh_gain_se": f.fresh_se if f else math.nan,
        "fresh_survived": f.survived if f else math.nan,
        "heldout_baseline": h.baseline if h else math.nan,
        "heldout_final": h.final if h else math.nan,
        "heldout_diff": h.diff if h else math.nan,
        "heldout_diff_ci": f"{h.diff_ci[0]:+.4f},{h.diff_ci[1]:+.4f}" if h else "n/a",
        "report": files["html"],
    }
    print("---")
    for key, value in figures.items():
        print(f"{key + ':':<18} {value:.4f}" if isinstance(value, float) else f"{key + ':':<18} {value}")
    if not args.workdir:
        print(f"(the run's repository stays at {repo} for inspection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
