"""Run a command in its own process group with a hard wall-clock limit and bounded output.

Both trust boundaries use it: the ratchet around the frozen harness, the harness around the candidate.
Output goes to a sink as raw bytes (never decoded on the way, so non-UTF-8 output cannot break anything)
and is capped: a candidate that floods its output fills neither the disk nor memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_OUTPUT_BYTES = 2_000_000  # head of the output kept in a log: enough for any honest traceback or progress print
TAIL_BYTES = 64_000  # and the tail after a cut, where the error of a flooding program is
CHUNK_BYTES = 65_536
PIPE_DRAIN_SECONDS = 15  # after the group is killed, only a process that left it can hold the pipe open
LAST_BYTES = 4096  # kept apart so that a failure's last line can be quoted without reading a log back


@dataclass
class ProcResult:
    returncode: int | None  # None when it was killed at the limit
    timed_out: bool
    seconds: float
    output_bytes: int  # everything the process wrote, before the cap
    pid: int
    tail: bytes = b""  # the last bytes it wrote, for a one-line reason when it fails


class CappedSink:
    """Writes the first `max_bytes` of a stream through, then keeps only a tail, written at `close`."""

    def __init__(self, sink: BinaryIO, max_bytes: int = MAX_OUTPUT_BYTES, tail_bytes: int = TAIL_BYTES):
        self.sink, self.max_bytes, self.total = sink, max_bytes, 0
        self.tail: deque[bytes] = deque()
        self.tail_size, self.tail_bytes = 0, tail_bytes
        self.last = b""  # the final few KB, cut or not
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            room = self.max_bytes - self.total
            self.total += len(data)
            self.last = (self.last + data)[-LAST_BYTES:]
            if room > 0:
                self.sink.write(data[:room])
                self.sink.flush()
                data = data[room:]
            if data:
                self.tail.append(data)
                self.tail_size += len(data)
                while self.tail and self.tail_size - len(self.tail[0]) >= self.tail_bytes:
                    self.tail_size -= len(self.tail.popleft())

    def close(self) -> None:
        with self.lock:
            if self.total > self.max_bytes:
                dropped = self.total - self.max_bytes - self.tail_size
                self.sink.write(f"\n[... {dropped} bytes of output cut ...]\n".encode())
                self.sink.write(b"".join(self.tail))
            self.sink.flush()


def _pump(stream: BinaryIO, sink: CappedSink) -> None:
    for chunk in iter(lambda: stream.read1(CHUNK_BYTES), b""):
        sink.write(chunk)


OUR_COMMAND_MARKERS = (b"prepare.py", b"autoresearch")  # in the command line of every harness and child


def kill_stale_group(pgid: int) -> None:
    """SIGKILL a group recorded earlier (a pgid file, state.json), unless its id now leads a stranger.

    Linux does not give a new process the id of a live process group, so a group whose leader is gone can
    be killed safely; a leader that exists but is not one of ours means the id was reused: leave it alone.
    """
    try:
        command = Path(f"/proc/{pgid}/cmdline").read_bytes()
    except OSError:  # no such process, or no /proc (macOS): nothing to mistake it for
        command = None
    if command is not None and not any(marker in command for marker in OUR_COMMAND_MARKERS):
        return
    kill_group(pgid)


def hide_from_peers() -> None:
    """Make this process's /proc entries (open pipes, memory) unreachable to other processes of the user.

    The candidate runs as the same user: without this it could write a forged summary block into the
    harness's stdout through /proc/<ppid>/fd/1. Linux only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_DUMPABLE = 4
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; a group that is already gone is fine."""
    if pgid <= 0 or pgid == os.getpgrp():
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_in_group(
    cmd: list[str],
    *,
    timeout: float,
    stdout: BinaryIO,
    stderr: BinaryIO | None = None,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    on_start=None,
    feed=None,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    pass_fds: tuple[int, ...] = (),
) -> ProcResult:
    """Run `cmd` as the leader of a new session; kill the whole group at `timeout` seconds and on exit.

    `stderr=None` merges stderr into `stdout`. `on_start(pid)` is called once the process exists
    (the pid is also its process-group id), so a caller can record it for crash recovery.
    `feed(stdin)`, if given, writes the process's input from a thread while it starts up; an exception it
    raises is re-raised here after the process is gone.
    Killing the group after a normal exit too reaps whatever the program left running in it.
    `pass_fds` are handed to the process and closed here once it has them (so that their other ends see end of
    input when the process is gone).
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr is None else subprocess.PIPE,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    for fd in pass_fds:
        os.close(fd)
    if on_start is not None:
        on_start(proc.pid)
    sinks = [CappedSink(stdout, max_output_bytes)]
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sinks[0]), daemon=True)]
    if stderr is not None:
        sinks.append(CappedSink(stderr, max_output_bytes))
        pumps.append(threading.Thread(target=_pump, args=(proc.stderr, sinks[1]), daemon=True))
    for pump in pumps:
        pump.start()
    feed_errors: list[BaseException] = []
    if feed is not None:

        def feeding() -> None:
            try:
                with proc.stdin:
                    feed(proc.stdin)
            except BrokenPipeError:
                pass  # the process is gone before reading its input: its exit code tells why
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                feed_errors.append(exc)

        feeder = threading.Thread(target=feeding, daemon=True)
        feeder.start()
    timed_out = False
    try:
        proc.wait(timeout=max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        kill_group(proc.pid)
        proc.wait()
        for pump in pumps:
            # A grandchild that escaped the group may still hold the pipe: do not wait for it forever.
            pump.join(timeout=PIPE_DRAIN_SECONDS)
        for sink in sinks:
            sink.close()
    if feed is not None:
        feeder.join()  # bounded: it either finishes its work or meets a closed pipe
    if feed_errors:
        raise feed_errors[0]
    return ProcResult(
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        output_bytes=sum(s.total for s in sinks),
        pid=proc.pid,
        tail=sinks[-1].last,
    )


def peak_child_memory_mb() -> float:
    """Peak resident memory of the largest child process waited for so far, in MB."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def last_line(data: bytes) -> str:
    """The last non-blank line of some output, decoded whatever its encoding: the usual 'Error: why'."""
    lines = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
