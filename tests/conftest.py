"""Shared fixtures: a real git repository in a temp dir holding the suite's own fixture task, the real ratchet CLI
run as a subprocess against it, and the data (a session mirror: the fixture's table, and the heart and
tinyshakespeare files from the local copy when it exists, synthetic heart data otherwise).

No test reads the working tree's task files: `make_project` copies tests/fixture_task/prepare.py and train.py
(2x2 folds on a 200-row table, a baseline in about a second) to the root of the temp repository, as the heart
task lies in the real one. A test of the heart task itself passes `task=ROOT` and brings its own train.py.
A scored run costs seconds: modules start one per module (`started_project`) and copy it per test (`copy_run`).
"""

from __future__ import annotations

import atexit
import csv
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RATCHET = ROOT / "scripts" / "ratchet.py"
SHARED_DATA = ROOT.parent / "shared" / "data"  # CI and development machines have it; a user's does not
FIXTURE_TASK = ROOT / "tests" / "fixture_task"
FIXTURE_DATA = FIXTURE_TASK / "table.csv"  # the mirror holds it as fixture/table.csv
TASK_FILES = ["prepare.py", "train.py", ".gitignore"]
FIXTURE_FOLDS = 4  # tests/fixture_task/prepare.py: N_FOLDS x N_REPEATS
FIXTURE_FORKS = FIXTURE_FOLDS + 1  # one process per fold and one for the held-out predictions
# The ratchet runs the harness with a private bytecode cache in the run's git folder (trust.PYCACHE_DIR); empty,
# it costs a fresh repository's first scoring ~7 CPU-s of compiling pandas and scikit-learn. make_project seeds
# it with bytecode the same interpreter compiled from the same sources, as the ratchet itself would (if the
# library moves the cache, the seed is merely unused).
PRIVATE_PYCACHE = Path("autoresearch") / "pycache"  # under the repository's git common dir


def synthetic_heart(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """A Cleveland-shaped file (14 columns, '?' for missing, num 0-4) with a learnable signal."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for _ in range(rows):
            age, sex, cp = rng.integers(29, 78), rng.integers(0, 2), rng.integers(1, 5)
            thalach, oldpeak = rng.integers(90, 200), round(float(rng.exponential(1.0)), 1)
            risk = 0.04 * (age - 55) + 0.8 * sex + 0.6 * (cp == 4) - 0.03 * (thalach - 150) + 0.7 * oldpeak
            num = int(rng.random() < 1 / (1 + np.exp(-risk + 0.5))) * int(rng.integers(1, 5))
            ca = "?" if rng.random() < 0.02 else f"{rng.integers(0, 4)}.0"
            values = [
                age,
                sex,
                cp,
                rng.integers(94, 200),
                rng.integers(126, 564),
                rng.integers(0, 2),
                rng.integers(0, 3),
                thalach,
                rng.integers(0, 2),
                oldpeak,
                rng.integers(1, 4),
                ca,
                rng.choice([3, 6, 7]),
                num,
            ]
            fh.write(",".join(str(v) if isinstance(v, str) else f"{float(v):.1f}" for v in values) + "\n")
    return path


def fixture_rows() -> tuple[list[str], list[dict]]:
    """The fixture table as (columns, rows of strings), read apart from the harness."""
    with open(FIXTURE_DATA, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="session")
def data_mirror(tmp_path_factory) -> Path:
    """A folder laid out as AUTORESEARCH_DATA_MIRROR expects: the fixture's table, and the heart and
    tinyshakespeare files copied from the shared data when it exists (heart synthetic otherwise)."""
    mirror = tmp_path_factory.mktemp("data") / "mirror"  # a folder of its own above it, as a user's data has
    (mirror / "fixture").mkdir(parents=True)
    shutil.copy(FIXTURE_DATA, mirror / "fixture" / FIXTURE_DATA.name)
    heart = SHARED_DATA / "heart" / "processed.cleveland.data"
    if heart.is_file():
        (mirror / "heart").mkdir()
        shutil.copy(heart, mirror / "heart" / heart.name)
    else:
        synthetic_heart(mirror / "heart" / heart.name)
    text = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if text.is_file():
        (mirror / "tinyshakespeare").mkdir()
        shutil.copy(text, mirror / "tinyshakespeare" / text.name)
    return mirror


def make_env(data_mirror: Path, cache: Path) -> dict:
    """The process environment of a test repository's CLI calls: no inherited AUTORESEARCH_ or GIT_ settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "GIT_"))}
    environment.update(
        AUTORESEARCH_DATA_MIRROR=str(data_mirror),
        AUTORESEARCH_CACHE=str(cache),
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ in the test repository's tree
    )
    return environment


@pytest.fixture
def env(data_mirror, tmp_path) -> dict:
    return make_env(data_mirror, tmp_path / "cache")


class Project:
    """A throwaway repository with the project's task files, driven through the real CLI."""

    def __init__(self, path: Path, env: dict):
        self.path, self.env = path, env
        self.start_output = ""  # what `ratchet.py start` printed, for a run started by `started_project`

    def git(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True, env=self.env)
        if check and out.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
        return out.stdout.strip()

    def ratchet(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(RATCHET), *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def read(self, rel: str = "train.py") -> str:
        return (self.path / rel).read_text()

    def write(self, source: str, rel: str = "train.py") -> None:
        (self.path / rel).write_text(source)

    def edit(self, old: str, new: str, rel: str = "train.py") -> None:
        source = self.read(rel)
        assert old in source, f"{old!r} not in {rel}"
        self.write(source.replace(old, new, 1), rel)

    def rows(self, rel: str = "results.tsv") -> list[dict]:
        with open(self.path / rel, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))

    def status(self) -> str:
        return self.git("status", "--porcelain", "--untracked-files=all")


LM_TASK = "tasks/shakespeare"
LM_TRAIN = Path(__file__).resolve().parent / "fixture_lm" / "train.py"


def make_project(path: Path, env: dict, files: list[str] = TASK_FILES, task: Path = FIXTURE_TASK) -> Project:
    """A repository at `path` with `files` (paths relative to the project root) committed on main; the root
    task's prepare.py and train.py come from `task` (the fixture task unless a test passes ROOT)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        source = task / name if name in ("prepare.py", "train.py") else ROOT / name
        if name == f"{LM_TASK}/train.py":
            source = LM_TRAIN  # the tests' frozen copy of the language model's baseline, not the working tree's
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    _pin_synthetic_heart(path, env)
    project = Project(path, env)
    project.git("init", "-q", "-b", "main")
    project.git("config", "user.name", "test")
    project.git("config", "user.email", "test@example.com")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "task files")
    link_tree(harness_bytecode(env.get("AUTORESEARCH_DATA_MIRROR", "")), path / ".git" / PRIVATE_PYCACHE)
    return project


@functools.cache
def harness_bytecode(mirror: str) -> Path:
    """Bytecode of what the tabular harness imports, compiled once per session by scoring the fixture task
    with the ratchet's own harness interpreter flags (`-I -X pycache_prefix=`)."""
    template = Path(tempfile.mkdtemp(prefix="autoresearch-test-bytecode-"))
    atexit.register(shutil.rmtree, template, ignore_errors=True)
    env = make_env(Path(mirror), template / "cache")
    argv = [sys.executable, "-I", "-X", f"pycache_prefix={template / 'pycache'}", str(FIXTURE_TASK / "prepare.py")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and re.search(r"^status: +ok$", done.stdout, re.M), done.stdout + done.stderr[-2000:]
    return template / "pycache"


def link_tree(source: Path, target: Path) -> None:
    """Copy a folder of files nobody edits in place (bytecode is replaced by rename, never rewritten) as hard
    links: instant, and no test's copy can change another's."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)


def _pin_synthetic_heart(path: Path, env: dict) -> None:
    """The heart task pins the real file's sha256; where the tests run on synthetic data, pin that instead."""
    prepare, mirror = path / "prepare.py", Path(env.get("AUTORESEARCH_DATA_MIRROR", ""))
    heart = mirror / "heart" / "processed.cleveland.data"
    if prepare.exists() and heart.is_file() and 'TASK = "heart"' in prepare.read_text():
        digest = hashlib.sha256(heart.read_bytes()).hexdigest()  # the real file's: the same pin, unchanged
        source = re.sub(r'^DATA_SHA256 = "[0-9a-f]+"', f'DATA_SHA256 = "{digest}"', prepare.read_text(), flags=re.M)
        prepare.write_text(source)


@pytest.fixture
def project(tmp_path, env) -> Project:
    return make_project(tmp_path / "repo", env)


def started_project(base: Path, data_mirror: Path, *start_args: str, setup=None, extra_env=None) -> Project:
    """A fixture project under `base` with `ratchet.py start *start_args` done (after `setup(project)`, which
    may commit a different baseline): what a module fixture scores once and `copy_run` hands to each test.
    `extra_env`: variables of every CLI call of the project (e.g. declared GPUs)."""
    (base / "cache").mkdir(parents=True, exist_ok=True)  # as a user's: there, and empty (the data is mirrored)
    project = make_project(base / "repo", {**make_env(data_mirror, base / "cache"), **(extra_env or {})})
    if setup is not None:
        setup(project)
    out = project.ratchet("start", *start_args)
    assert out.returncode == 0, out.stdout + out.stderr
    project.start_output = out.stdout
    return project


def copy_run(started: Project, path: Path) -> Project:
    """A copy of a started run's repository (git objects, refs, run records, ignored files) with its own
    environment dict, so a test may change both without touching the original or another test's copy."""
    cache = started.path / ".git" / PRIVATE_PYCACHE

    def not_the_cache(folder: str, names: list[str]) -> list[str]:
        return [cache.name] if Path(folder) == cache.parent else []

    shutil.copytree(started.path, path, symlinks=True, ignore=not_the_cache)
    if cache.is_dir():
        link_tree(cache, path / ".git" / PRIVATE_PYCACHE)
    return Project(path, dict(started.env))
