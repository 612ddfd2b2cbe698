"""What the docs promise a reader matches the code: each task's contract opens its prepare.py, the README's
verb table is the CLI's, its results.tsv columns are the ledger's, and CI runs the README's test command.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from autoresearch import ledger

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SCREEN_LINES = 30  # "how you are scored" is read in one screen, as karpathy's prepare.py is
TASK_HARNESSES = [ROOT / "prepare.py", *sorted((ROOT / "tasks").glob("*/prepare.py"))]


@pytest.mark.parametrize("prepare", TASK_HARNESSES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_task_harness_opens_with_how_you_are_scored_on_one_screen(prepare):
    docstring = ast.get_docstring(ast.parse(prepare.read_text())) or ""
    assert "How you are scored" in docstring, f"{prepare} does not open with its contract"
    assert len(docstring.splitlines()) <= SCREEN_LINES
    for fact in ("Metric:", "Budget:", "Kept when"):  # what an agent needs before its first edit
        assert fact in docstring, f"{prepare}'s contract does not say {fact!r}"


def test_readme_verb_table_is_the_clis():
    documented = set(re.findall(r"^\| `(\S+)[ `]", README, flags=re.M))
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ratchet.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    offered = set(re.search(r"\{([a-z,-]+)\}", out).group(1).split(","))
    assert documented == offered


def test_readme_results_columns_are_the_ledgers():
    section = README.split("## `results.tsv`", 1)[1].split("\n## ", 1)[0]
    named = [c for c in re.findall(r"`([a-z_]+)`", section) if c in ledger.columns("val_auc")]
    assert list(dict.fromkeys(named)) == ledger.columns("val_auc")


def test_ci_runs_the_readmes_test_command():
    command = re.search(r"^(uv run [^\n]*pytest[^\n]*)$", README.split("## Set-up", 1)[1], flags=re.M).group(1)
    ci = (ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if "pytest" in line and not line.startswith("#")] == [command]
