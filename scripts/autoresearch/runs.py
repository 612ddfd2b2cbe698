"""A run's identity and its private folder: `.git/autoresearch/<tag>/` holds run.json (options given at
start; a copy of the config in the baseline's ref, rebuilt from it), start.json and state.json (a start or an
iteration in flight, for crash recovery), the ledger mirror and the held-out records.
Being under .git, none of it is in the work tree the agent edits, nor in any commit.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autoresearch.contract import Capabilities
from autoresearch.gitops import BRANCH_PREFIX, Repo

TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a branch-name component, nothing git refuses


class RunError(Exception):
    """The request cannot be carried out; the message is one line that says what to do instead."""


@dataclass
class RunConfig:
    tag: str
    task: str  # the task folder relative to the repository root ("." for the heart task)
    base: str  # the commit the run started from; frozen files must stay as they were there
    metric: str
    higher_is_better: bool
    budget_seconds: float
    created: str
    deadline: str | None = None  # ISO time after which the run stops (a stop condition)
    max_iters: int | None = None  # iterations after the baseline, then the run stops
    extra: dict = field(default_factory=dict)  # task-specific facts recorded at start (device, ...)

    @property
    def keep_rule(self) -> str | None:
        """The keep rule's name `start` fixed (keeprules.RULES); None for a run recorded before rules had names
        (judged by the default rule, as it was then; a language-model run's record always named it)."""
        return self.extra.get("keep_rule")

    @property
    def confirm(self) -> bool:
        """Whether a "better beyond noise" keep is confirmed on fresh folds (`start --confirm`); False for a
        run recorded before the option existed."""
        return self.extra.get("confirm") is True

    @property
    def cv_folds(self) -> int | None:
        """k of the harness's k-fold CV, from the baseline's block; None when it was not recorded (the keep
        rule then assumes keeprules.DEFAULT_CV_FOLDS)."""
        k = self.extra.get("cv_folds")
        return k if isinstance(k, int) and not isinstance(k, bool) and k >= 2 else None

    @property
    def capabilities(self) -> Capabilities | None:
        """What the harness declared at `start`; None for a run recorded before harnesses declared anything."""
        try:
            return Capabilities.from_json(self.extra["capabilities"])
        except (KeyError, ValueError):
            return None


def check_tag(tag: str) -> str:
    if not TAG_PATTERN.match(tag) or ".." in tag or tag.endswith(".lock"):
        raise RunError(f"tag {tag!r}: use letters, digits, '.', '_' or '-' (at most 64), e.g. nov22")
    return tag


def run_dir(repo: Repo, tag: str) -> Path:
    return repo.common_dir / "autoresearch" / tag


QUEUE_DIR = "queue"  # in the run's folder: NNNN.json per candidate of the open wave (waves.py), until recorded


def queue_dir(folder: Path) -> Path:
    return folder / QUEUE_DIR


def queued(folder: Path) -> list[dict]:
    """The open wave's candidates (`submit`'s records), in iteration order."""
    records = [read_json(p) for p in sorted(queue_dir(folder).glob("*.json"))]
    return [r for r in records if r and isinstance(r.get("iter"), int)]


def tag_of_branch(branch: str | None) -> str | None:
    if branch and branch.startswith(BRANCH_PREFIX):
        return branch[len(BRANCH_PREFIX) :]
    return None


def load_config(repo: Repo, tag: str) -> RunConfig | None:
    """run.json as a plain file (the hooks read it so): None when it is missing or not a run's config.

    The ratchet's verbs read `refs.open_config`, which checks it against the baseline ref and rebuilds it.
    """
    return config_from(read_json(run_dir(repo, tag) / "run.json"))


def config_from(value) -> RunConfig | None:
    """A RunConfig from a decoded run.json (or a ref's copy of it); None unless every field has its type."""
    if not isinstance(value, dict):
        return None
    names = {f.name for f in fields(RunConfig)}
    required = {"tag", "task", "base", "metric", "higher_is_better", "budget_seconds", "created"}
    if not required <= value.keys() or not value.keys() <= names:
        return None
    kinds = {
        "tag": str,
        "task": str,
        "base": str,
        "metric": str,
        "higher_is_better": bool,
        "created": str,
        "budget_seconds": (int, float),
        "deadline": (str, type(None)),
        "max_iters": (int, type(None)),
        "extra": dict,
    }
    if any(not isinstance(value[k], kinds[k]) for k in value) or isinstance(value.get("max_iters"), bool):
        return None
    return RunConfig(**{**value, "budget_seconds": float(value["budget_seconds"])})


def save_config(repo: Repo, config: RunConfig) -> None:
    write_json(run_dir(repo, config.tag) / "run.json", asdict(config))


def write_json(path: Path, value: dict) -> None:
    """Atomic and durable: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`; None when it is missing, unreadable or anything but an object."""
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):  # missing, a folder, junk bytes, not JSON
        return None
    return value if isinstance(value, dict) else None


class CheckoutLock:
    """One ratchet at a time per checkout. flock is released by the kernel when its holder dies, SIGKILL too."""

    def __init__(self, repo: Repo):
        self.path = repo.git_dir / "autoresearch.lock"
        self.fh = None

    def __enter__(self) -> CheckoutLock:
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise RunError(f"another ratchet is running in this checkout ({holder}); wait for it to finish") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()
