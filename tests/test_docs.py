"""What the docs promise a reader matches the code: each task's contract opens its prepare.py, the README's
verb table is the CLI's, its results.tsv columns are the ledger's, CI runs the README's test command, and every
ratchet command the agent's docs show (program.md, the slash command, CLAUDE.md, AGENTS.md, docs/claude-code.md)
is a verb the CLI has, with options it takes, that the hooks let the agent run.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from autoresearch import hooks, ledger

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SCREEN_LINES = 30  # "how you are scored" is read in one screen, as karpathy's prepare.py is
TASK_HARNESSES = [ROOT / "prepare.py", *sorted((ROOT / "tasks").glob("*/prepare.py"))]
AGENT_DOCS = ["program.md", ".claude/commands/autoresearch.md", "CLAUDE.md", "AGENTS.md", "docs/claude-code.md"]
# a ratchet command as the docs write it: `uv run [--extra lm] scripts/ratchet.py VERB[|VERB…] [options…]`
RATCHET_COMMAND = re.compile(r"uv run (?:\[?--extra[ =]\w+\]? )?scripts/ratchet\.py ([a-z|-]+)([^`\n]*)")
WAVE_VERBS = ("submit", "wait")  # issue 10: the agent's verbs for a run with more than one worker


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


def ratchet_help(*verb: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ratchet.py"), *verb, "--help"], capture_output=True, text=True
    ).stdout


def documented_commands() -> list[tuple[str, str, str]]:
    """(file, verb, options) of every ratchet command the agent's docs show; `start|try|status` is three."""
    found = []
    for name in AGENT_DOCS:
        for verbs, rest in RATCHET_COMMAND.findall((ROOT / name).read_text()):
            found += [(name, verb, rest) for verb in verbs.split("|") if verb]
    return found


def test_the_agents_docs_name_verbs_and_options_the_cli_has():
    offered = set(re.search(r"\{([a-z,-]+)\}", ratchet_help()).group(1).split(","))
    commands = documented_commands()
    assert {verb for _, verb, _ in commands} >= {"start", "try", "status", *WAVE_VERBS}, commands
    helps = {verb: ratchet_help(verb) for verb in offered}
    for name, verb, rest in commands:
        assert verb in offered, f"{name} shows `ratchet.py {verb}`, which the CLI does not have"
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert option in helps[verb], f"{name} shows `ratchet.py {verb} {option}`, which {verb} does not take"


def test_the_slash_commands_options_are_starts():
    hint = re.search(r"^argument-hint: (.*)$", (ROOT / ".claude/commands/autoresearch.md").read_text(), re.M)
    options = re.findall(r"--[a-z][a-z-]*", hint.group(1))
    assert "--workers" in options
    start = ratchet_help("start")
    assert [o for o in options if o not in start] == []


def test_the_hooks_let_the_agent_run_its_verbs_and_no_other():
    offered = set(re.search(r"\{([a-z,-]+)\}", ratchet_help()).group(1).split(","))
    assert set(hooks.AGENT_VERBS) <= offered  # a verb the agent is told to run that the CLI lacks
    assert set(hooks.AGENT_VERBS) | set(hooks.PERSON_VERBS) == offered  # every verb is the agent's or the person's
