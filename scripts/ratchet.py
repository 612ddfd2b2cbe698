"""The ratchet CLI: a thin shim over the autoresearch library.

    uv run scripts/ratchet.py start TAG [--task DIR] [--deadline ISO] [--max-iters N] [--budget S] [--resume]
    uv run scripts/ratchet.py try "HYPOTHESIS"      commit train.py, score it, keep or reset; prints one line
    uv run scripts/ratchet.py status [--json] [--tag TAG]
    uv run scripts/ratchet.py stop ["REASON"]       ask the active run to stop after the current iteration

Exit codes: 0 done (an iteration that crashed is still done: it is recorded), 2 refused (nothing changed).
"""

from __future__ import annotations

import argparse
import sys

from autoresearch import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ratchet.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("start", help="create autoresearch/TAG and score the baseline")
    p.add_argument("tag")
    p.add_argument("--task", default=".", help="task folder (default: the heart task at the root)")
    p.add_argument("--deadline", help="stop the run at this ISO time, e.g. 2026-11-23T07:00")
    p.add_argument("--max-iters", type=int, help="stop the run after this many iterations")
    p.add_argument("--resume", action="store_true", help="go on with an existing run")
    p.add_argument("--budget", type=float, help="training budget in seconds, frozen for the run (language-model tasks)")
    p = sub.add_parser("try", help="score the current edit of train.py and keep it or reset it")
    p.add_argument("hypothesis", nargs="?", help="what this edit tests (default: HYPOTHESIS in train.py)")
    p = sub.add_parser("status", help="a digest of the run: best, recent rows, near misses, crashes")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tag", help="a run other than the checked-out one")
    p = sub.add_parser("stop", help="ask the active run to stop")
    p.add_argument("reason", nargs="?", default="")
    p.add_argument("--tag", help="a run other than the checked-out one")
    args = parser.parse_args(argv)
    return cli.dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
