"""What the judgment depends on, checked by content: the task's frozen harness and the `autoresearch` library,
by sha256 against what `start` recorded, before every scoring. `git status` is no such check: `skip-worktree`,
`assume-unchanged` and stale bytecode all hide an edit from it. The data file is checked by the harness itself:
every task's prepare.py pins its data's sha256 (and prepare.py is checked here), so a rewritten data file is a
one-line refusal from the harness, never a score. The ratchet also runs the harness with a private bytecode
cache (`harness_python`), so a .pyc planted beside a source file is never loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from autoresearch.data import sha256_of

PYCACHE_DIR = "pycache"  # under .git/autoresearch/: bytecode only the ratchet's harness runs write and read


class TrustError(Exception):
    """A file the judgment depends on is not the one the run started with; one line naming it."""


def library_files() -> list[Path]:
    package = Path(__file__).resolve().parent
    return sorted(package.glob("*.py"))


def fingerprint(task_dir: Path, root: Path) -> dict[str, str]:
    """sha256 of the task's harness and of every library module, keyed by a path a person recognises."""
    files = [task_dir / "prepare.py", *library_files()]
    return {_label(path, root): sha256_of(path) for path in files}


def verify(recorded: dict[str, str], root: Path) -> None:
    """Raise TrustError naming the first file whose bytes differ from the run's start (or that is gone)."""
    for label, digest in recorded.items():
        path = Path(label) if Path(label).is_absolute() else root / label
        try:
            actual = sha256_of(path)
        except OSError:
            raise TrustError(f"{label} is gone since the run started; restore it before scoring") from None
        if actual != digest:
            raise TrustError(
                f"{label} changed since the run started (sha256 {actual[:12]}, was {digest[:12]}): not scored; "
                "restore it (git checkout, or reinstall) - frozen files stay frozen for the whole run"
            )


def harness_python(cache: Path) -> list[str]:
    """The interpreter for the frozen harness: isolated from PYTHON* variables and the user's site-packages
    (-I), reading and writing bytecode only in the run's private cache (a .pyc planted in a __pycache__ folder
    of the library or of the environment is never loaded)."""
    return [sys.executable, "-I", "-X", f"pycache_prefix={cache}"]


def _label(path: Path, root: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(root.resolve()))
    except ValueError:
        return str(resolved)
