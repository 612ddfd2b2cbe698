"""The summary block: `---` then aligned `key: value` lines, karpathy-style.

Harnesses print it; the ratchet, the benchmarks and the tests read it back with `parse_block`.
This is the one parser: nothing else reads a block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SEPARATOR = "---"


def format_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6f}"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return " ".join(str(value).split())  # one line, whatever the value held


def format_block(values: Mapping[str, object]) -> str:
    """Render `values` as a block; keys are aligned so that `grep '^val_auc:'` works."""
    width = max((len(k) for k in values), default=0) + 1
    lines = [SEPARATOR]
    lines += [f"{key + ':':<{width}} {format_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def parse_block(text: str) -> dict[str, str]:
    """Return the last block in `text` as strings ({} when there is none).

    Only lines after the last `---` line count, so output printed before the block is ignored.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == SEPARATOR]
    if not starts:
        return {}
    block: dict[str, str] = {}
    for line in lines[starts[-1] + 1 :]:
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            continue
        block[key.strip()] = value.strip()
    return block


def parse_float(value: str | None) -> float:
    """A block value as a float; missing or unparsable values are NaN."""
    try:
        return float(value) if value is not None else math.nan
    except ValueError:
        return math.nan


def parse_floats(value: str | None) -> list[float]:
    """A comma-separated block value (such as `fold_scores`) as floats."""
    if not value:
        return []
    return [parse_float(v) for v in value.split(",")]
