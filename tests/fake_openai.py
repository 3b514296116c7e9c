"""A fake OpenAI-compatible server on 127.0.0.1 for tests and benchmarks: a teacher, a student and a judge
that misbehave on purpose when told to.

    server = FakeOpenAI(reply=teaching_reply)      # answers each role as a scripted model would
    server.api_base                                # http://127.0.0.1:<port>/v1
    server.mode, server.faults = "500", 2          # the next two requests fail with a 500, then "ok" again
    server.close()

Modes: ok (200, or a stream of chunks when the request asks for one), not-json (a body that is not JSON),
no-choices, 500, 429 (with Retry-After: `retry_after`), hang (no answer for `hang_s` seconds), 401 and
echo-500 (error bodies that echo the request's Authorization header and `echo`, as careless providers do).
`hits` counts requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "not-json", "no-choices", "500", "429", "hang", "401", "echo-500")
Reply = Callable[[list[dict[str, Any]]], str]


def completion(content: str, model: str = "x") -> dict[str, Any]:
    """A whole chat.completion reply holding `content`."""
    words = len(content.split())
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words},
    }


class FakeOpenAI:
    """An OpenAI-style /v1/chat/completions answering each request as `mode` says; `reply(messages)`
    is the content of an `ok` answer (default "Korrin.")."""

    def __init__(self, reply: Reply | None = None, hang_s: float = 10.0) -> None:
        self.mode = "ok"
        self.faults: int | None = None  # requests left in `mode` before it turns "ok"; None: no end
        self.hits = 0
        self.retry_after = "1"
        self.hang_s = hang_s
        self.echo = ""  # what the echoing error modes repeat besides the Authorization header
        self.reply: Reply = reply or (lambda messages: "Korrin.")
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                server.answer(self, raw)

            def do_GET(self) -> None:  # /v1/models
                server._send(self, 200, json.dumps({"object": "list", "data": [{"id": "x"}]}))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.api_base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _mode_now(self) -> str:
        with self._lock:
            self.hits += 1
            mode = self.mode
            if self.faults is not None and mode != "ok":
                self.faults -= 1
                if self.faults <= 0:
                    self.mode, self.faults = "ok", None
            return mode

    def answer(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        mode = self._mode_now()
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        headers: dict[str, str] = {}
        if mode == "hang":
            time.sleep(self.hang_s)
            return
        echoed = f"{self.echo} {h.headers.get('authorization', '')}".strip()
        if mode == "ok":
            content = self.reply(request.get("messages") or [])
            if request.get("stream"):
                self._stream(h, content, str(request.get("model") or "x"))
                return
            status, body = 200, json.dumps(completion(content, str(request.get("model") or "x")))
        elif mode == "not-json":
            status, body = 200, "<html>502 upstream went away</html>"
        elif mode == "no-choices":
            status, body = 200, json.dumps({**completion("Korrin."), "choices": []})
        elif mode == "500":
            status, body = 500, json.dumps({"error": {"message": "the GPU fell over"}})
        elif mode == "429":
            status, body = 429, json.dumps({"error": {"message": "slow down"}})
            headers["Retry-After"] = self.retry_after
        elif mode == "401":  # a careless provider echoes what it was sent
            status, body = 401, json.dumps({"error": {"message": f"Incorrect API key provided: {echoed}"}})
        elif mode == "echo-500":
            status, body = 500, json.dumps({"error": {"message": f"internal error while serving {echoed}"}})
        else:
            raise AssertionError(mode)
        self._send(h, status, body, headers)

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, body: str, headers: dict[str, str] | None = None
    ) -> None:
        data = body.encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _stream(self, h: BaseHTTPRequestHandler, content: str, model: str) -> None:
        """The reply as server-sent events, word by word, then a usage chunk and [DONE]."""
        pieces = re.findall(r"\S+\s*", content) or [""]
        chunks = [
            {
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
                ]
            }
            for piece in pieces
        ]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        words = len(pieces)
        chunks.append(
            {
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words},
            }
        )
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("connection", "close")
        h.end_headers()
        for chunk in chunks:
            event = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                **chunk,
            }
            h.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()
        h.close_connection = True

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- a scripted cast behind the fake server: enough to run a scenario end to end ---------------------------


def teaching_reply(messages: list[dict[str, Any]]) -> str:
    """What a student, a teacher or a judge says, told apart by the system prompt (agents/prompts.yaml):
    the teacher answers with the sentence of its notes that shares most words with the question, the
    judge accepts, the student asks about its objective and restates what it was taught."""
    system = next((str(m.get("content") or "") for m in messages if m.get("role") == "system"), "")
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    if system.startswith("You grade"):
        return json.dumps({"reason": "every fact agrees with the notes", "score": 9})
    if system.startswith("You check statements"):
        return "true"
    if system.startswith("You rewrite a question"):
        asked = re.search(r"Question: (.+)", last)
        return asked.group(1).strip() if asked else "What does it say?"
    if "patient teacher" in system:
        return _teacher(last)
    if "curious student" in system:
        return _student(last)
    return "I do not know."


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def _teacher(prompt: str) -> str:
    notes = prompt.split("Notes:", 1)[-1].split("Student's question:", 1)[0]
    question = prompt.split("Student's question:", 1)[-1].split("\n", 1)[0]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", notes) if len(s.strip()) > 20]
    if not sentences:
        return "The notes do not say."
    return max(sentences, key=lambda s: len(_words(s) & _words(question)))


def _student(prompt: str) -> str:
    answered = re.search(r"The teacher answered: (.+?)\n", prompt, re.S)
    if answered and "what you learned" in prompt:
        said = answered.group(1).strip()
        return "I learned that " + said[:1].lower() + said[1:]
    fact = re.search(r"about this: (.+)", prompt, re.S)
    if fact and "yes-or-no" in prompt:
        return f"Is it true that {fact.group(1).strip().rstrip('.')}?"
    draft = re.search(r"in your own words: (.+)", prompt)
    if draft:
        return draft.group(1).strip()
    gap = re.search(r"fills the gap in: (.+)", prompt)
    if gap:
        return gap.group(1).strip().rstrip(".").replace("...", "what") + "?"
    topic = re.search(r"question about: (.+?)\.", prompt)
    return f"What should I know about {topic.group(1) if topic else 'this'}?"
