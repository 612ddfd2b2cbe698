"""Run a candidate-side command and report, on a descriptor it never holds, how it ended and the CPU it used.

`python -I -m autoresearch.supervise REPORT_FD -- COMMAND...` (inside the sandbox). The candidate runs in new
user and PID namespaces of its own when the kernel allows (`sandbox.isolate_fold`), so it can neither see nor
signal this process; when it exits, the kernel kills and reaps everything it started. The CPU time comes from
the kernel (wait4: the candidate and every process it left behind), not from anything the candidate says:
bubblewrap does not pass its children's CPU time up to the harness, so the harness cannot measure it itself.
The report is one JSON line: {"returncode": ..., "cpu_seconds": ...}; a negative returncode is a signal.
"""

from __future__ import annotations

import json
import os
import sys

from autoresearch import proc, sandbox


def main(argv: list[str]) -> int:
    report_fd, command = int(argv[0]), argv[argv.index("--") + 1 :]
    proc.hide_from_peers()
    uid, gid = os.geteuid(), os.getegid()
    isolated = sandbox.isolate_fold()
    if isolated:
        sandbox.map_own_ids(uid, gid)
    status_read, status_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # PID 1 of the candidate's namespace when isolated: it waits, the candidate runs below it
        os.close(report_fd)
        os.close(status_read)
        code = sandbox.init_then(lambda: run(command, status_write))
        os.write(status_write, str(code).encode())
        os._exit(0)
    os.close(status_write)
    _, status, usage = os.wait4(pid, 0)  # the candidate's CPU comes with it: PID 1 waited for every process
    with os.fdopen(status_read, "rb") as channel:
        said = channel.read(64).decode(errors="replace")
    code = int(said) if said.lstrip("-").isdigit() else os.waitstatus_to_exitcode(status)
    report = {"returncode": code, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    os.write(report_fd, (json.dumps(report) + "\n").encode())
    return 0


def run(command: list[str], status_fd: int) -> None:
    os.close(status_fd)
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
