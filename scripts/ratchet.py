"""The ratchet CLI: a thin shim over the autoresearch library.

    uv run scripts/ratchet.py start TAG [--task DIR] [--deadline ISO] [--max-iters N] [--budget S] [--resume]
                                        [--keep-rule paired|corrected|rerun] [--confirm|--no-confirm]
                                        [--workers N] [--executor local|ray] [--ray-address HOST:PORT]
    uv run scripts/ratchet.py try "HYPOTHESIS"      commit train.py, score it, keep or reset; prints one line
    uv run scripts/ratchet.py submit "HYPOTHESIS"   queue train.py as a candidate of the wave, put it back; one line
    uv run scripts/ratchet.py wait [--all]          judge the wave when it is scored; one line per candidate
    uv run scripts/ratchet.py status [--json] [--tag TAG]
    uv run scripts/ratchet.py watch [--tag TAG] [--interval S] [--once]   a live view of the run, Ctrl-C quits
    uv run scripts/ratchet.py stop ["REASON"]       ask the active run to stop after the current iteration
    uv run scripts/ratchet.py report [--tag TAG ...|--all] [--out DIR] [--no-remeasure]   the morning review
    uv run scripts/ratchet.py new-task DATA.csv --target COLUMN [--name NAME] [--metric M] [--budget S]

Exit codes: 0 done (an iteration that crashed is still done: it is recorded), 2 refused (nothing changed).
"""

from __future__ import annotations

import argparse
import sys

from autoresearch import cli, keeprules, watch


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
    p.add_argument(
        "--keep-rule",
        metavar="NAME",
        help=f"the keep rule, frozen for the run: {', '.join(keeprules.RULES)} (default: the task harness's)",
    )
    p.add_argument(
        "--confirm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="confirm a gain kept as beyond noise on fresh folds before keeping it "
        f"(default: {'on' if keeprules.DEFAULT_CONFIRM else 'off'}, where the task's harness offers fresh folds)",
    )
    p.add_argument("--workers", type=int, help="candidates scored at once by submit/wait (default: 1, or one per GPU)")
    p.add_argument("--executor", choices=["local", "ray"], help="where they are scored (default: local)")
    p.add_argument("--ray-address", help="the Ray cluster of --executor ray (default: $RAY_ADDRESS)")
    p = sub.add_parser("try", help="score the current edit of train.py and keep it or reset it")
    p.add_argument("hypothesis", nargs="?", help="what this edit tests (default: HYPOTHESIS in train.py)")
    p = sub.add_parser("submit", help="queue the current edit of train.py as a wave's candidate; returns at once")
    p.add_argument("hypothesis", nargs="?", help="what this edit tests (default: HYPOTHESIS in train.py)")
    p = sub.add_parser("wait", help="wait for the wave's scores, judge it, keep at most one candidate")
    p.add_argument(
        "--all", action="store_true", help="wait however long it takes (default: return after 9 minutes at most)"
    )
    p = sub.add_parser("status", help="a digest of the run: best, recent rows, near misses, crashes")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tag", help="a run other than the checked-out one")
    p = sub.add_parser("watch", help="a live view of the run in the terminal, redrawn as rows arrive")
    p.add_argument("--tag", help="a run other than the checked-out one")
    p.add_argument(
        "--interval",
        type=float,
        default=watch.INTERVAL_SECONDS,
        help=f"seconds between redraws (default {watch.INTERVAL_SECONDS:g})",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p = sub.add_parser("stop", help="ask the active run to stop")
    p.add_argument("reason", nargs="?", default="")
    p.add_argument("--tag", help="a run other than the checked-out one")
    p = sub.add_parser("report", help="the morning review: progress.png, report.html, report.md")
    p.add_argument("--tag", action="append", help="a run to report (repeatable; default: the current run)")
    p.add_argument("--all", action="store_true", help="every autoresearch/* run in the repository")
    p.add_argument("--out", help="output folder (default: report/<tag>/ in the repository root)")
    p.add_argument("--no-remeasure", action="store_true", help="skip the fresh-fold re-measure")
    p.add_argument("--fresh-seeds", type=int, default=3, help="fresh CV seeds to re-measure on (default 3)")
    p = sub.add_parser("new-task", help="make tasks/NAME/ (frozen harness, baseline, card) from a CSV file")
    p.add_argument(
        "csv", help="the data: a CSV (, ; tab or | separated) or .xlsx file with a header row (referenced, not copied)"
    )
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--name", help="the task folder's name (default: the file's name)")
    p.add_argument(
        "--problem", choices=["binary", "multiclass", "regression"], help="default: inferred from the target"
    )
    p.add_argument(
        "--metric",
        help="val_auc, val_logloss, val_balanced_accuracy, val_rmse or val_r2 "
        "(default: val_auc, val_logloss, val_rmse by problem)",
    )
    p.add_argument("--budget", type=float, default=60.0, help="seconds for a candidate's whole evaluation (default 60)")
    p.add_argument("--drop", action="append", help="columns to leave out of the features (comma-separated)")
    p.add_argument("--keep", action="append", help="columns to keep although they look like ids or leakage")
    p.add_argument("--missing", action="append", help="strings that mean missing, e.g. --missing '?'")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing tasks/NAME")
    args = parser.parse_args(argv)
    return cli.dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
