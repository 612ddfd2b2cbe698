"""Run a candidate-side command and report, on a descriptor it never holds, how it ended and the CPU it used.

`python -I -m autoresearch.supervise REPORT_FD [--cpu-budget SECONDS] -- COMMAND...` (inside the sandbox). The
candidate runs in new user and PID namespaces of its own when the kernel allows (`sandbox.isolate_fold`), so it
can neither see nor signal this process; when it exits, the kernel kills and reaps everything it started. Where
the kernel refuses those namespaces, this process becomes the candidate's subreaper instead: whatever the
candidate leaves behind is re-parented here, still counted, and killed when the candidate ends.

The CPU time comes from the kernel, not from anything the candidate says: at the end from wait4 (the candidate
and every process it left behind, all reaped below this one), and while it runs, with `--cpu-budget`, from the
kernel's per-process counters in /proc summed over the whole tree below this process (`candidate_cpu_seconds`), read
every POLL_SECONDS: past the budget the whole tree is killed. Forking does not hide CPU: a child's time stays in
the tree, as its own while it lives and in its reaper's children's time once reaped. Bubblewrap does not pass
its children's CPU time up to the harness, so the harness cannot measure it itself.
The report is one JSON line: {"returncode": ..., "cpu_seconds": ..., "cpu_budget_exceeded": ...}; a negative
returncode is a signal.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import select
import signal
import sys
import time
from pathlib import Path

from autoresearch import proc, sandbox

POLL_SECONDS = 0.25  # how often the tree's CPU is read: a run past its budget is killed within about this
# much wall time (a read costs ~1 ms in the sandbox, where the tree is a dozen processes)
KILL_PASSES = 100  # kill passes over the tree until nothing is left (a forker may fork during one)
REPORT_BYTES = 4096  # the report's line is far shorter; a reader never reads more
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def main(argv: list[str]) -> int:
    report_fd, budget, command = parse_args(argv)
    proc.hide_from_peers()
    uid, gid = os.geteuid(), os.getegid()
    isolated = sandbox.isolate_fold()
    if isolated:
        sandbox.map_own_ids(uid, gid)
    else:
        become_subreaper()  # no PID namespace to hold what the candidate leaves: this process holds it
    status_read, status_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # PID 1 of the candidate's namespace when isolated: it waits, the candidate runs below it
        os.close(report_fd)
        os.close(status_read)
        code = sandbox.init_then(lambda: run(command, status_write))
        os.write(status_write, str(code).encode())
        os._exit(0)
    os.close(status_write)
    status, over_budget, counted = watch(pid, budget, isolated)
    with os.fdopen(status_read, "rb") as channel:
        said = channel.read(64).decode(errors="replace")
    code = int(said) if said.lstrip("-").isdigit() else os.waitstatus_to_exitcode(status)
    if over_budget:
        code = -signal.SIGKILL  # killed here; the candidate's own last word came after the budget
    # wait4's count, unless the last reading is larger: killed from here, PID 1 dies first, and what the kernel
    # then kills in its namespace never reaches wait4
    cpu = max(children_cpu_seconds(), counted)
    report = {"returncode": code, "cpu_seconds": cpu, "cpu_budget_exceeded": over_budget}
    os.write(report_fd, (json.dumps(report) + "\n").encode())
    return 0


def parse_args(argv: list[str]) -> tuple[int, float, list[str]]:
    """(report descriptor, CPU budget in seconds (inf: none), the command)."""
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    budget = math.inf
    if "--cpu-budget" in options:
        budget = float(options[options.index("--cpu-budget") + 1])
    return int(options[0]), budget, command


def run(command: list[str], status_fd: int) -> None:
    os.close(status_fd)
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)


def watch(pid: int, budget: float, isolated: bool) -> tuple[int, bool, float]:
    """Wait for the candidate's top process `pid`, reading the tree's CPU while it runs and killing the tree
    past `budget`; then kill and reap whatever is left. Returns (its wait status, whether the budget killed it,
    the CPU last read while it ran)."""
    exited = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    status, over_budget, counted = None, False, 0.0
    try:
        while status is None:
            if exited is not None:
                select.select([exited], [], [], POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)
            status = reap_children(pid)
            if status is None and not over_budget and math.isfinite(budget):
                # Read twice before killing: a process reaped between the reads of it and of its parent is
                # counted twice in one reading, never in the next.
                counted = candidate_cpu_seconds()
                if counted > budget:
                    counted = candidate_cpu_seconds()
                    if counted > budget:
                        over_budget = True
                        kill_tree(pid, isolated)
    finally:
        if exited is not None:
            os.close(exited)
    kill_tree(pid, isolated)  # orphans held here (no PID namespace) die with the candidate
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()
    return status, over_budget, counted


def reap_children(pid: int) -> int | None:
    """Reap every child that has ended (the candidate's top process, orphans held here); `pid`'s status or None."""
    status = None
    while True:
        try:
            reaped, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if reaped == 0:
            return status
        if reaped == pid:
            status = wait_status


def children_cpu_seconds() -> float:
    """CPU of the children this process has reaped, and of everything they reaped in turn (the kernel's wait4)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_tree() -> dict[int, tuple[int, float]]:
    """Every process /proc shows: pid -> (parent pid, CPU seconds of itself and of the children it reaped)."""
    table: dict[int, tuple[int, float]] = {}
    try:
        if int(os.readlink("/proc/self")) != os.getpid():
            return table  # a /proc of another PID namespace: its numbers are not ours to sum or to kill
        entries = os.listdir("/proc")
    except (OSError, ValueError):  # no /proc (macOS): nothing to read while it runs; the count at the end holds
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:  # ended meanwhile: its time is in its reaper's children's time now
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # the name, in parentheses, may hold spaces
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        table[int(entry)] = (int(fields[1]), ticks / CLOCK_TICKS)
    return table


def descendants(root: int, table: dict[int, tuple[int, float]]) -> list[int]:
    """`root` and every process below it in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root] if root in table else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def candidate_cpu_seconds() -> float:
    """CPU used so far by everything below this process, living, or reaped by this process or one below it.
    (Everything the candidate starts stays below: in its PID namespace, or re-parented here as the subreaper.)"""
    table, me = read_tree(), os.getpid()
    return children_cpu_seconds() + sum(table[pid][1] for pid in descendants(me, table) if pid != me)


def kill_tree(root: int, isolated: bool) -> None:
    """SIGKILL the candidate and everything it started. Isolated, killing the namespace's PID 1 is enough (the
    kernel kills the rest); otherwise every process below this one, pass after pass until none is left."""
    if isolated:
        with contextlib.suppress(ProcessLookupError):
            os.kill(root, signal.SIGKILL)
        return
    me = os.getpid()
    for _ in range(KILL_PASSES):
        table = read_tree()
        alive = [p for p in descendants(me, table) if p != me and not zombie(p)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].startswith(b"Z")


def become_subreaper() -> None:
    """Orphans of the candidate are re-parented to this process rather than to the system's init (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def parse_report(raw: bytes) -> dict:
    """The supervisor's line as the harness reads it; {} when it did not write one (killed at the wall cap)."""
    try:
        report = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    ok = isinstance(report, dict) and isinstance(report.get("returncode"), int)
    return report if ok and isinstance(report.get("cpu_seconds"), (int, float)) else {}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
