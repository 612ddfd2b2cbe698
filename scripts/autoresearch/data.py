"""Find a task's data file: an explicit path, a local mirror, the cache, or a download from the public source.

Order: `--data PATH` > `$AUTORESEARCH_DATA_MIRROR/<task>/<file>` > `$AUTORESEARCH_CACHE/<task>/<file>`
(default `~/.cache/autoresearch`) > download. A download is checked before it is moved into the cache,
so a bad or partial download never leaves a cached file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

MIRROR_ENV = "AUTORESEARCH_DATA_MIRROR"
CACHE_ENV = "AUTORESEARCH_CACHE"
DOWNLOAD_TIMEOUT_SECONDS = 60  # a 1 MB file on a slow line; a dead host fails fast enough for a person waiting


class DataError(Exception):
    """The data is missing, unreachable or not what the task expects; the message is one line for a person."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autoresearch")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(f"{path}: sha256 {actual[:12]}… does not match the expected {expected[:12]}…")


def download(url: str, dest: Path, validate: Callable[[Path], None]) -> Path:
    """Download `url` to `dest` atomically: validated in a temp file first, renamed only if it passes."""
    import urllib.request  # only a download needs it, and it is slow to import

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
            except OSError as exc:  # URLError, HTTPError, timeouts and resets are all OSErrors
                raise DataError(
                    f"could not download {url} ({exc}); offline, pass --data PATH or set {MIRROR_ENV}"
                ) from exc
        validate(tmp)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def resolve(
    task: str,
    filename: str,
    url: str,
    validate: Callable[[Path], None],
    explicit: str | Path | None = None,
) -> Path:
    """The path of a checked copy of `task`'s `filename`, downloading it into the cache if need be."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DataError(f"--data {path}: no such file")
        validate(path)
        return path
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        path = Path(mirror).expanduser() / task / filename
        if not path.is_file():
            raise DataError(f"{MIRROR_ENV}={mirror}: {task}/{filename} is not there")
        validate(path)
        return path
    cached = cache_dir() / task / filename
    if cached.is_file():
        validate(cached)
        return cached
    return download(url, cached, validate)
