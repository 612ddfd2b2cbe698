"""Task discovery: a task is a folder holding a committed prepare.py (the frozen harness) and train.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoresearch.gitops import Repo
from autoresearch.runs import RunError

RESULTS_FILE = "results.tsv"  # in the task folder, untracked (karpathy's name and place)
LOG_FILE = "run.log"  # the latest iteration's full output, in the task folder, untracked


@dataclass
class Task:
    dir: Path
    rel: str  # folder relative to the repository root, "." for the root
    prepare_rel: str
    train_rel: str

    @property
    def results(self) -> Path:
        return self.dir / RESULTS_FILE

    @property
    def log(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def prepare(self) -> Path:
        return self.dir / "prepare.py"

    @property
    def train(self) -> Path:
        return self.dir / "train.py"


def find_task(repo: Repo, task: str) -> Task:
    folder = (repo.root / task).resolve()
    for name in ("prepare.py", "train.py"):
        if not (folder / name).is_file():
            raise RunError(f"{task}: no {name} there; --task names a folder with prepare.py and train.py")
    rel = repo.rel(folder)
    tracked = set(repo.git.ls_files("--", f"{rel}/prepare.py", f"{rel}/train.py").splitlines())
    prefix = "" if rel == "." else f"{rel}/"
    for name in ("prepare.py", "train.py"):
        if f"{prefix}{name}" not in tracked:
            raise RunError(f"{prefix}{name} is not committed; commit the task files before starting a run")
    return Task(folder, rel, f"{prefix}prepare.py", f"{prefix}train.py")


def task_rel(repo: Repo, task_arg: str) -> str:
    """The task folder `task_arg` names, relative to the root; the argument itself when it names none."""
    try:
        return find_task(repo, task_arg).rel
    except RunError:
        return task_arg
