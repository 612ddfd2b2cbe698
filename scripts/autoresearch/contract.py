"""The contract between the ratchet and a task's harness, as code: what the summary block holds, and what a
harness supports.

The block (`summary.py` prints and parses its text) is checked against `KEYS` when a harness writes it
(`render`: a missing, unknown or mistyped key is a bug of the harness, raised as `BlockError`, never a
candidate's crash) and read through `Block`, whose properties are the only place the ratchet, `status`, the
report and the audit name a key. The metric's own key is dynamic (`val_auc`, `val_bpb`, ...): the block names
it in `metric:`, and its standard error is that key plus `_se`.

A harness declares what it supports in `Capabilities`, printed as JSON by `prepare.py --capabilities` (the
tabular and language-model `main`s answer it). Asked once by `start`, before the baseline runs, so that an
option the harness does not take is refused in one line, and recorded in the run record, where `try`,
`status` and the report read it. Why a separate call rather than keys of the block: the facts are the
harness's, not one scoring's; they are needed before anything is scored; and the printed block stays as it was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from autoresearch import summary

FAMILIES = ("common", "tabular", "lm")  # common: every harness writes it; the others: that family's harness
STATUSES = ("ok", "crash", "timeout")  # a block's status; anything but ok is the candidate's failure
DIRECTIONS = ("higher", "lower")
NO_SCORES = "none"  # fold_scores of a block with no score (the printed form of an empty list)
METRIC_KEY = "<metric>"  # stands for the key `metric:` names, in KEYS and in messages
SE_SUFFIX = "_se"
SCORE_KEY = re.compile(r"^val_[a-z0-9_]+$")  # a score's key: the metric's and the companions' (val_r2, ...)
# A budget of CPU time is also capped in wall time, at this multiple of it, for a candidate that sleeps or hangs
# (the tabular harness's cap). The ratchet allows a run that recorded no `timeout_seconds` (started before the
# tabular harness declared one) this multiple of its budget too, and a grace.
WALL_CAP_FACTOR = 4.0


class BlockError(Exception):
    """A harness wrote a block the contract does not allow: a bug in the harness, not in train.py."""


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # float, int, text, scores (comma-separated floats, or "none"), or choice (one of `choices`)
    required: bool
    family: str  # one of FAMILIES
    meaning: str
    choices: tuple[str, ...] = ()


KEYS: tuple[Key, ...] = (
    Key(METRIC_KEY, "float", True, "common", "the score: the mean over folds (or chunks); nan when not scored"),
    Key(METRIC_KEY + SE_SUFFIX, "float", True, "common", "its standard error over the folds (or chunks)"),
    Key("status", "choice", True, "common", "ok, or how the candidate failed", STATUSES),
    Key("error", "text", False, "common", "one line: why the candidate failed (required unless status is ok)"),
    Key("total_seconds", "float", True, "common", "the harness's whole wall time, scoring included"),
    Key("peak_memory_mb", "float", True, "common", "the candidate's peak resident memory"),
    Key("budget_seconds", "float", True, "common", "the candidate's budget (the clock is the harness's)"),
    Key("task", "text", True, "common", "the task's name"),
    Key("metric", "text", True, "common", "the key of the score the ratchet judges (e.g. val_auc)"),
    Key("direction", "choice", True, "common", "whether a higher or a lower score is better", DIRECTIONS),
    Key("fold_scores", "scores", True, "common", "the per-fold (per-run) scores the keep rule compares"),
    Key("<companion>", "float", False, "tabular", "another metric of the problem type on the same folds, shown"),
    Key("train_seconds", "float", True, "tabular", "wall time of the candidate's sandbox, all folds"),
    Key(
        "train_cpu_seconds",
        "float",
        False,  # blocks from before it lack it
        "tabular",
        "CPU time of the candidate's sandbox, all folds and what they started: what the budget counts",
    ),
    Key("n_folds", "int", True, "tabular", "folds x repeats: how many fold scores"),
    Key("cv_folds", "int", False, "tabular", "folds per repeat (k of k-fold): the corrected keep rule's 1/(k-1)"),
    Key("n_dev_rows", "int", True, "tabular", "development rows (the held-out part excluded)"),
    Key("cv_seed", "int", True, "tabular", "the seed of the folds (the ratchet's, or a fresh one)"),
    Key("training_seconds", "float", True, "lm", "the budget's clock as counted (CPU-s per thread, or wall)"),
    Key("wall_seconds", "float", True, "lm", "the training child's wall time"),
    Key("cpu_seconds", "float", True, "lm", "the training child's CPU time, all threads"),
    Key("tokens_per_second", "int", True, "lm", "training throughput as the child reported it"),
    Key("num_steps", "int", True, "lm", "optimizer steps as the child reported them"),
    Key("num_params", "int", True, "lm", "parameters of the exported model"),
    Key("mfu_percent", "float", True, "lm", "model FLOPs utilisation against a matmul probe"),
    Key("device", "choice", True, "lm", "where the model trained", ("cpu", "mps", "cuda")),
    Key("threads", "int", True, "lm", "CPU threads torch used"),
    Key("clock", "choice", True, "lm", "what the budget counts: cpu time or wall time", ("cpu", "wall")),
    Key(
        "timeout_seconds",
        "int",
        False,  # the language model's always writes it; without it, the ratchet allows the budget and a grace
        "common",
        "how long the ratchet lets the harness run",
    ),
    Key("seed", "int", True, "lm", "the seed handed to train() (reruns use others)"),
    Key("val_bytes", "int", True, "lm", "validation bytes scored"),
    Key("keep_rule", "text", True, "lm", "the keep rule the harness asks for (also in its capabilities)"),
)
_FIXED = {k.name: k for k in KEYS if not k.name.startswith("<")}
_COMPANION = next(k for k in KEYS if k.name == "<companion>")


def keys_for(family: str) -> list[Key]:
    """The keys a harness of `family` may write: the common ones and its own."""
    if family not in FAMILIES[1:]:
        raise ValueError(f"unknown harness family {family!r}; one of {', '.join(FAMILIES[1:])}")
    return [k for k in KEYS if k.family in ("common", family)]


def _fits(key: Key, value: object) -> bool:
    """Whether `value` is of the key's kind: the value itself, or the text a harness already formatted."""
    if isinstance(value, bool):
        return False
    if key.kind == "text":
        return isinstance(value, str)
    if key.kind == "choice":
        return value in key.choices
    if key.kind == "scores":
        if isinstance(value, (list, tuple)):
            return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return value == NO_SCORES
    if key.kind == "int":
        return isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and (value == "nan" or math.isfinite(summary.parse_float(value)))


def check_block(values: Mapping[str, object], family: str) -> Mapping[str, object]:
    """`values` unchanged if they are a block a harness of `family` may write; else BlockError naming the fault."""
    allowed = keys_for(family)
    fixed = {k.name: k for k in allowed if not k.name.startswith("<")}
    metric = values.get("metric")
    if not isinstance(metric, str) or not SCORE_KEY.match(metric) or metric in fixed:
        raise BlockError(f"metric: {metric!r} does not name a score key (val_...)")
    by_name = {metric: allowed[0], metric + SE_SUFFIX: allowed[1]}
    problems = []
    for name, value in values.items():
        key = by_name.get(name) or fixed.get(name)
        if key is None and _COMPANION in allowed and SCORE_KEY.match(name):
            key = _COMPANION
        if key is None:
            problems.append(f"unknown key {name!r}")
        elif not _fits(key, value):
            problems.append(f"{name}: {value!r} is not of kind {key.kind}" + (f" {key.choices}" if key.choices else ""))
    required = [metric, metric + SE_SUFFIX, *(k.name for k in fixed.values() if k.required)]
    problems += [f"missing key {name!r}" for name in required if name not in values]
    if values.get("status") not in (None, "ok") and not values.get("error"):
        problems.append(f"status {values.get('status')} without an error")
    if problems:
        raise BlockError(f"the {family} harness wrote a block the contract refuses: {'; '.join(problems)}")
    return values


def render(values: Mapping[str, object], family: str) -> str:
    """The block's text, once checked: what a harness prints on its stdout."""
    return summary.format_block(check_block(values, family))


@dataclass(frozen=True)
class Block:
    """A summary block as the ratchet reads it (strings, as parsed); every key is named here, nowhere else."""

    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Block:
        return cls(summary.parse_block(text))

    @classmethod
    def crash(cls, error: str) -> Block:
        """A block for a candidate's failure the harness could not report itself (killed, edited while scored)."""
        return cls({"status": "crash", "error": error})

    def __bool__(self) -> bool:
        return bool(self.fields)

    @property
    def status(self) -> str:
        return self.fields.get("status", "")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str:
        return self.fields.get("error", "")

    @property
    def metric_name(self) -> str:
        return self.fields.get("metric", "")

    @property
    def value_text(self) -> str:
        """The score as the harness printed it: what results.tsv records."""
        return self.fields.get(self.metric_name, "") if self.metric_name else ""

    @property
    def value(self) -> float:
        return summary.parse_float(self.value_text or None)

    @property
    def se(self) -> float:
        return summary.parse_float(self.fields.get(self.metric_name + SE_SUFFIX)) if self.metric_name else math.nan

    @property
    def fold_scores_text(self) -> str:
        return self.fields.get("fold_scores", "")

    @property
    def fold_scores(self) -> list[float]:
        text = self.fold_scores_text
        return [] if text == NO_SCORES else summary.parse_floats(text)

    @property
    def direction(self) -> str:
        return self.fields.get("direction", "higher")  # the tabular default, as blocks before the key had it

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def budget_seconds(self) -> float:
        return summary.parse_float(self.fields.get("budget_seconds"))

    @property
    def timeout_seconds(self) -> float:
        return summary.parse_float(self.fields.get("timeout_seconds"))

    @property
    def peak_memory_mb(self) -> float:
        return summary.parse_float(self.fields.get("peak_memory_mb"))

    @property
    def total_seconds(self) -> float:
        return summary.parse_float(self.fields.get("total_seconds"))

    @property
    def device(self) -> str | None:
        return self.fields.get("device")

    @property
    def task(self) -> str | None:
        return self.fields.get("task")

    @property
    def keep_rule(self) -> str | None:
        return self.fields.get("keep_rule")

    @property
    def cv_folds(self) -> int | None:
        """k of the harness's k-fold CV (folds per repeat); None for a harness that does not say it."""
        text = self.fields.get("cv_folds", "")
        return int(text) if text.isdigit() else None

    def with_runs(self, scores: list[float]) -> Block:
        """This block with `scores` as its per-run scores and their mean as the score (a rerun folded in)."""
        return Block(
            {
                **self.fields,
                self.metric_name: f"{sum(scores) / len(scores):.6f}",
                "fold_scores": ",".join(f"{s:.6f}" for s in scores),
            }
        )


# -- what a harness supports ----------------------------------------------------------------------------------
CAPABILITIES_FLAG = "--capabilities"
CLOCKS = ("cpu", "wall")


@dataclass(frozen=True)
class Capabilities:
    family: str  # "tabular" or "lm": which keys its block adds
    keep_rule: str  # the name of its keep rule (keeprules.RULES)
    fresh_folds: bool  # `--cv-seed N` scores on other folds: the report's fresh-fold re-measure
    audit_records: bool  # `--private-out FILE` gets the figures of the morning audit, never shown elsewhere
    budget_arg: bool  # `--budget S` sets the candidate's budget (`start --budget`)
    seed_arg: bool  # `--seed N` scores another draw of the same code (the reruns of a between-run rule)
    budget_clocks: dict[str, str]  # device -> "cpu" or "wall": what the budget counts there
    devices: tuple[str, ...]  # where the candidate can run
    truth: bool = False  # `--truth-out FILE` gets the true score on fresh rows (a task with a known generator)

    def to_json(self) -> dict:
        return {**asdict(self), "devices": list(self.devices)}

    @classmethod
    def from_json(cls, value: object) -> Capabilities:
        """Capabilities from their JSON form; ValueError naming the field that is missing or of the wrong type."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        kinds = {
            "family": str,
            "keep_rule": str,
            "fresh_folds": bool,
            "audit_records": bool,
            "budget_arg": bool,
            "seed_arg": bool,
            "budget_clocks": dict,
            "devices": list,
        }
        optional = {"truth": bool}  # fields added later: a record without them still reads
        for name, kind in optional.items():
            if name in value and not isinstance(value[name], kind):
                raise ValueError(f"{name}: not a {kind.__name__}")
        for name, kind in kinds.items():
            if not isinstance(value.get(name), kind):
                raise ValueError(f"{name}: missing or not a {kind.__name__}")
        if set(value) - set(kinds) - set(optional):
            raise ValueError(f"unknown fields {sorted(set(value) - set(kinds) - set(optional))}")
        if value["family"] not in FAMILIES[1:]:
            raise ValueError(f"family: {value['family']!r} is not one of {FAMILIES[1:]}")
        if not all(isinstance(d, str) for d in value["devices"]) or not all(
            c in CLOCKS for c in value["budget_clocks"].values()
        ):
            raise ValueError("devices must be names and budget_clocks cpu or wall")
        return cls(**{**value, "devices": tuple(value["devices"])})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def parse_capabilities(text: str) -> Capabilities:
    """What `prepare.py --capabilities` printed (its last non-empty line); ValueError when it is not that."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("it printed nothing")
    try:
        value = json.loads(lines[-1])
    except ValueError:
        raise ValueError(f"it printed no JSON: {lines[-1][:120]}") from None
    return Capabilities.from_json(value)
