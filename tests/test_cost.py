"""What the model cost, read from Claude Code's logs: each message id once, usage attributed to the iteration
whose `iter N |` line closes it, dollars from the price table or an override, tokens without dollars for a
model with no price. The events are built as the client (2.1.330) writes them: one assistant event per content
block, all with the message's id and usage; stream-json's output_tokens are placeholders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from autoresearch import cost, digest
from autoresearch.runs import RunConfig

OPUS = "claude-opus-5-5"  # $4 in, $20 out, $5 cache write, $0.20 cache read per million tokens


@pytest.fixture(autouse=True)
def no_user_files(tmp_path, monkeypatch):
    """No real transcripts or price files of the person running the tests."""
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    monkeypatch.delenv(cost.PRICES_ENV, raising=False)


def usage(inp=100, out=10, write=1000, read=20000) -> dict:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    }


def assistant(msg_id: str, blocks: int, use: dict, model: str = OPUS, session: str = "s1", when: str = "") -> list:
    """One API response as the client prints it: one event per content block, same id, same usage."""
    events = []
    for i in range(blocks):
        block = {"type": "text", "text": "thinking aloud"} if i == 0 else {"type": "tool_use", "id": f"t{i}"}
        message = {"id": msg_id, "model": model, "role": "assistant", "content": [block], "usage": dict(use)}
        events.append({"type": "assistant", "message": message, "session_id": session, "timestamp": when})
    return events


def result_of_tool(text: str, session: str = "s1") -> dict:
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": text}]}]
    return {"type": "user", "message": {"role": "user", "content": content}, "session_id": session}


def result_event(session: str = "s1", output: int = 0, usd: float = 0.0) -> dict:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "session_id": session,
        "usage": {"output_tokens": output},
        "total_cost_usd": usd,
    }


def write_jsonl(path: Path, events: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def a_run(session: str = "s1") -> list[dict]:
    """Set-up (1 request), iteration 1 (1), iteration 2 (2), then one request after the last iteration."""
    return [
        {"type": "system", "subtype": "init", "session_id": session, "model": OPUS},
        *assistant("m1", 2, usage(), session=session),
        result_of_tool("run t1 started on autoresearch/t1 | val_auc=0.80 | results in results.tsv", session),
        *assistant("m2", 3, usage(), session=session),
        result_of_tool("iter 1 | val_auc=0.9000 (Δ +0.1000 ± 0.0100) | KEPT | 2.0 s — all features", session),
        *assistant("m3", 1, usage(), session=session),
        result_of_tool("  iter 1 keep  val_auc=0.9 — a digest line, not the ratchet's", session),
        *assistant("m4", 2, usage(), session=session),
        result_of_tool("uv noise\niter 2 | val_auc=0.8000 | DISCARDED | 2.0 s — stronger regularisation", session),
        *assistant("m5", 1, usage(), session=session),
    ]


def test_each_message_id_counts_once_and_each_iteration_gets_what_came_before_its_line(tmp_path):
    write_jsonl(tmp_path / cost.HEADLESS_LOG, [*a_run(), result_event(output=50)])
    found = cost.run_cost(tmp_path)
    assert found.setup.requests == 1
    assert {n: t.requests for n, t in found.iterations.items()} == {1: 1, 2: 2}
    assert found.pending.requests == 1
    total = found.total
    assert total.requests == 5  # 9 assistant events, 5 message ids
    assert total.tokens == {"input": 500, "output": 50, "cache_write": 5000, "cache_write_1h": 0, "cache_read": 100000}
    one = (100 * 4 + 10 * 20 + 1000 * 5 + 20000 * 0.2) / 1e6
    assert total.usd == pytest.approx(5 * one)
    assert found.iterations[2].usd == pytest.approx(2 * one)


def test_the_figures_and_the_line_divide_by_iterations_and_kept_improvements(tmp_path):
    write_jsonl(tmp_path / cost.HEADLESS_LOG, [*a_run(), result_event(output=50, usd=0.05)])
    shown = cost.figures(tmp_path, iterations=2, kept=1)
    total = 5 * (100 * 4 + 10 * 20 + 1000 * 5 + 20000 * 0.2) / 1e6  # $0.048
    assert shown["usd"] == pytest.approx(total) and shown["per_iteration_usd"] == pytest.approx(total / 2)
    assert shown["line"] == "5 requests, 105.5 k tokens, $0.048 ($0.024 per iteration, $0.048 per kept improvement)"
    assert [(i["iter"], i["requests"]) for i in shown["iterations"]] == [(1, 1), (2, 2)]
    assert shown["client_estimate_usd"] == 0.05  # the client's own figure, kept beside ours
    assert "no kept improvement" in cost.figures(tmp_path, iterations=2, kept=0)["line"]
    assert cost.figures(tmp_path / "elsewhere", 2, 1) is None  # no session recorded: nothing to show


def test_stream_json_placeholder_output_is_topped_up_to_the_sessions_result(tmp_path):
    events = [*assistant("m1", 2, usage(out=1)), *assistant("m2", 1, usage(out=1)), result_event(output=154)]
    write_jsonl(tmp_path / cost.HEADLESS_LOG, events)
    assert cost.run_cost(tmp_path).total.tokens["output"] == 154


def test_a_sessions_transcript_is_read_instead_of_its_stream_json_and_never_both(tmp_path, monkeypatch):
    write_jsonl(tmp_path / cost.HEADLESS_LOG, [*assistant("m1", 2, usage(out=1)), result_event(output=2)])
    transcript = [*assistant("m1", 1, usage(out=1)), *assistant("m1", 1, usage(out=77))]  # output grows
    write_jsonl(Path(cost.config_dir()) / "projects" / "-repo" / "s1.jsonl", transcript)
    total = cost.run_cost(tmp_path).total
    assert total.requests == 1 and total.tokens["output"] == 77


def test_an_interactive_sessions_transcript_recorded_by_the_hook_is_read(tmp_path):
    path = write_jsonl(tmp_path / "elsewhere" / "s9.jsonl", a_run("s9"))
    cost.record_transcript(tmp_path, str(path))
    cost.record_transcript(tmp_path, str(path))  # every hook call records it: once is kept
    cost.record_transcript(tmp_path, None)
    assert (tmp_path / cost.TRANSCRIPTS_FILE).read_text() == f"{path}\n"
    found = cost.run_cost(tmp_path)
    assert found.total.requests == 5 and sorted(found.iterations) == [1, 2]
    cost.record_transcript(tmp_path / "no-such-run", str(path))  # silent: a hook must never fail on it
    assert not (tmp_path / "no-such-run").exists()


def test_sessions_are_attributed_in_the_order_they_started(tmp_path):
    first = [*assistant("a1", 1, usage(), session="s1", when="2026-11-22T23:00:00Z")]
    first.append(result_of_tool("iter 1 | val_auc=0.9 | KEPT | 1.0 s — x", "s1"))
    second = [*assistant("a2", 1, usage(), session="s2", when="2026-11-22T23:30:00Z")]
    second.append(result_of_tool("iter 2 | val_auc=0.9 | DISCARDED | 1.0 s — y", "s2"))
    write_jsonl(tmp_path / cost.HEADLESS_LOG, second + first)  # the log's order is not the sessions' order
    assert {n: t.requests for n, t in cost.run_cost(tmp_path).iterations.items()} == {1: 1, 2: 1}


def test_prices_by_the_longest_matching_model_id():
    prices, _ = cost.load_prices()
    assert cost.price_for("claude-opus-5-5-20260901", prices)["input"] == 4
    assert cost.price_for("claude-opus-5", prices)["input"] == 5
    assert cost.price_for("claude-opus-4-20250514", prices)["input"] == 15
    assert cost.price_for("claude-opus-4-5-20251101", prices)["input"] == 5
    assert cost.price_for("us.anthropic.claude-sonnet-4-5-20250929-v1:0", prices)["output"] == 15
    assert cost.price_for("claude-sonnet-5-5[1m]", prices)["cache_read"] == 0.1
    assert cost.price_for("claude-opus-55", prices) is None and cost.price_for("gpt-9", prices) is None


def test_dollars_for_one_request_with_hour_long_cache_writes_and_a_long_prompt_tier():
    prices, _ = cost.load_prices()
    record = {"model": OPUS, "input": 1_000_000, "output": 1_000_000, "cache_write": 0, "cache_write_1h": 0}
    assert cost.usd({**record, "cache_read": 0}, cost.price_for(OPUS, prices)) == pytest.approx(24.0)
    split = {**usage(inp=0, out=0, write=1_000_000, read=0), "cache_creation": {"ephemeral_1h_input_tokens": 400_000}}
    event = assistant("m", 1, split)[0]
    written = cost.usage_record(event)
    assert (written["cache_write"], written["cache_write_1h"]) == (600_000, 400_000)
    assert cost.usd(written, cost.price_for(OPUS, prices)) == pytest.approx(0.6 * 5 + 0.4 * 8)
    haiku = cost.price_for("claude-haiku-5-5", prices)
    short = {**record, "input": 50_000, "output": 0, "cache_read": 0}
    long = {**short, "cache_read": 60_000}  # the prompt counts cache reads too: above 100k tokens
    assert cost.usd(short, haiku) == pytest.approx(50_000 * 0.1 / 1e6)
    assert cost.usd(long, haiku) == pytest.approx((50_000 * 0.5 + 60_000 * 0.05) / 1e6)


def test_a_price_file_overrides_the_table_and_the_run_folders_wins(tmp_path, monkeypatch):
    write_jsonl(tmp_path / cost.HEADLESS_LOG, assistant("m1", 1, usage(inp=1_000_000, out=0, write=0, read=0)))
    assert cost.run_cost(tmp_path).total.usd == pytest.approx(4.0)
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({OPUS: {"input": 3, "output": 15}}))
    monkeypatch.setenv(cost.PRICES_ENV, str(user))
    assert cost.run_cost(tmp_path).total.usd == pytest.approx(3.0)
    assert cost.load_prices()[0][OPUS]["cache_read"] == pytest.approx(0.3)  # the usual multiple of input
    (tmp_path / cost.PRICES_FILE).write_text(json.dumps({OPUS: {"input": 2, "output": 10}}))
    found = cost.run_cost(tmp_path)
    assert found.total.usd == pytest.approx(2.0) and str(tmp_path / cost.PRICES_FILE) in found.prices


def test_a_bad_price_file_is_one_line_in_place_of_the_figures(tmp_path, monkeypatch):
    write_jsonl(tmp_path / cost.HEADLESS_LOG, assistant("m1", 1, usage()))
    (tmp_path / cost.PRICES_FILE).write_text(json.dumps({OPUS: {"input": "four"}}))
    shown = cost.figures(tmp_path, 1, 1)
    assert shown["line"].startswith("cost unknown: prices file ") and "needs input" in shown["line"]
    (tmp_path / cost.PRICES_FILE).write_text("{not json")
    assert cost.figures(tmp_path, 1, 1)["line"].startswith("cost unknown: prices file ")


def test_an_unknown_model_counts_tokens_without_dollars_and_is_named_once(tmp_path):
    events = [*assistant("m1", 2, usage(), model="claude-zeta-9"), *assistant("m2", 1, usage(), model="claude-zeta-9")]
    write_jsonl(tmp_path / cost.HEADLESS_LOG, events)
    shown = cost.figures(tmp_path, 1, 1)
    assert shown["requests"] == 2 and shown["usd"] == 0 and shown["unpriced_models"] == ["claude-zeta-9"]
    assert shown["line"].count("claude-zeta-9") == 1 and "$" not in shown["line"].split("add it")[0]
    assert shown["line"].startswith("2 requests, 42.2 k tokens, no price for claude-zeta-9 (42.2 k tokens)")
    events += assistant("m3", 1, usage(inp=1_000_000, out=0, write=0, read=0))  # a priced model beside it
    write_jsonl(tmp_path / cost.HEADLESS_LOG, events)
    line = cost.figures(tmp_path, 1, 1)["line"]
    assert "$4.00 ($4.00 per iteration" in line and line.count("no price for claude-zeta-9") == 1


def test_the_clients_own_notices_and_broken_lines_cost_nothing(tmp_path):
    log = tmp_path / cost.HEADLESS_LOG
    write_jsonl(log, [*assistant("x", 1, usage(), model="<synthetic>"), *assistant("m1", 1, usage())])
    with open(log, "a") as fh:
        fh.write('{"type": "assistant", "message": {"id": "half-writ')  # a session killed mid-line
    assert cost.run_cost(tmp_path).total.requests == 1


def test_dollars_and_tokens_read_well():
    assert [cost.dollars(x) for x in (0.84, 0.0015, 0.00154, 12.3, 0)] == [
        "$0.84",
        "$0.0015",
        "$0.0015",
        "$12.30",
        "$0.00",
    ]
    assert [cost.tokens_text(n) for n in (950, 12_345, 1_234_567)] == ["950", "12.3 k", "1.2 M"]
    assert math.isclose(cost.load_prices()[0]["claude-haiku-5-5"]["long_prompt"]["input"], 0.5)


def test_status_shows_one_model_line_when_a_session_was_recorded(tmp_path):
    config = RunConfig("t1", ".", "c0", "val_auc", True, 60.0, "2026-01-01T00:00:00")
    rows = [
        {"iter": "0", "status": "keep", "val_auc": "0.8", "timestamp": "2026-01-01T00:00:00"},
        {"iter": "1", "status": "keep", "val_auc": "0.9", "delta": "0.1", "timestamp": "2026-01-01T00:01:00"},
        {"iter": "2", "status": "discard", "val_auc": "0.8", "delta": "-0.1", "timestamp": "2026-01-01T00:02:00"},
    ]
    repo = SimpleNamespace(common_dir=tmp_path)
    assert digest.digest(config, rows, repo)["model_cost"] is None
    assert "model:" not in digest.render(digest.digest(config, rows, repo))
    write_jsonl(tmp_path / "autoresearch" / "t1" / cost.HEADLESS_LOG, a_run())
    d = digest.digest(config, rows, repo)
    model_lines = [line for line in digest.render(d).splitlines() if line.startswith("model:")]
    assert model_lines == [f"model: {d['model_cost']['line']}"] and "per kept improvement" in model_lines[0]
    assert d["model_cost"]["per_kept_usd"] == pytest.approx(d["model_cost"]["usd"])  # one kept improvement
    assert digest.digest(config, rows, repo, cost=False)["model_cost"] is None
