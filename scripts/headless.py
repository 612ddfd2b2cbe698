"""Run the autoresearch loop unattended with Claude Code, until a stop condition (cron, tmux, a server).

    uv run scripts/headless.py TAG [--task DIR] [--deadline ISO-TIME] [--max-iters N] [--budget S]
                                   [--keep-rule NAME] [--confirm|--no-confirm] [--max-turns N]
                                   [--workers N] [--executor local|ray] [--ray-address HOST:PORT]

Runs `claude -p "/autoresearch TAG ..."` with the project's .claude/settings.json; the run options go to
`ratchet.py start` (a run that exists is resumed with its own options), --max-turns to claude. Prints the
ratchet's lines as they come and, last, how the run ended: "stopped: <reason>; model: <requests, tokens,
dollars per iteration and per kept improvement>". The session log is .git/autoresearch/TAG/headless.jsonl.
The client must be able to authenticate: ANTHROPIC_API_KEY (a server), ANTHROPIC_AUTH_TOKEN,
CLAUDE_CODE_OAUTH_TOKEN, or a login made once with `claude` and /login; this is checked before anything starts.
Exit codes: 0 a stop condition ended the run, 1 the client ended without one, 2 could not start.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from autoresearch import keeprules
from autoresearch.gitops import GitError, Repo
from autoresearch.headless import HeadlessError, headless
from autoresearch.runs import RunError


def iso_time(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time, e.g. 2026-11-23T07:00") from None
    return text


def start_args(args: argparse.Namespace) -> list[str]:
    """The options `ratchet.py start` receives through the slash command, in its own spelling."""
    given = []
    for option in ("task", "deadline", "max_iters", "budget", "keep_rule", "workers", "executor", "ray_address"):
        value = getattr(args, option)
        if value is not None:
            given += [f"--{option.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    if args.confirm is not None:
        given.append("--confirm" if args.confirm else "--no-confirm")
    return given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="headless.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tag", help="the run's tag: autoresearch/TAG is its branch")
    parser.add_argument("--task", help="task folder (default: the heart task at the root)")
    parser.add_argument("--deadline", type=iso_time, help="stop the run at this ISO time, e.g. 2026-11-23T07:00")
    parser.add_argument("--max-iters", type=int, help="stop the run after this many iterations")
    parser.add_argument("--budget", type=float, help="training budget in seconds, frozen for the run (lm tasks)")
    parser.add_argument(
        "--keep-rule", choices=keeprules.RULES, help="the keep rule, frozen for the run (default: the task's)"
    )
    parser.add_argument(
        "--confirm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="confirm a kept gain on fresh folds before keeping it (default: the start's)",
    )
    parser.add_argument("--workers", type=int, help="candidates scored at once: the agent writes waves (submit, wait)")
    parser.add_argument("--executor", choices=["local", "ray"], help="where they are scored (default: local)")
    parser.add_argument("--ray-address", help="the Ray cluster of --executor ray (default: $RAY_ADDRESS)")
    parser.add_argument("--max-turns", type=int, help="end each claude session after this many turns")
    args = parser.parse_args(argv)
    try:
        root = Path(Repo(".").root)
        code, line = headless(root, args.tag, start_args(args), max_turns=args.max_turns, out=sys.stdout)
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
