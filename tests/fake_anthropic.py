"""A scripted, stateless fake of the Anthropic Messages API (stdlib only), enough for the real Claude Code
client (2.1.330, bundled in claude-agent-sdk 0.2.187) to run offline against 127.0.0.1.

Usage::

    from fake_anthropic import FakeAnthropic, Text, ToolUse

    turns = [
        [Text("Reading"), ToolUse("Read", {"file_path": "/abs/train.py"})],
        ToolUse("Edit", {"file_path": "/abs/train.py", "old_string": "a", "new_string": "b"}),
        "All done.",
    ]
    with FakeAnthropic(turns) as api:
        ...  # point the client at api.url
        api.requests          # every request: RecordedRequest(method, path, headers, body)
        api.main_requests()   # only the agent-loop requests (those carrying tools)

The reply is chosen from the request alone: turn index = number of assistant
messages already in ``messages``.  Retries and side queries therefore never
desync the script.  Requests without ``tools`` are side queries (titles,
summaries, ...) and get a short text answer.

A *script* is either

* a list of turns; a turn is a ``str``, a ``Block`` (``Text``/``ToolUse``), an
  ``ApiError`` (answer with that HTTP status) or a list of them.  Past the
  end of the list the server answers ``Text(default_text)`` (ends the run), or
* a callable ``script(request_json) -> Block | str | list | None``
  (``None`` means "use the default text").  Use :func:`turn_index` and
  :func:`last_tool_result` inside it to branch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Text",
    "ToolUse",
    "ApiError",
    "FakeAnthropic",
    "RecordedRequest",
    "turn_index",
    "last_tool_result",
    "tool_results",
    "all_text",
    "is_side_query",
]


# --------------------------------------------------------------------------- blocks
@dataclass
class Text:
    text: str


@dataclass
class ToolUse:
    name: str
    input: dict = field(default_factory=dict)
    id: str | None = None  # default: deterministic from turn/position


@dataclass
class ApiError:
    """Make the server answer this request with an HTTP error instead."""

    status: int = 500
    type: str = "api_error"
    message: str = "fake server error"


Block = Text | ToolUse
Turn = str | Block | Sequence[str | Block]
Script = Sequence[Turn] | Callable[[dict], Any]


# --------------------------------------------------------------------------- request helpers
def is_side_query(req: dict) -> bool:
    """Requests without tools are the client's side queries (titles etc.)."""
    return not req.get("tools")


def turn_index(req: dict) -> int:
    """Number of assistant turns already present in the conversation."""
    return sum(1 for m in req.get("messages", []) if m.get("role") == "assistant")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for c in content or []:
        if isinstance(c, dict) and c.get("type") == "text":
            out.append(c.get("text", ""))
        elif isinstance(c, dict) and c.get("type") == "tool_result":
            out.append(_content_text(c.get("content")))
    return "\n".join(out)


def tool_results(req: dict) -> list[dict]:
    """All tool_result blocks of the request, oldest first, each as
    ``{"tool_use_id", "is_error", "text", "raw"}``."""
    res = []
    for m in req.get("messages", []):
        if m.get("role") != "user" or isinstance(m.get("content"), str):
            continue
        for c in m.get("content") or []:
            if isinstance(c, dict) and c.get("type") == "tool_result":
                res.append(
                    {
                        "tool_use_id": c.get("tool_use_id"),
                        "is_error": bool(c.get("is_error", False)),
                        "text": _content_text(c.get("content")),
                        "raw": c,
                    }
                )
    return res


def last_tool_result(req: dict) -> dict | None:
    """The most recent tool_result (see :func:`tool_results`) or None."""
    res = tool_results(req)
    return res[-1] if res else None


def all_text(req: dict) -> str:
    """All text of all messages (user + assistant, incl. tool results)."""
    return "\n".join(_content_text(m.get("content")) for m in req.get("messages", []))


# --------------------------------------------------------------------------- server
@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict
    body: Any  # parsed JSON, raw str, or None
    received_at: float = field(default_factory=time.time)  # wall clock


def _normalize(turn: Any) -> list:
    if turn is None:
        return []
    if isinstance(turn, (str, Text, ToolUse, ApiError)):
        turn = [turn]
    return [Text(b) if isinstance(b, str) else b for b in turn]


class FakeAnthropic:
    """Threaded HTTP server on 127.0.0.1:<free port> speaking enough of the
    Messages API (streaming SSE and plain JSON) for the Claude Code CLI."""

    def __init__(
        self,
        script: Script,
        *,
        default_text: str = "Done.",
        side_query_text: str = "Scripted session",
        model: str = "claude-sonnet-4-5",
    ):
        self.script = script
        self.default_text = default_text
        self.side_query_text = side_query_text
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeAnthropic:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- views on recorded traffic
    def message_requests(self) -> list[dict]:
        """Bodies of all POST /v1/messages requests (main + side queries)."""
        with self._lock:
            return [
                r.body
                for r in self.requests
                if r.method == "POST" and r.path.split("?")[0] == "/v1/messages" and isinstance(r.body, dict)
            ]

    def main_requests(self) -> list[dict]:
        """Bodies of agent-loop requests (those carrying tools)."""
        return [b for b in self.message_requests() if not is_side_query(b)]

    # -- reply selection
    def reply_blocks(self, req: dict) -> list:
        """Blocks for this request (may contain a single ApiError)."""
        if is_side_query(req):
            return [Text(self.side_query_text)]
        idx = turn_index(req)
        if callable(self.script):
            blocks = _normalize(self.script(req))
        else:
            blocks = _normalize(self.script[idx]) if idx < len(self.script) else []
        if not blocks:
            blocks = [Text(self.default_text)]
        # deterministic tool ids: stable across retries
        out = []
        for i, b in enumerate(blocks):
            if isinstance(b, ToolUse) and not b.id:
                b = ToolUse(b.name, b.input, f"toolu_fake_{idx:03d}_{i}")
            out.append(b)
        return out

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)


def _message_id(req: dict) -> str:
    return f"msg_fake_{turn_index(req):03d}"


def _usage() -> dict:
    return {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _sse_events(fake: FakeAnthropic, req: dict, blocks: list[Block]) -> list[tuple[str, dict]]:
    stop_reason = "tool_use" if any(isinstance(b, ToolUse) for b in blocks) else "end_turn"
    ev: list[tuple[str, dict]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": _message_id(req),
                    "type": "message",
                    "role": "assistant",
                    "model": req.get("model") or fake.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": _usage(),
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for i, b in enumerate(blocks):
        if isinstance(b, Text):
            ev.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            ev.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": b.text},
                    },
                )
            )
        else:
            ev.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "tool_use", "id": b.id, "name": b.name, "input": {}},
                    },
                )
            )
            ev.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(b.input)},
                    },
                )
            )
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        )
    )
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev


def _make_handler(fake: FakeAnthropic):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            fake._record(RecordedRequest("HEAD", self.path, dict(self.headers), None))
            self._send(200, b"")

        def do_GET(self):
            fake._record(RecordedRequest("GET", self.path, dict(self.headers), None))
            self._send(200, b"{}")

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n).decode("utf-8", "replace") if n else ""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw
            fake._record(RecordedRequest("POST", self.path, dict(self.headers), body))
            path = self.path.split("?")[0]
            if path == "/v1/messages/count_tokens":
                return self._send(200, b'{"input_tokens": 10}')
            if path != "/v1/messages" or not isinstance(body, dict):
                return self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"fake"}}')
            try:
                blocks = fake.reply_blocks(body)
            except Exception as e:  # script bug: surface it, answer plain text
                fake.errors.append(f"{type(e).__name__}: {e}")
                blocks = [Text(f"fake server script error: {e}")]
            err = next((b for b in blocks if isinstance(b, ApiError)), None)
            if err:
                return self._send(
                    err.status,
                    json.dumps({"type": "error", "error": {"type": err.type, "message": err.message}}).encode(),
                )
            if not body.get("stream"):  # Claude Code 2.1.330 always streams
                return self._send(
                    400, b'{"type":"error","error":{"type":"invalid_request_error","message":"stream only"}}'
                )
            payload = "".join(
                f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in _sse_events(fake, body, blocks)
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()

    return Handler
