"""Run the autoresearch loop unattended with Claude Code, until a stop condition (cron, tmux, a server):

    uv run scripts/headless.py TAG [--task DIR] [--deadline ISO-TIME] [--max-iters N] [--max-turns N]

Prints the ratchet's lines as they come and, last, how the run ended ("stopped: <reason>").
Exit codes: 0 a stop condition ended the run, 1 the client ended without one, 2 could not start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoresearch.gitops import GitError, Repo
from autoresearch.headless import HeadlessError, headless
from autoresearch.runs import RunError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="headless.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("tag")
    parser.add_argument("--max-turns", type=int, help="end each claude session after this many turns")
    args, start_args = parser.parse_known_args(argv)  # --task, --deadline, --max-iters go to ratchet.py start
    try:
        root = Path(Repo(".").root)
        code, line = headless(root, args.tag, start_args, max_turns=args.max_turns, out=sys.stdout)
    except (HeadlessError, RunError, GitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autoresearch {args.tag}: interrupted; resume with the same command", file=sys.stderr)
        return 1
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
