"""The local judge's HTTP side: OpenAI's two endpoints on a ThreadingHTTPServer, the injectable faults, the counters
tests read, and `start_judge_server` / `start_local_judge_if_asked` (see the core.rewards.judge_server docstring)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from core.rewards.judge_server.scoring import KEYS_RE, answer_keys, answer_schema, score_images

# (kind, seconds of a slow= marker, condition after ~); see "Faults" in the package docstring.
_MARKER_RE = re.compile(r"\[judge:(500|429|garbage|timeout|truncated|slow=(\d+(?:\.\d*)?|\.\d+))(?:~([^\]]+))?\]")
_GARBAGE_REPLY = "Honestly it looks pretty good to me, maybe a seven out of ten? Hard to say."


class JudgeServerStats:
    """Thread-safe counters of what the server saw; read the attributes directly, they are updated under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0  # chat-completion requests received (every attempt, whatever the outcome)
        self.by_hash: Counter[str] = Counter()  # attempts per distinct request body
        self.status_counts: Counter[int] = Counter()  # chat-completion replies by HTTP status
        self.model_list_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=64)  # the last request bodies, oldest first

    @property
    def distinct(self) -> int:
        """How many distinct request bodies reached the server."""
        return len(self.by_hash)

    def reset(self) -> None:
        """Zero every counter (a test phase starts from a clean slate without restarting the server)."""
        with self._lock:
            self.total = 0
            self.by_hash.clear()
            self.status_counts.clear()
            self.model_list_requests = 0
            self.max_in_flight = self.in_flight
            self.recent.clear()

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters, e.g. for printing."""
        with self._lock:
            return {
                "total": self.total,
                "distinct": len(self.by_hash),
                "status_counts": dict(self.status_counts),
                "model_list_requests": self.model_list_requests,
                "max_in_flight": self.max_in_flight,
            }

    def _begin(self, request_hash: str) -> int:
        """Count one attempt of `request_hash`; returns its attempt number (1 = first)."""
        with self._lock:
            self.total += 1
            self.by_hash[request_hash] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.by_hash[request_hash]

    def _end(self, status: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.status_counts[status] += 1

    def _count_model_list(self) -> None:
        with self._lock:
            self.model_list_requests += 1


class _ClientError(Exception):
    """A request the server rejects with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.code = status, message, error_type, code


def _error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _decode_data_url(url: str) -> Image.Image:
    if not url.startswith("data:") or "," not in url:
        raise _ClientError(400, "only data: URLs are supported by the local judge", "invalid_request_error")
    header, payload = url.split(",", 1)
    if not header.endswith(";base64"):
        raise _ClientError(400, "image data URLs must be base64-encoded", "invalid_request_error")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (binascii.Error, OSError, ValueError) as err:
        raise _ClientError(400, f"cannot decode image: {err}", "invalid_request_error") from err
    return image


def _split_messages(messages: Any) -> tuple[str, list[str]]:
    """All text of all messages (joined) and the image URLs of all messages, in order (decoded by `_chat` only for
    a request it answers: a fault reply needs no pixels)."""
    if not isinstance(messages, list) or not messages:
        raise _ClientError(400, "'messages' must be a non-empty list", "invalid_request_error")
    texts: list[str] = []
    images: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            raise _ClientError(400, "message content must be a string or a list of parts", "invalid_request_error")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                image_url = part.get("image_url")
                url = image_url.get("url") if isinstance(image_url, dict) else image_url
                images.append(str(url))
            else:
                raise _ClientError(400, f"unsupported content part type {kind!r}", "invalid_request_error")
    return "\n".join(texts), images


def _answer(response_format: Any, text: str, images: list[Image.Image]) -> str:
    """The reply content: a checklist for a `KEYS:` prompt, structured output for a JSON schema, else a score."""
    if KEYS_RE.search(text):
        return answer_keys(images, text)
    structured = answer_schema(response_format, images, text)
    if structured is not None:
        return structured
    score, reason = score_images(images, text)
    return json.dumps({"score": score, "reason": reason})


class _JudgeHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer plus the judge's options, counters and the open connections (to drop them on close)."""

    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connects when a client opens 64 at once

    def __init__(self, address: tuple[str, int], model: str, options: dict[str, Any]) -> None:
        super().__init__(address, _JudgeHandler)
        self.model = model
        self.options = options
        self.stats = JudgeServerStats()
        self.closing = threading.Event()
        self.created = int(time.time())
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive and hanging connections so clients see the server go away at once."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _JudgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint; every reply carries Content-Length
    # The body is written after the headers: with Nagle's algorithm it would wait for the client's delayed ACK,
    # 40 ms per reply on Linux - more than the whole CPU cost of a request, and 2.6 s of a 64-request loop.
    disable_nagle_algorithm = True
    server: _JudgeHTTPServer
    timeout = 60  # idle keep-alive connections end after a minute

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Silent: request lines would flood test output and the benchmark."""

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout) and closed the connection
            self.close_connection = True

    def _send_error(self, error: _ClientError, headers: dict[str, str] | None = None) -> None:
        self._send_json(error.status, _error_body(error.message, error.error_type, error.code), headers)

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        expected = self.server.options["api_key"]
        if not token or (expected is not None and token != expected):
            raise _ClientError(401, "Incorrect or missing API key.", "invalid_request_error", "invalid_api_key")

    def _read_body(self) -> bytes:
        """Read the whole body first, whatever happens next: an unread body would corrupt the kept-alive stream."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _parse_json(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as err:
            raise _ClientError(400, f"request body is not valid JSON: {err.msg}", "invalid_request_error") from err
        if not isinstance(body, dict):
            raise _ClientError(400, "request body must be a JSON object", "invalid_request_error")
        return body

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.server.closing.wait(seconds)  # returns early when the server closes

    def _retry_headers(self) -> dict[str, str]:
        retry_after = self.server.options["retry_after_s"]
        return {} if retry_after is None else {"retry-after-ms": str(int(retry_after * 1000))}

    # -- endpoints --------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - name required by BaseHTTPRequestHandler
        try:
            self._authorize()
            model_entry = {
                "id": self.server.model,
                "object": "model",
                "created": self.server.created,
                "owned_by": "local",
            }
            if self.path.rstrip("/") == "/v1/models":
                self.server.stats._count_model_list()
                self._send_json(200, {"object": "list", "data": [model_entry]})
            elif self.path.startswith("/v1/models/"):
                name = self.path[len("/v1/models/") :]
                if name != self.server.model:
                    raise _ClientError(
                        404, f"The model `{name}` does not exist.", "invalid_request_error", "model_not_found"
                    )
                self._send_json(200, model_entry)
            else:
                raise _ClientError(404, f"no route GET {self.path}", "invalid_request_error")
        except _ClientError as error:
            self._send_error(error)

    def do_POST(self) -> None:  # noqa: N802 - name required by BaseHTTPRequestHandler
        raw = self._read_body()
        try:
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise _ClientError(404, f"no route POST {self.path}", "invalid_request_error")
            self._authorize()
            body = self._parse_json(raw)
        except _ClientError as error:
            self._send_error(error)
            return
        request_hash = hashlib.sha256(raw).hexdigest()  # the body as sent: a retry sends the same bytes
        attempt = self.server.stats._begin(request_hash)
        self.server.stats.recent.append(body)
        status = 500
        try:
            status = self._chat(body, request_hash, attempt)
        except _ClientError as error:
            status = error.status
            self._send_error(error)
        except Exception as err:  # a bug here must still answer, or the client would hang until its timeout
            self._send_json(500, _error_body(f"local judge failed: {err!r}", "server_error"))
        finally:
            self.server.stats._end(status)

    def _chat(self, body: dict[str, Any], request_hash: str, attempt: int) -> int:
        """Answer one chat-completion request; returns the HTTP status sent."""
        options = self.server.options
        model = body.get("model")
        if model != self.server.model:
            raise _ClientError(404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found")
        for name in options["unsupported_params"]:
            if name in body:
                message = f"Unsupported parameter: '{name}' is not supported with this model."
                raise _ClientError(400, message, "invalid_request_error", "unsupported_parameter")
        text, image_urls = _split_messages(body.get("messages"))
        bare = _MARKER_RE.sub("", text)  # a condition is looked up in the request's own text, not in other markers
        markers = [(kind, slow) for kind, slow, condition in _MARKER_RE.findall(text) if condition in bare]
        self._sleep(options["latency_s"] + sum(float(slow) for _, slow in markers if slow))
        kinds = {kind for kind, slow in markers if not slow}

        if attempt <= options["fail_first_attempts"] or "429" in kinds:
            rate_limited = _ClientError(429, "Rate limit reached (injected).", "requests", "rate_limit_exceeded")
            self._send_error(rate_limited, self._retry_headers())
            return 429
        in_error_rate = int(request_hash[:8], 16) / 2**32 < options["error_rate"]
        if in_error_rate or "500" in kinds:
            self._send_error(
                _ClientError(500, "Internal server error (injected).", "server_error"), self._retry_headers()
            )
            return 500
        if "timeout" in kinds:
            self._sleep(options["timeout_sleep_s"])

        if "garbage" in kinds:
            content = _GARBAGE_REPLY
        else:
            content = _answer(body.get("response_format"), text, [_decode_data_url(url) for url in image_urls])
        finish_reason = "stop"
        if "truncated" in kinds:
            content, finish_reason = content[: len(content) // 2], "length"
        prompt_tokens = len(text) // 4 + 85 * len(image_urls)
        completion_tokens = max(1, len(content) // 4)
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.server.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )
        return 200


class JudgeServerHandle:
    """A running local judge: `.url` (base URL for an OpenAI client), `.stats`, `.close()`; a context manager."""

    def __init__(self, server: _JudgeHTTPServer) -> None:
        self._server = server
        self.host, self.port = server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/v1"
        self.model = server.model
        # A short poll interval: close() (shutdown) waits up to one interval, and tests close many servers.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="judge-server", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def stats(self) -> JudgeServerStats:
        """Live counters of the server."""
        return self._server.stats

    def close(self) -> None:
        """Stop serving, drop open connections (so clients fail fast) and free the port; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.closing.set()
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JudgeServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_judge_server(
    model: str = "local-judge",
    latency_s: float = 0.0,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    fail_first_attempts: int = 0,
    error_rate: float = 0.0,
    timeout_sleep_s: float = 10.0,
    retry_after_s: float | None = 0.05,
    api_key: str | None = None,
    unsupported_params: tuple[str, ...] = (),
) -> JudgeServerHandle:
    """Start the judge in a background thread on `host:port` (port 0: a free one) and return its handle.

    The options are the server-wide faults described in the package docstring; per-sample faults are text markers.
    """
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be within [0, 1], got {error_rate}")
    options = {
        "latency_s": float(latency_s),
        "fail_first_attempts": int(fail_first_attempts),
        "error_rate": float(error_rate),
        "timeout_sleep_s": float(timeout_sleep_s),
        "retry_after_s": retry_after_s,
        "api_key": api_key,
        "unsupported_params": tuple(unsupported_params),
    }
    return JudgeServerHandle(_JudgeHTTPServer((host, port), model, options))


LOCAL_JUDGE = "local"  # `judge_base_url: local` in a config: start this server in-process
LOCAL_JUDGE_MODEL = "local-judge"


def start_local_judge_if_asked(args: Any, finished_run: bool = False) -> JudgeServerHandle | None:
    """For configs that name the project's local judge: start it and point `args.judge_base_url` at it.

    `args` holds JudgeArguments fields: a recipe's parsed arguments (`judge_base_url: local`), or, with
    `finished_run`, the judge section of a run's resolved config, where the loopback URL recorded for a local judge
    is gone with that run and a fresh server takes its place.
    """
    url = getattr(args, "judge_base_url", "")
    recorded = finished_run and url.startswith("http://127.0.0.1") and args.judge_model == LOCAL_JUDGE_MODEL
    if url != LOCAL_JUDGE and not recorded:
        return None
    handle = start_judge_server(model=args.judge_model)
    args.judge_base_url = handle.url
    return handle
