"""Shared fixtures: a real git repository in a temp dir holding a copy of the project's task files, the real
ratchet CLI run as a subprocess against it, and the data (the local mirror when it exists, synthetic otherwise).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RATCHET = ROOT / "scripts" / "ratchet.py"
SHARED_DATA = ROOT.parent / "shared" / "data"  # CI and development machines have it; a user's does not
TASK_FILES = ["prepare.py", "train.py", ".gitignore"]


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
            values = [age, sex, cp, rng.integers(94, 200), rng.integers(126, 564), rng.integers(0, 2),
                      rng.integers(0, 3), thalach, rng.integers(0, 2), oldpeak, rng.integers(1, 4), ca,
                      rng.choice([3, 6, 7]), num]  # fmt: skip
            fh.write(",".join(str(v) if isinstance(v, str) else f"{float(v):.1f}" for v in values) + "\n")
    return path


@pytest.fixture(scope="session")
def data_mirror(tmp_path_factory) -> Path:
    """A folder laid out as AUTORESEARCH_DATA_MIRROR expects: the shared copy, or synthetic files."""
    if (SHARED_DATA / "heart" / "processed.cleveland.data").is_file():
        return SHARED_DATA
    mirror = tmp_path_factory.mktemp("mirror")
    synthetic_heart(mirror / "heart" / "processed.cleveland.data")
    return mirror


@pytest.fixture
def env(data_mirror, tmp_path) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "GIT_"))}
    environment.update(
        AUTORESEARCH_DATA_MIRROR=str(data_mirror),
        AUTORESEARCH_CACHE=str(tmp_path / "cache"),
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ in the test repository's tree
    )
    return environment


class Project:
    """A throwaway repository with the project's task files, driven through the real CLI."""

    def __init__(self, path: Path, env: dict):
        self.path, self.env = path, env

    def git(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True, env=self.env)
        if check and out.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
        return out.stdout.strip()

    def ratchet(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(RATCHET), *args], cwd=self.path, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

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


def make_project(path: Path, env: dict, files: list[str] = TASK_FILES) -> Project:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, target)
    _pin_synthetic_data(path, env)
    project = Project(path, env)
    project.git("init", "-q", "-b", "main")
    project.git("config", "user.name", "test")
    project.git("config", "user.email", "test@example.com")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "task files")
    return project


def _pin_synthetic_data(path: Path, env: dict) -> None:
    """The heart task pins the real file's sha256; where the tests run on synthetic data, pin that instead."""
    prepare, mirror = path / "prepare.py", Path(env.get("AUTORESEARCH_DATA_MIRROR", ""))
    heart = mirror / "heart" / "processed.cleveland.data"
    if prepare.exists() and mirror != SHARED_DATA and heart.is_file():
        digest = hashlib.sha256(heart.read_bytes()).hexdigest()
        source = re.sub(r'^DATA_SHA256 = "[0-9a-f]+"', f'DATA_SHA256 = "{digest}"', prepare.read_text(), flags=re.M)
        prepare.write_text(source)


@pytest.fixture
def project(tmp_path, env) -> Project:
    return make_project(tmp_path / "repo", env)
