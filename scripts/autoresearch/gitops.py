"""The one git wrapper: everything the ratchet, the hooks and the report do to a repository goes through here."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import git

BRANCH_PREFIX = "autoresearch/"
REF_PREFIX = "refs/autoresearch/"  # one ref per experiment: refs/autoresearch/<tag>/<iter>
STALE_INDEX_LOCK_SECONDS = 10  # an index.lock older than this, left by a killed ratchet, is removed on recovery


class GitError(Exception):
    pass


@dataclass
class RefRecord:
    name: str  # refs/autoresearch/<tag>/<iter>
    kind: str  # "tag" (an annotated tag object: the ratchet's) or "commit" (a plain ref)
    target: str  # the commit it points at, through the tag
    message: str | None  # the tag's message; None for a plain ref


class Repo:
    def __init__(self, path: str | Path = "."):
        try:
            self.repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitError(f"{Path(path).resolve()} is not inside a git repository") from exc
        if self.repo.bare:
            raise GitError("a bare repository has no work tree to run in")
        self.root = Path(self.repo.working_tree_dir)
        self.git = self.repo.git
        with self.repo.config_reader() as config:
            has_identity = config.has_option("user", "email") and config.has_option("user", "name")
        # A fresh machine or CI has no git identity: commit as the ratchet rather than fail mid-iteration.
        # Signing would wait for a passphrase no one types at 3 a.m.: the ratchet's commits are not signed.
        self.commit_config = ["-c", "commit.gpgsign=false"] + (
            [] if has_identity else ["-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost"]
        )
        self.identity = "autoresearch <autoresearch@localhost>"
        if has_identity:
            with self.repo.config_reader() as config:
                name, email = config.get_value("user", "name"), config.get_value("user", "email")
            self.identity = f"{' '.join(str(name).split()) or 'autoresearch'} <{str(email).strip('<> ')}>"

    # -- where things live --------------------------------------------------------------------------
    @property
    def common_dir(self) -> Path:
        return Path(self.repo.common_dir)

    @property
    def git_dir(self) -> Path:
        return Path(self.repo.git_dir)

    def rel(self, path: str | Path) -> str:
        """A path relative to the work tree root, with forward slashes (as git names it)."""
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    # -- branches and commits -----------------------------------------------------------------------
    def branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        try:
            return self.repo.active_branch.name
        except TypeError:
            return None

    def head(self) -> str:
        try:
            return self.repo.head.commit.hexsha
        except ValueError as exc:
            raise GitError("the repository has no commit yet: commit the task files first") from exc

    def branch_exists(self, name: str) -> bool:
        return name in self.repo.heads

    def create_branch(self, name: str, at: str) -> None:
        self.git.checkout("-q", "-b", name, at)

    def checkout(self, name: str) -> None:
        self.git.checkout("-q", name)

    def run_branches(self) -> list[str]:
        return sorted(h.name for h in self.repo.heads if h.name.startswith(BRANCH_PREFIX))

    def changes(self) -> list[str]:
        """Paths that differ from HEAD, untracked files included (ignored ones not)."""
        out = self.git.status("--porcelain", "-z", "--untracked-files=all")
        paths, entries = [], out.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            if len(entry) > 3:
                paths.append(entry[3:])
                if entry[0] in "RC":  # a rename names its source in the next entry
                    i += 1
                    paths.append(entries[i])
            i += 1
        return paths

    def changed_between(self, a: str, b: str) -> list[str]:
        return [p for p in self.git.diff("--name-only", a, b).splitlines() if p]

    def commit_file(self, rel: str, message: str) -> str:
        self.git.add("--", rel)
        self._with_input(["commit", "-q", "--no-verify", "--cleanup=whitespace", "-F", "-", "--", rel], message)
        return self.head()

    def snapshot_commit(self, rel: str, data: bytes, parent: str, message: str) -> str:
        """A commit of `parent`'s tree with `rel` holding `data`, on no branch: neither the branch, the index nor
        the work tree moves (a wave's candidate, held by its ref alone)."""
        blob = self._with_input_bytes(["hash-object", "-w", "--stdin"], data).strip()
        mode = (
            (self.git.ls_tree(parent, "--", rel).split(" ", 1)[0] or "100644") if self.blob(parent, rel) else "100644"
        )
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.repo.git.execute(["git", "read-tree", parent], env=env)
            self.repo.git.execute(["git", "update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}"], env=env)
            tree = self.repo.git.execute(["git", "write-tree"], env=env).strip()
        return self._with_input(["commit-tree", tree, "-p", parent, "-F", "-"], message).strip()

    def recommit(self, sha: str, message: str) -> str:
        """The commit `sha` again (same tree, same parent) with `message`: a verdict on a commit no branch holds."""
        commit = self.repo.commit(sha)
        parents = [arg for p in commit.parents for arg in ("-p", p.hexsha)]
        return self._with_input(["commit-tree", commit.tree.hexsha, *parents, "-F", "-"], message).strip()

    def _with_input_bytes(self, args: list[str], data: bytes) -> str:
        with tempfile.TemporaryFile() as fh:
            fh.write(data)
            fh.seek(0)
            return self.repo.git.execute(["git", *args], istream=fh)

    def amend_message(self, message: str) -> str:
        # --only: the message alone; whatever a person staged meanwhile stays staged, out of the commit
        self._with_input(
            ["commit", "-q", "--no-verify", "--amend", "--only", "--allow-empty", "--cleanup=whitespace", "-F", "-"],
            message,
        )
        return self.head()

    def _with_input(self, args: list[str], text: str) -> str:
        """Run git with `text` on its standard input: a message of any length (argv would hit E2BIG)."""
        return self._with_input_bytes([*self.commit_config, *args], text.encode("utf-8"))

    def set_ref(self, name: str, sha: str) -> None:
        self.git.update_ref(name, sha)

    def set_tag_ref(self, name: str, sha: str, message: str) -> None:
        """Point ref `name` at a new annotated tag object on commit `sha` that carries `message`.

        Readers that peel (`git show REF:train.py`, `git log REF`) see the commit, as with a plain ref.
        """
        body = (
            f"object {sha}\ntype commit\ntag {name.removeprefix('refs/')}\n"
            f"tagger {self.identity} {int(time.time())} +0000\n\n{message}"
        )
        tag = self._with_input(["mktag"], body).strip()
        self.git.update_ref(name, tag)

    def ref_records(self, prefix: str) -> list[RefRecord]:
        """Every ref under `prefix` with what it points at and, for a tag, its message: one git call."""
        out = self.repo.git.execute(
            [
                "git",
                "for-each-ref",
                "--format=%(refname)%00%(objecttype)%00%(objectname)%00%(*objectname)%00%(contents:size)%0a%(contents)",
                prefix,
            ],
            stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
        records, at = [], 0
        while at < len(out):
            end = out.index(b"\n", at)
            name, kind, sha, peeled, size = out[at:end].decode("utf-8", errors="replace").split("\0")
            message = out[end + 1 : end + 1 + int(size)]
            at = end + 1 + int(size) + 1  # the newline for-each-ref puts after each record
            text = message.decode("utf-8", errors="replace") if kind == "tag" else None
            records.append(RefRecord(name, kind, peeled or sha, text))
        return records

    def refs(self, prefix: str) -> dict[str, str]:
        """Ref name to commit, through tag objects."""
        return {r.name: r.target for r in self.ref_records(prefix)}

    def reset_file_to(self, sha: str, rel: str, *, keep_tree_file: bool = False) -> None:
        """Move the branch to `sha` and return `rel` to its content there; nothing else in the tree is touched.

        With `keep_tree_file`, only the branch and the index move: the file in the work tree stays as it is.
        """
        self.git.reset("-q", "--soft", sha)
        if keep_tree_file:
            self.git.reset("-q", sha, "--", rel)
        else:
            self.git.checkout(sha, "--", rel)

    def tree_blob(self, rel: str) -> str | None:
        """The object id the work tree's `rel` would have (None if it is missing)."""
        if not (self.root / rel).is_file():
            return None
        return self.git.hash_object("--", rel)

    def blob(self, rev: str, rel: str) -> str | None:
        """The object id of `rel` at `rev` (None if it is not there): equal ids, equal contents."""
        try:
            return self.git.rev_parse(f"{rev}:{rel}")
        except git.GitCommandError:
            return None

    def show(self, sha: str, rel: str) -> str:
        return self.git.show(f"{sha}:{rel}")

    def diff(self, a: str, b: str, rel: str) -> str:
        """The unified diff of one file between two commits (empty when it did not change)."""
        return self.git.diff(a, b, "--", rel)

    def message(self, sha: str) -> str:
        return self.repo.commit(sha).message

    def parent(self, sha: str) -> str | None:
        parents = self.repo.commit(sha).parents
        return parents[0].hexsha if parents else None

    def short(self, sha: str) -> str:
        return sha[:7]

    def remove_stale_index_lock(self) -> bool:
        lock = self.git_dir / "index.lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_INDEX_LOCK_SECONDS:
            lock.unlink(missing_ok=True)
            return True
        return False
