"""Near misses worth reading: seed-only edits left out, identical code shown once, a comparison against a best
that has since been replaced marked, the most promising first. On a real git repository whose refs hold each
iteration's train.py, as a run's do."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

from autoresearch import digest
from autoresearch.runs import RunConfig

BASE = '''"""The one file the agent edits."""
from sklearn.ensemble import RandomForestClassifier

HYPOTHESIS = "baseline: a random forest"
SEED = 0


def build_pipeline():
    return RandomForestClassifier(n_estimators=100, random_state=SEED)
'''


def variant(*pairs: tuple[str, str]) -> str:
    source = BASE
    for old, new in pairs:
        assert old in source
        source = source.replace(old, new)
    return source


DEEPER = ("random_state=SEED", "max_depth=4, random_state=SEED")
LEAFY = ("random_state=SEED", "min_samples_leaf=5, random_state=SEED")
MORE_TREES = ("n_estimators=100", "n_estimators=300")


def git(repo: Path, *args: str, text: str | None = None) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], input=text, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run_repo(path: Path, tag: str, sources: dict[int, str]) -> SimpleNamespace:
    """A repository with one commit of train.py per iteration and refs/autoresearch/TAG/NNNN on each."""
    git(path.parent, "init", "-q", str(path))
    for i, source in sources.items():
        (path / "train.py").write_text(source)
        git(path, "add", "train.py")
        git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"iter {i}", "--allow-empty")
        git(path, "update-ref", f"refs/autoresearch/{tag}/{i:04d}", "HEAD")
    return SimpleNamespace(common_dir=path / ".git")  # what digest (like runs.run_dir) reads from a repo


def row(i: int, status: str, delta: float = float("nan"), se: float = float("nan"), p: float = float("nan")) -> dict:
    return {
        "iter": str(i),
        "commit": f"c{i}",
        "val_auc": "0.9",
        "status": status,
        "description": f"edit {i}",
        "delta": "" if delta != delta else str(delta),
        "delta_se": "" if se != se else str(se),
        "p_value": "" if p != p else str(p),
        "seconds": "5",
        "timestamp": f"2026-01-01T00:{i:02d}:00",
    }


CONFIG = RunConfig("t", ".", "c0", "val_auc", True, 60.0, "2026-01-01T00:00:00")


def test_seed_only_edits_are_left_out_and_real_ones_kept(tmp_path):
    sources = {
        0: BASE,
        1: variant(("SEED = 0", "SEED = 7"), ('"baseline: a random forest"', '"another seed"')),  # seed + words
        2: variant(("random_state=SEED", "random_state=3"), ('"""The one file', '"""Edited: the one file')),
        3: variant(DEEPER),
        4: variant(("random_state=SEED", "random_state=SEED, n_jobs=1")),  # not a seed: a real change
    }
    repo = run_repo(tmp_path / "repo", "t", sources)
    rows = [row(0, "keep")] + [row(i, "discard", 0.004, 0.005, 0.2 + i / 100) for i in range(1, 5)]
    shown = digest.near_misses(CONFIG, rows, repo)
    assert [m["iter"] for m in shown] == [3, 4]
    assert digest.near_misses(CONFIG, rows) != shown  # without the code, nothing can be left out
    assert len(digest.near_misses(CONFIG, rows)) == 4


def test_seed_like_names_in_every_form_are_blanked():
    shape = digest.code_shape
    calls = "import numpy as np\nnp.random.seed(1)\nrng = np.random.default_rng(5)\nparams = {'seed': 2}\n"
    moved = "import numpy as np\nnp.random.seed(9)\nrng = np.random.default_rng(6)\nparams = {'seed': 4}\n"
    assert shape(calls, blank_seeds=True) == shape(moved, blank_seeds=True)
    assert shape(calls) != shape(moved)
    assert shape("model.random_seed = 1\nx = f(a=1)\n", True) == shape("model.random_seed = 2\nx = f(a=1)\n", True)
    assert shape("x = f(a=1)\n", True) != shape("x = f(a=2)\n", True)  # `a` seeds nothing
    # comments and layout never count; an unparsable file has no shape (and is never left out)
    assert shape("x = f(1,\n      2)  # note\n") == shape("x = f(1, 2)\n")
    assert shape("def broken(:\n") is None


def test_identical_code_is_shown_once_with_every_iteration(tmp_path):
    sources = {0: BASE, 1: variant(DEEPER), 2: variant(LEAFY), 3: variant(DEEPER)}
    sources[3] = sources[3].replace('"baseline: a random forest"', '"depth 4 again, worded differently"')
    repo = run_repo(tmp_path / "repo", "t", sources)
    rows = [row(0, "keep"), row(1, "discard", 0.003, 0.004, 0.25), row(2, "discard", 0.001, 0.004, 0.4)]
    rows.append(row(3, "discard", 0.005, 0.004, 0.12))
    shown = digest.near_misses(CONFIG, rows, repo)
    assert [(m["iter"], m["iters"]) for m in shown] == [(3, [1, 3]), (2, [2])]  # the group's best figures shown
    text = digest.render(digest.digest(CONFIG, rows, repo)).split("near misses")[1]
    assert text.count("iter 3 refs/autoresearch/t/0003") == 1 and "(same code: iter 1)" in text
    assert "iter 1 refs" not in text


def test_a_comparison_against_a_replaced_best_is_marked_and_ordered_last(tmp_path):
    sources = {0: BASE, 1: variant(DEEPER), 2: variant(MORE_TREES), 3: variant(MORE_TREES, LEAFY)}
    sources[4] = variant(MORE_TREES, DEEPER)
    repo = run_repo(tmp_path / "repo", "t", sources)
    rows = [
        row(0, "keep"),
        row(1, "discard", 0.006, 0.004, 0.07),  # the most promising figures, but against iter 0's best
        row(2, "keep", 0.02, 0.005, 0.001),
        row(3, "discard", 0.001, 0.004, 0.40),
        row(4, "discard", 0.003, 0.004, 0.23),
    ]
    shown = digest.near_misses(CONFIG, rows, repo)
    assert [(m["iter"], m["stale"], m["vs_iter"]) for m in shown] == [(4, False, 2), (3, False, 2), (1, True, 0)]
    text = digest.render(digest.digest(CONFIG, rows, repo)).split("near misses")[1]
    assert [line.split()[1] for line in text.splitlines()[1:4]] == ["4", "3", "1"]
    [stale] = [line for line in text.splitlines() if line.startswith("  iter 1 ")]
    assert "(vs iter 0's best, since replaced)" in stale
    assert "since replaced" not in text.replace(stale, "")
    assert digest.against_text(shown[0]) == "iter 2's best (the current best)"


def test_lower_is_better_orders_by_gain_and_reads_a_task_folder(tmp_path):
    config = RunConfig("t", "tasks/lm", "c0", "val_bpb", False, 60.0, "2026-01-01T00:00:00")
    assert digest.train_rel(config) == "tasks/lm/train.py"
    rows = [row(0, "keep"), row(1, "discard", -0.002, 0.004), row(2, "discard", -0.006, 0.004)]
    for r in rows:
        r["val_bpb"] = r.pop("val_auc")
    shown = digest.near_misses(config, rows)  # no p-values: the larger gain / se comes first
    assert [m["iter"] for m in shown] == [2, 1]
    missing = SimpleNamespace(common_dir=tmp_path / "no-repo")  # git cannot read it: nothing is left out
    assert [m["iter"] for m in digest.near_misses(config, rows, missing)] == [2, 1]


def test_status_names_the_budget_clock_and_the_confirm_step():
    """A CPU-time budget reads "CPU-s", a wall-clock one "s"; a run started with --confirm says so."""
    from autoresearch import lm, tabular

    base = [{"iter": "0", "status": "keep", "val_auc": "0.8", "fold_scores": "0.8,0.8", "description": "baseline"}]
    cpu = RunConfig("t", ".", "0" * 40, "val_auc", True, 60.0, "2026-11-30T00:00:00")
    cpu.extra.update(capabilities=tabular.CAPABILITIES.to_json(), keep_rule="corrected", confirm=True)
    text = digest.render(digest.digest(cpu, base))
    assert "budget 60 CPU-s | keep rule corrected, confirmed on fresh folds" in text
    wall = RunConfig("t", ".", "0" * 40, "val_bpb", False, 300.0, "2026-11-30T00:00:00")
    wall.extra.update(capabilities=lm.CAPABILITIES.to_json(), device="cuda", keep_rule="rerun")
    text = digest.render(digest.digest(wall, base))
    assert "budget 300 s | keep rule rerun\n" in text + "\n" and "confirmed" not in text
