"""What the model cost: tokens and dollars per iteration, read from Claude Code's own logs.

Two logs carry the same assistant messages, each with `message.usage` and `message.model`:
- the headless runner's stream-json log, `.git/autoresearch/<tag>/headless.jsonl` (one or more sessions);
- the client's session transcripts, `~/.claude/projects/<slug>/<session>.jsonl` (`$CLAUDE_CONFIG_DIR` if set),
  whose paths the hooks record in `.git/autoresearch/<tag>/transcripts.txt` (`record_transcript`); a headless
  session's transcript is also found by its session id.
A session is read from its transcript when there is one: stream-json prints each message when its content
blocks end, before the final usage arrives, so its output_tokens are placeholders (measured with client
2.1.330: 1 in the log, 77 in the transcript); read from stream-json alone, a session's output tokens are
topped up to its `result` event's total, spread evenly over its messages.

One API response is written as several messages (one per content block) with the same message id and the same
usage: each id counts once (its largest figures). Usage accumulates until a tool result carries the ratchet's
`iter N | ...` line: iteration N gets it. What comes before the start's `run TAG started` line is the set-up;
what comes after the last iteration line is pending (the iteration under way, or the wrap-up).

Dollars come from PRICES (USD per million tokens, the public list prices), overridden by a JSON file named by
$AUTORESEARCH_PRICES and then by `prices.json` in the run folder. A model without a price still counts its
tokens, and the figures say once which model had no price. Nothing here is written in the work tree or in
results.tsv: the figures are computed on demand from the logs.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# USD per million tokens by model id prefix (the longest matching prefix wins), checked 2026-12-01 against
# platform.claude.com/docs/en/about-claude/pricing and the catalog bundled in Claude Code 2.1.330.
# cache_write is the 5-minute write, cache_write_1h the 1-hour one; long_prompt: the rates of a request whose
# prompt (input + cache reads + cache writes) is above `above_prompt_tokens` (Haiku 5.5).
PRICES_CHECKED = "2026-12-01"


def _tier(inp: float, out: float, write: float, write_1h: float, read: float) -> dict[str, float]:
    return {"input": inp, "output": out, "cache_write": write, "cache_write_1h": write_1h, "cache_read": read}


PRICES: dict[str, dict] = {
    "claude-fable-5-2": _tier(8, 40, 10, 16, 0.2),
    "claude-fable-5-1": _tier(10, 50, 12.5, 20, 0.25),
    "claude-fable-5": _tier(10, 50, 12.5, 20, 1),
    "claude-mythos-5-2": _tier(8, 40, 10, 16, 0.2),
    "claude-mythos-5-1": _tier(10, 50, 12.5, 20, 0.25),
    "claude-mythos-5": _tier(10, 50, 12.5, 20, 1),
    "claude-opus-5-5": _tier(4, 20, 5, 8, 0.2),
    "claude-opus-5": _tier(5, 25, 6.25, 10, 0.5),
    "claude-opus-4-8": _tier(5, 25, 6.25, 10, 0.5),
    "claude-opus-4-7": _tier(5, 25, 6.25, 10, 0.5),
    "claude-opus-4-6": _tier(5, 25, 6.25, 10, 0.5),
    "claude-opus-4-5": _tier(5, 25, 6.25, 10, 0.5),
    "claude-opus-4-1": _tier(15, 75, 18.75, 30, 1.5),
    "claude-opus-4": _tier(15, 75, 18.75, 30, 1.5),
    "claude-3-opus": _tier(15, 75, 18.75, 30, 1.5),
    "claude-sonnet-5-5": _tier(2, 10, 2.5, 4, 0.1),
    "claude-sonnet-5": _tier(2, 10, 2.5, 4, 0.2),
    "claude-sonnet-4": _tier(3, 15, 3.75, 6, 0.3),  # 4, 4.5 and 4.6
    "claude-3-7-sonnet": _tier(3, 15, 3.75, 6, 0.3),
    "claude-3-5-sonnet": _tier(3, 15, 3.75, 6, 0.3),
    "claude-haiku-5-5": {
        **_tier(0.1, 0.5, 0.125, 0.2, 0.01),
        "long_prompt": {"above_prompt_tokens": 100_000, **_tier(0.5, 2.5, 0.625, 1, 0.05)},
    },
    "claude-haiku-4-5": _tier(1, 5, 1.25, 2, 0.1),
    "claude-3-5-haiku": _tier(0.8, 4, 1, 1.6, 0.08),
    "claude-3-haiku": _tier(0.25, 1.25, 0.3, 0.5, 0.03),
}
PRICES_ENV = "AUTORESEARCH_PRICES"  # a JSON file of prices over PRICES (same shape; keys are model id prefixes)
PRICES_FILE = "prices.json"  # in the run folder: this run's prices, over PRICES_ENV's and PRICES
# An override that names only input and output gets the cache rates by the usual multipliers of input.
CACHE_MULTIPLIERS = {"cache_write": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}
HEADLESS_LOG = "headless.jsonl"  # the headless runner's stream-json log, in the run folder
TRANSCRIPTS_FILE = "transcripts.txt"  # in the run folder: one transcript path a line, recorded by the hooks
ITER_LINE = re.compile(r"^iter (\d+) \|")  # the ratchet's one line per iteration (messages.line)
START_LINE = re.compile(r"^run \S+ started ")  # start's line: the set-up ends there
TOKEN_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
NO_MODEL = "<synthetic>"  # the client's own messages (errors, notices): no request was made
PREFILTER = ('"assistant"', '"tool_result"', '"result"', '"init"')  # lines worth parsing; transcripts are big


class CostError(Exception):
    """A price file that cannot be used; one line naming it."""


# -- prices ---------------------------------------------------------------------------------------------
def _checked_price(name: str, value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise CostError(f'{where}: {name!r} must map to an object like {{"input": 3, "output": 15}}')
    price = {}
    for key in ("input", "output", *CACHE_MULTIPLIERS):
        given = value.get(key)
        if given is None and key in CACHE_MULTIPLIERS:
            given = price["input"] * CACHE_MULTIPLIERS[key]
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not math.isfinite(given) or given < 0:
            raise CostError(f"{where}: {name!r} needs {key} as a number of USD per million tokens")
        price[key] = float(given)
    long = value.get("long_prompt")
    if long is not None:
        limit = long.get("above_prompt_tokens") if isinstance(long, dict) else None
        if not isinstance(limit, int) or limit <= 0:
            raise CostError(f"{where}: {name!r} long_prompt needs above_prompt_tokens, a positive integer")
        price["long_prompt"] = {"above_prompt_tokens": limit, **_checked_price(name, long, where)}
    return price


def load_prices(folder: Path | None = None) -> tuple[dict[str, dict], str]:
    """(prices by model prefix, where they came from): PRICES, then $AUTORESEARCH_PRICES, then the run's
    prices.json, each entry replacing the one of the same prefix."""
    prices = {name: _checked_price(name, value, "PRICES") for name, value in PRICES.items()}
    source = f"list prices of {PRICES_CHECKED}"
    files = [Path(os.environ[PRICES_ENV])] if os.environ.get(PRICES_ENV) else []
    if folder is not None and (folder / PRICES_FILE).exists():
        files.append(folder / PRICES_FILE)
    for path in files:
        try:
            given = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CostError(f"prices file {path}: {exc}") from None
        if not isinstance(given, dict):
            raise CostError(f'prices file {path}: use an object like {{"claude-opus-5-5": {{"input": 4, ...}}}}')
        prices.update({name: _checked_price(name, value, f"prices file {path}") for name, value in given.items()})
        source = f"{source} and {path}"
    return prices, source


def model_id(model: str) -> str:
    """`claude-...` without a provider's wrapping: `us.anthropic.claude-x-v1:0`, `claude-x@20250101`, `[1m]`."""
    model = model.split("[", 1)[0]
    at = model.find("claude-")
    return model[at:] if at >= 0 else model


def price_for(model: str, prices: dict[str, dict]) -> dict | None:
    """The price of the longest prefix `model` starts with (whole parts only: `claude-opus-5` is not
    `claude-opus-5-5`'s price, and `claude-opus-4` matches `claude-opus-4-20250514`)."""
    name = model_id(model)
    for key in sorted(prices, key=len, reverse=True):
        if name == key or (name.startswith(key) and name[len(key)] in "-@:"):
            return prices[key]
    return None


def usd(record: dict, price: dict) -> float:
    """Dollars of one request's usage at `price`."""
    prompt = record["input"] + record["cache_read"] + record["cache_write"] + record["cache_write_1h"]
    long = price.get("long_prompt")
    if long and prompt > long["above_prompt_tokens"]:
        price = long
    return sum(record[k] * price[k] for k in TOKEN_FIELDS) / 1e6


# -- reading the logs -----------------------------------------------------------------------------------
def read_events(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSONL file worth reading; broken or half-written lines are skipped."""
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return
    with fh:
        for line in fh:
            if not any(marker in line for marker in PREFILTER):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def tool_result_lines(event: dict) -> list[str]:
    """The lines of the tool results in one user event (stream-json and transcripts share the shape)."""
    if event.get("type") != "user":
        return []
    content = (event.get("message") or {}).get("content")
    lines = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            inner = block.get("content")
            text = (
                inner
                if isinstance(inner, str)
                else "\n".join(c.get("text", "") for c in inner or [] if isinstance(c, dict))
            )
            lines += text.splitlines()
    return lines


def usage_record(event: dict) -> dict | None:
    """One assistant event's request: its model and token counts; None for anything else."""
    if event.get("type") != "assistant":
        return None
    message = event.get("message") or {}
    usage = message.get("usage")
    if not isinstance(usage, dict) or message.get("model") in (None, NO_MODEL):
        return None

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    written = count("cache_creation_input_tokens")
    hour = min(written, split.get("ephemeral_1h_input_tokens") or 0) if isinstance(split, dict) else 0
    return {
        "model": str(message["model"]),
        "input": count("input_tokens"),
        "output": count("output_tokens"),
        "cache_write": written - hour,
        "cache_write_1h": hour,
        "cache_read": count("cache_read_input_tokens"),
    }


@dataclass
class Stream:
    """One session's events, from its transcript or from the headless log."""

    session: str
    events: list[dict]
    from_stream_json: bool  # output tokens are placeholders: top them up to the result event's total

    @property
    def first_time(self) -> str:
        return next((e["timestamp"] for e in self.events if isinstance(e.get("timestamp"), str)), "")


def config_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")


def find_transcript(session: str) -> Path | None:
    """The client's transcript of a session, by its id, in any project folder."""
    if not re.fullmatch(r"[A-Za-z0-9-]+", session):
        return None
    found = glob.glob(str(config_dir() / "projects" / "*" / f"{session}.jsonl"))
    return Path(found[0]) if found else None


def recorded_transcripts(folder: Path) -> list[Path]:
    try:
        lines = (folder / TRANSCRIPTS_FILE).read_text().splitlines()
    except OSError:
        return []
    return [Path(line) for line in dict.fromkeys(line.strip() for line in lines) if line]


def record_transcript(folder: Path, transcript_path: str | None) -> None:
    """Remember a session's transcript for the run's cost (the hooks receive `transcript_path`); cheap and
    silent, as a hook must be: an unwritable folder only loses the cost figures."""
    if not transcript_path or "\n" in transcript_path or not folder.is_dir():
        return
    try:
        if Path(transcript_path) in recorded_transcripts(folder):
            return
        with open(folder / TRANSCRIPTS_FILE, "a") as fh:
            fh.write(transcript_path + "\n")
    except OSError:
        pass


def streams(folder: Path) -> list[Stream]:
    """Every session of the run, each once, in the order they started."""
    by_session: dict[str, list[dict]] = {}
    for event in read_events(folder / HEADLESS_LOG):
        session = event.get("session_id")
        if isinstance(session, str):
            by_session.setdefault(session, []).append(event)
    recorded = {path.stem: path for path in recorded_transcripts(folder)}
    found = []
    for session, events in by_session.items():
        transcript = recorded.pop(session, None) or find_transcript(session)
        if transcript is not None and transcript.exists():
            found.append(Stream(session, list(read_events(transcript)), from_stream_json=False))
        else:
            found.append(Stream(session, events, from_stream_json=True))
    found += [Stream(s, list(read_events(p)), from_stream_json=False) for s, p in recorded.items() if p.exists()]
    return sorted(found, key=lambda s: s.first_time)  # stable: sessions without timestamps keep their order


# -- attribution ----------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Requests and tokens of a part of the run, and their dollars (the priced part)."""

    requests: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    usd: float = 0.0
    unpriced: dict[str, int] = field(default_factory=dict)  # model -> tokens with no price

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def add(self, record: dict, prices: dict[str, dict]) -> None:
        self.requests += 1
        for k in TOKEN_FIELDS:
            self.tokens[k] += record[k]
        price = price_for(record["model"], prices)
        if price is None:
            name = model_id(record["model"])
            self.unpriced[name] = self.unpriced.get(name, 0) + sum(record[k] for k in TOKEN_FIELDS)
        else:
            self.usd += usd(record, price)

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        for k in TOKEN_FIELDS:
            self.tokens[k] += other.tokens[k]
        self.usd += other.usd
        for name, n in other.unpriced.items():
            self.unpriced[name] = self.unpriced.get(name, 0) + n

    def to_json(self) -> dict:
        return {"requests": self.requests, "tokens": dict(self.tokens), "usd": round(self.usd, 6)}


@dataclass
class RunCost:
    setup: Tally
    iterations: dict[int, Tally]
    pending: Tally
    prices: str  # where the prices came from
    client_usd: float | None  # the client's own estimate (result events of the headless log), for comparison

    @property
    def total(self) -> Tally:
        total = Tally()
        for part in (self.setup, *self.iterations.values(), self.pending):
            total.merge(part)
        return total


def attribute(found: list[Stream], prices: dict[str, dict]) -> tuple[Tally, dict[int, Tally], Tally]:
    """(set-up, iteration -> its requests, pending): each message id once, closed by the ratchet's lines."""
    parts: list[tuple[int | None, list[dict]]] = []  # (iteration, 0 set-up, None pending; its requests)
    current: list[dict] = []
    last, started = 0, False
    for stream in found:
        seen: dict[str, dict] = {}
        mine: list[dict] = []
        for event in stream.events:
            record = usage_record(event)
            if record is not None:
                message = event.get("message") or {}
                key = str(message.get("id") or event.get("uuid") or id(event))
                if key in seen:  # the same response, another content block: keep the largest figures
                    kept = seen[key]
                    for k in TOKEN_FIELDS:
                        kept[k] = max(kept[k], record[k])
                    continue
                seen[key] = record
                mine.append(record)
                current.append(record)
                continue
            if stream.from_stream_json and event.get("type") == "result":
                _top_up_output(mine, event)
                continue
            for line in tool_result_lines(event):
                match = ITER_LINE.match(line)
                n = int(match.group(1)) if match else None
                if n is not None and n > last:
                    parts.append((n, current))
                    current, last = [], n
                elif (n == 0 or START_LINE.match(line)) and last == 0 and not started:
                    parts.append((0, current))
                    current, started = [], True
    parts.append((None, current))
    setup, pending, iterations = Tally(), Tally(), {}
    for n, records in parts:
        tally = setup if n == 0 else pending if n is None else iterations.setdefault(n, Tally())
        for record in records:
            tally.add(record, prices)
    return setup, iterations, pending


def _top_up_output(records: list[dict], result: dict) -> None:
    """Spread the shortfall between a session's result total and its messages' placeholder output tokens."""
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    total = usage.get("output_tokens")
    counted = sum(r["output"] for r in records)
    if not records or not isinstance(total, int) or total <= counted:
        return
    share, extra = divmod(total - counted, len(records))
    for i, record in enumerate(records):
        record["output"] += share + (1 if i < extra else 0)


def run_cost(folder: Path) -> RunCost | None:
    """The run's model cost from its logs; None when no session of it was recorded. CostError: a bad price file."""
    found = streams(folder)
    if not found:
        return None
    prices, source = load_prices(folder)
    setup, iterations, pending = attribute(found, prices)
    client = [
        e["total_cost_usd"]
        for e in read_events(folder / HEADLESS_LOG)
        if e.get("type") == "result" and isinstance(e.get("total_cost_usd"), (int, float))
    ]
    return RunCost(setup, iterations, pending, source, round(sum(client), 6) if client else None)


# -- showing it -----------------------------------------------------------------------------------------
def dollars(x: float) -> str:
    """$0.84, $12.30, $0.0015: two significant digits below a dollar, cents above."""
    if x >= 0.995 or x == 0:
        return f"${x:,.2f}"
    return f"${x:.{max(2, 1 - math.floor(math.log10(x)))}f}"


def tokens_text(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def summary(cost: RunCost, iterations: int, kept: int) -> str:
    """`12 requests, 1.2 M tokens, $0.84 ($0.42 per iteration, $0.84 per kept improvement)`."""
    total = cost.total
    text = f"{total.requests} requests, {tokens_text(total.total_tokens)} tokens"
    if total.unpriced and not total.usd:
        return text + f", no price for {_unpriced(total)}"
    per = [f"{dollars(total.usd / iterations)} per iteration" if iterations else "no iteration yet"]
    per.append(f"{dollars(total.usd / kept)} per kept improvement" if kept else "no kept improvement")
    text += f", {dollars(total.usd)} ({', '.join(per)})"
    return text + (f"; no price for {_unpriced(total)}" if total.unpriced else "")


def _unpriced(total: Tally) -> str:
    names = ", ".join(f"{m} ({tokens_text(n)} tokens)" for m, n in sorted(total.unpriced.items()))
    return f"{names}: add it to {PRICES_FILE} in the run folder or to ${PRICES_ENV}"


def figures(folder: Path, iterations: int, kept: int) -> dict | None:
    """The digest's `model_cost`: the one line and the figures behind it; None when no session was recorded."""
    try:
        cost = run_cost(folder)
    except CostError as exc:
        return {"line": f"cost unknown: {exc}", "error": str(exc)}
    if cost is None:
        return None
    total = cost.total
    return {
        "line": summary(cost, iterations, kept),
        **total.to_json(),
        "per_iteration_usd": round(total.usd / iterations, 6) if iterations else None,
        "per_kept_usd": round(total.usd / kept, 6) if kept else None,
        "setup": cost.setup.to_json(),
        "iterations": [{"iter": n, **t.to_json()} for n, t in sorted(cost.iterations.items())],
        "pending": cost.pending.to_json(),
        "unpriced_models": sorted(total.unpriced),
        "prices": cost.prices,
        "client_estimate_usd": cost.client_usd,
    }
