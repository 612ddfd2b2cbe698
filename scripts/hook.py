"""Claude Code hook shim: `python scripts/hook.py pre-tool-use|stop|session-start` with the event on stdin.

Prints the hook's JSON answer (or nothing) and exits 0; the rules are in autoresearch/hooks.py. A PreToolUse
that fails during a run denies the call (exit 2), so a broken hook never opens what it guards.
"""

from __future__ import annotations

import json
import os
import sys

from autoresearch import hooks


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in hooks.EVENTS:
        print(f"usage: hook.py {'|'.join(hooks.EVENTS)} < event.json", file=sys.stderr)
        return 1
    try:
        event = json.loads(sys.stdin.read() or "{}")
        answer = hooks.handle(argv[0], event, os.environ.get("CLAUDE_PROJECT_DIR"))
    except Exception as exc:  # noqa: BLE001 -- any failure must reach the person as one line
        print(f"autoresearch hook {argv[0]} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        during_run = hooks.run_state(os.environ.get("CLAUDE_PROJECT_DIR") or ".") is not None
        return 2 if argv[0] == "pre-tool-use" and during_run else 1
    if answer is not None:
        print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
