"""What each ratchet verb does, with errors turned into one line and an exit code. scripts/ratchet.py parses."""

from __future__ import annotations

import json
import math
import os
import sys

import git

from autoresearch import digest, ledger, loop, proc, starting, watch, waves
from autoresearch.data import DataError
from autoresearch.gitops import GitError, Repo
from autoresearch.recovery import recover_if_idle
from autoresearch.refs import open_config, verified_rows
from autoresearch.runs import RunError, run_dir, tag_of_branch
from autoresearch.stopping import STOP_FILE
from autoresearch.taskdir import find_task

REFUSED = 2
FAILED = 1  # an error the ratchet did not foresee: still one line (AUTORESEARCH_DEBUG=1 shows the traceback)


def _json_default(value):
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def run_for(repo: Repo, tag: str | None):
    """(config, task, notes) of run `tag` or the checked-out one; run.json is rebuilt from its refs if need be."""
    tag = tag or tag_of_branch(repo.branch())
    config, notes = open_config(repo, tag) if tag else (None, [])
    if config is None:
        raise RunError(f"no run {tag!r}" if tag else "not on an autoresearch run branch; pass --tag TAG")
    return config, find_task(repo, config.task), notes


def dispatch(args) -> int:
    proc.hide_from_peers()
    try:
        repo = Repo(".")
        if args.verb == "start":
            print(
                starting.start(
                    repo,
                    args.tag,
                    args.task,
                    resume=args.resume,
                    deadline=args.deadline,
                    max_iters=args.max_iters,
                    budget=getattr(args, "budget", None),
                    keep_rule=getattr(args, "keep_rule", None),
                    confirm=getattr(args, "confirm", None),
                    workers=getattr(args, "workers", None),
                    executor=getattr(args, "executor", None),
                    ray_address=getattr(args, "ray_address", None),
                )
            )
        elif args.verb == "try":
            print(loop.try_edit(repo, args.hypothesis))
        elif args.verb == "submit":
            print(waves.submit(repo, args.hypothesis))
        elif args.verb == "wait":
            print(waves.wait(repo, wait_all=args.all))
        elif args.verb == "status":
            config, task, notes = run_for(repo, args.tag)
            notes.append(recover_if_idle(repo, config, task))
            notes += waves.recover_waves_if_idle(repo, config, task)
            rows, more = verified_rows(repo, config, task)
            for note in [n for n in notes + more if n]:  # --json keeps stdout for the JSON alone
                print(note, file=sys.stderr if args.json else sys.stdout)
            d = digest.digest(config, rows, repo)
            print(json.dumps(d, indent=1, default=_json_default) if args.json else digest.render(d))
        elif args.verb == "watch":
            return watch.watch(repo, args.tag, interval=args.interval, once=args.once)
        elif args.verb == "stop":
            config, _, _ = run_for(repo, args.tag)
            (run_dir(repo, config.tag) / STOP_FILE).write_text(args.reason + "\n")
            print(f"run {config.tag} will stop: the next try is refused and the agent may end its session")
        elif args.verb == "report":
            from autoresearch import report  # matplotlib is loaded only when a report is asked for

            seeds = tuple(range(1, args.fresh_seeds + 1))
            print(
                report.generate(
                    repo,
                    args.tag,
                    all_runs=args.all,
                    out=args.out,
                    remeasure=not args.no_remeasure,
                    fresh_seeds=seeds,
                    echo=lambda line: print(line, file=sys.stderr, flush=True),  # stdout: the markdown alone
                ),
                end="",
            )
        elif args.verb == "new-task":
            # pandas and sklearn take seconds to import; the other verbs do not need them
            from autoresearch import newtask

            newtask.new_task(
                repo,
                args.csv,
                args.target,
                echo=lambda line: print(line, flush=True),
                name=args.name,
                problem=args.problem,
                metric=args.metric,
                budget=args.budget,
                drop=args.drop,
                keep=args.keep,
                missing=args.missing,
                force=args.force,
            )
        return 0
    except (RunError, GitError, DataError, ledger.LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    except git.GitCommandError as exc:  # e.g. an index.lock a crashed git left: say so, no traceback
        why = " ".join(str(exc.stderr or exc).split())[:300]
        print(f"error: git {exc.command[1] if len(exc.command) > 1 else ''} failed: {why}", file=sys.stderr)
        return REFUSED
    except Exception as exc:  # noqa: BLE001 - a bad input nobody foresaw still gets one line, not a traceback
        if os.environ.get("AUTORESEARCH_DEBUG"):
            raise
        why = " ".join(str(exc).split())[:300]
        print(f"error: {type(exc).__name__}: {why} (unexpected; AUTORESEARCH_DEBUG=1 shows where)", file=sys.stderr)
        return FAILED
