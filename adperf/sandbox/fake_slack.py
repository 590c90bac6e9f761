"""A local fake of Slack's Web API for the demo and tests: messages, history and file uploads.

Methods: chat.postMessage (with `metadata`), chat.update, conversations.history,
conversations.list, and the external upload flow that slack-sdk's
files_upload_v2 drives (files.getUploadURLExternal, a POST of the bytes to the returned URL,
files.completeUploadExternal; https://api.slack.com/messaging/files#uploading_files).
Follows https://api.slack.com/web: errors are HTTP 200 with `{"ok": false, "error": ...}`, rate
limits are HTTP 429 with Retry-After, the token comes as `Authorization: Bearer` (or a `token`
form field), the body is form-encoded or JSON (or the query string of a GET). A token's scopes
are checked when the fake is given them: `missing_scope` with `needed` and `provided`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from adperf.sandbox import loopback

log = logging.getLogger(__name__)

# Block Kit limits the real API enforces with `invalid_blocks`; the fake enforces them too.
_MAX_BLOCKS = 50
_MAX_SECTION_TEXT = 3000
_MAX_FIELDS = 10
_MAX_FIELD_TEXT = 2000
_MAX_HEADER_TEXT = 150
_MAX_CONTEXT_ELEMENTS = 10

_METHODS = frozenset(
    f"/api/{m}"
    for m in (
        "chat.postMessage",
        "chat.update",
        "conversations.history",
        "conversations.list",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    )
)


class FakeSlack(loopback.LoopbackFake):
    """`chat.postMessage` on 127.0.0.1; base URL ends with '/api/' like slack-sdk expects."""

    def __init__(
        self,
        token: str,
        channels: set[str] | None = None,
        *,
        scopes: set[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token
        # None: the token has every scope. Otherwise Slack's scope names ('chat:write', ...).
        self._scopes = scopes
        # Message ts are the server's clock in seconds, microseconds after the dot, unique.
        self._clock = clock
        self._last_ts = 0.0
        # None: every channel exists. Otherwise names ('#general' or 'general') or ids.
        self._channels = None if channels is None else {c.lstrip("#") for c in channels}
        self._errors: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._posted = 0
        self._base = ""
        # The messages as they are now (chat.update edits them in place), in posting order.
        self.messages: list[dict[str, Any]] = []
        # Every chat.update as {"channel", "ts", "text", "blocks"}.
        self.updates: list[dict[str, Any]] = []
        # Files shared by files.completeUploadExternal: {"id", "filename", "title", "content",
        # "channel", "thread_ts", "initial_comment"}.
        self.files: list[dict[str, Any]] = []
        self._pending: dict[str, dict[str, Any]] = {}
        # Every request as {"path", "authorized", "status", "error"}; never the token.
        self.requests_seen: list[dict[str, Any]] = []

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; return the API base URL."""
        self._base = self._serve(_Handler, "fake-slack")
        return f"{self._base}/api/"

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Queue answers for the next requests, one each: {"status": 429, "retry_after": 1},
        {"error": "invalid_auth"} (HTTP 200, ok false), {"status": 500}, {"drop": True}
        (the connection is closed before the request is processed, no answer), or
        {"accept_then_drop": True} (the request is carried out, e.g. the message posted, then
        the connection is closed before the answer: the client cannot tell it happened).

        {"method": "chat.update", ...} applies only to the next request for that method."""
        with self._lock:
            self._errors.extend(errors)

    def _next_error(self, method: str) -> dict[str, Any] | None:
        with self._lock:
            for i, error in enumerate(self._errors):
                if error.get("method", method) == method:
                    return self._errors.pop(i)
            return None

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests_seen.append(entry)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Store a valid message and answer like Slack does."""
        channel = str(payload["channel"])
        with self._lock:
            self._posted += 1
            # Slack's ts: seconds.microseconds of the server clock, unique in the channel.
            self._last_ts = max(round(self._clock(), 6), round(self._last_ts + 1e-6, 6))
            ts = f"{self._last_ts:.6f}"
            message = {"type": "message", "user": "U0ADPERF", "ts": ts, "bot_id": "B0ADPERF"}
            message.update({k: payload[k] for k in ("text", "blocks") if k in payload})
            # `metadata` is kept with the message; conversations.history returns it when asked.
            self.messages.append({**payload, "ts": ts})
        return {"ok": True, "channel": _channel_id(channel), "ts": ts, "message": message}

    def _update(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Edit a posted message in place; Slack keeps its ts."""
        channel, ts = _channel_id(str(payload.get("channel", ""))), str(payload.get("ts", ""))
        with self._lock:
            for message in self.messages:
                if _channel_id(str(message["channel"])) == channel and message["ts"] == ts:
                    message.update({k: payload[k] for k in ("text", "blocks") if k in payload})
                    self.updates.append({"channel": channel, "ts": ts, **message})
                    return {"ok": True, "channel": channel, "ts": ts, "text": message.get("text")}
        return {"ok": False, "error": "message_not_found"}

    def _history(self, payload: dict[str, Any]) -> dict[str, Any]:
        """conversations.history: a channel's messages newest first, paged by cursor.

        https://api.slack.com/methods/conversations.history: `channel` must be an id; `oldest`
        / `latest` bound the ts (exclusive unless `inclusive`); `limit` defaults to 100
        (at most 999); `metadata` only with `include_all_metadata`; `has_more` and
        `response_metadata.next_cursor` lead to the next (older) page.
        """
        channel = str(payload.get("channel") or "")
        if not _is_channel_id(channel) or not self._channel_known(channel):
            return {"ok": False, "error": "channel_not_found"}
        try:
            limit = int(payload.get("limit") or 100)
            oldest = float(payload.get("oldest") or 0)
            latest = float(payload.get("latest") or "inf")
            before = float(_decode_cursor(payload["cursor"])) if payload.get("cursor") else None
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        if limit < 1:
            return {"ok": False, "error": "invalid_limit"}
        limit = min(limit, 999)
        inclusive = _flag(payload.get("inclusive"))
        with_metadata = _flag(payload.get("include_all_metadata"))
        with self._lock:
            found = [
                m
                for m in self.messages
                if _channel_id(str(m["channel"])) == channel
                and (oldest <= float(m["ts"]) if inclusive else oldest < float(m["ts"]))
                and (float(m["ts"]) <= latest if inclusive else float(m["ts"]) < latest)
                and (before is None or float(m["ts"]) < before)
            ]
        found.sort(key=lambda m: float(m["ts"]), reverse=True)
        page, more = found[:limit], len(found) > limit
        messages = []
        for m in page:
            item = {"type": "message", "user": "U0ADPERF", "bot_id": "B0ADPERF", "ts": m["ts"]}
            item.update({k: m[k] for k in ("text", "blocks") if k in m})
            if with_metadata and isinstance(m.get("metadata"), dict):
                item["metadata"] = m["metadata"]
            messages.append(item)
        answer: dict[str, Any] = {"ok": True, "messages": messages, "has_more": more}
        answer["pin_count"] = 0
        if more:
            answer["response_metadata"] = {"next_cursor": _encode_cursor(page[-1]["ts"])}
        return answer

    def _list(self, payload: dict[str, Any]) -> dict[str, Any]:
        """conversations.list: the channels (id and name), paged by cursor.

        The channels given to the fake by name, else every channel named in a post so far.
        """
        try:
            limit = min(max(int(payload.get("limit") or 100), 1), 1000)
            start = int(_decode_cursor(payload["cursor"])) if payload.get("cursor") else 0
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        with self._lock:
            named = (
                set(self._channels)
                if self._channels is not None
                else {str(m["channel"]).lstrip("#") for m in self.messages}
            )
        names = sorted(n for n in named if not _is_channel_id(n))
        page = names[start : start + limit]
        channels = [
            {"id": _channel_id(n), "name": n, "is_channel": True, "is_archived": False}
            for n in page
        ]
        more = start + limit < len(names)
        cursor = _encode_cursor(str(start + limit)) if more else ""
        return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": cursor}}

    def _missing_scope(self, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Slack's `missing_scope` answer when the token lacks the method's scope, or None."""
        if self._scopes is None:
            return None
        method = path.rsplit("/", 1)[-1]
        if method == "conversations.history":
            kind = str(payload.get("channel") or "C")[:1]
            needed = {"G": "groups:history", "D": "im:history"}.get(kind, "channels:history")
        elif method == "conversations.list":
            needed = "channels:read"
        elif method.startswith("files."):
            needed = "files:write"
        else:
            needed = "chat:write"
        if needed in self._scopes:
            return None
        provided = ",".join(sorted(self._scopes))
        return {"ok": False, "error": "missing_scope", "needed": needed, "provided": provided}

    def _upload_url(self, payload: dict[str, Any]) -> dict[str, Any]:
        """files.getUploadURLExternal: reserve a file id and a one-time upload URL."""
        if not payload.get("filename") or not str(payload.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            file_id = f"F{len(self._pending) + len(self.files) + 1:09d}"
            self._pending[file_id] = {
                "id": file_id,
                "filename": str(payload["filename"]),
                "length": int(payload["length"]),
                "content": None,
            }
        return {"ok": True, "file_id": file_id, "upload_url": f"{self._base}/upload/v1/{file_id}"}

    def _receive(self, file_id: str, content: bytes) -> int:
        """The POST of a file's bytes to its upload URL; 200, or 404 for an unknown id."""
        with self._lock:
            pending = self._pending.get(file_id)
            if pending is None:
                return 404
            pending["content"] = content
        return 200

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """files.completeUploadExternal: share uploaded files in a channel (or a thread)."""
        try:
            wanted = json.loads(str(payload.get("files", "[]")))
        except json.JSONDecodeError:
            return {"ok": False, "error": "invalid_arguments"}
        channel = payload.get("channel_id") or payload.get("channels")
        if channel and not self._channel_known(str(channel)):
            return {"ok": False, "error": "channel_not_found"}
        shared = []
        with self._lock:
            for item in wanted:
                pending = self._pending.get(str(item.get("id")))
                # Slack refuses to complete a file whose bytes never arrived.
                if pending is None or pending["content"] is None:
                    return {"ok": False, "error": "file_not_found"}
                if len(pending["content"]) != pending["length"]:
                    return {"ok": False, "error": "file_upload_size_mismatch"}
            for item in wanted:
                pending = self._pending.pop(str(item["id"]))
                record = {
                    **pending,
                    "title": item.get("title") or pending["filename"],
                    "channel": _channel_id(str(channel)) if channel else None,
                    "thread_ts": payload.get("thread_ts"),
                    "initial_comment": payload.get("initial_comment"),
                }
                self.files.append(record)
                shared.append(
                    {"id": record["id"], "title": record["title"], "name": record["filename"]}
                )
        return {"ok": True, "files": shared}

    def _channel_known(self, channel: str) -> bool:
        if self._channels is None:
            return True
        # A channel is known by its name or by the id Slack answered with.
        name = channel.lstrip("#")
        return name in self._channels or name in {_channel_id(c) for c in self._channels}


def _is_channel_id(channel: str) -> bool:
    return channel[:1] in ("C", "G", "D") and channel[1:].isalnum() and channel.upper() == channel


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it: true, 1 (slack-sdk sends '1')."""
    return str(value).lower() in ("1", "true")


def _encode_cursor(value: str) -> str:
    # Slack's cursors are opaque base64 strings ('dXNlcjpVMDYxTkZUVDI='); so are the fake's.
    return base64.b64encode(f"next_ts:{value}".encode()).decode()


def _decode_cursor(cursor: Any) -> str:
    try:
        text = base64.b64decode(str(cursor), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not text.startswith("next_ts:"):
        raise ValueError("invalid cursor")
    return text[len("next_ts:") :]


def _channel_id(channel: str) -> str:
    """Slack answers with the channel id even when the request named the channel."""
    name = channel.lstrip("#")
    if _is_channel_id(name):
        return name
    return "C" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:10].upper()


def _blocks_problem(blocks: Any) -> str | None:
    """Why Slack would answer `invalid_blocks`, or None."""
    if not isinstance(blocks, list):
        return "blocks must be an array"
    if len(blocks) > _MAX_BLOCKS:
        return f"more than {_MAX_BLOCKS} blocks"
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            if len(block["text"]["text"]) > _MAX_HEADER_TEXT:
                return f"header text too long [{i}]"
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                return f"section needs text or fields [{i}]"
            if "text" in block and len(block["text"]["text"]) > _MAX_SECTION_TEXT:
                return f"section text too long [{i}]"
            fields = block.get("fields", [])
            if len(fields) > _MAX_FIELDS or any(len(f["text"]) > _MAX_FIELD_TEXT for f in fields):
                return f"section fields too many or too long [{i}]"
        elif kind == "context":
            if not 0 < len(block["elements"]) <= _MAX_CONTEXT_ELEMENTS:
                return f"context needs 1 to {_MAX_CONTEXT_ELEMENTS} elements [{i}]"
        elif kind not in ("divider", "image", "actions", "rich_text"):
            return f"unknown block type {kind!r} [{i}]"
    return None


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeSlack
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; route it to logging instead.
        log.debug("fake-slack: " + format, *args)

    def do_GET(self) -> None:
        # slack-sdk sends conversations.history and conversations.list as GET with a query.
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        self._handle(dict(query), b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self._handle(self._payload(raw), raw)

    def _handle(self, payload: dict[str, Any], raw: bytes) -> None:
        fake = self.server_fake
        header = self.headers.get("Authorization") or ""
        token = (
            header[len("Bearer ") :] if header.startswith("Bearer ") else payload.pop("token", "")
        )
        path = urlsplit(self.path).path
        if path.startswith("/upload/v1/"):
            # The upload URL carries no token: Slack signs it (https://api.slack.com/methods/files.getUploadURLExternal).
            status = fake._receive(path.rsplit("/", 1)[-1], raw)
            fake._record({"path": path, "authorized": True, "status": status, "error": None})
            self._send(status, {"ok": status == 200}, {}, text=f"OK - {len(raw)}")
            return
        error = fake._next_error(path.rsplit("/", 1)[-1])
        if error is not None and error.get("drop"):
            fake._record({"path": path, "authorized": None, "status": None, "error": "dropped"})
            # No answer at all: the client sees the connection closed (RemoteDisconnected).
            self.close_connection = True
            return
        status, body, headers = self._answer(path, str(token or ""), payload, error)
        dropped = error is not None and error.get("accept_then_drop")
        fake._record(
            {
                "path": path,
                "authorized": token == fake._token,
                "status": status,
                "error": "accepted_then_dropped" if dropped else body.get("error"),
            }
        )
        if dropped:
            # Done (e.g. posted), but the answer never leaves: the client sees the connection
            # closed (RemoteDisconnected), exactly like a network cut after Slack acted.
            self.close_connection = True
            return
        self._send(status, body, headers)

    def _answer(
        self, path: str, token: str, payload: dict[str, Any], error: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        fake = self.server_fake
        if error is not None and not error.get("accept_then_drop"):
            status = int(error.get("status", 200))
            headers = {}
            if "retry_after" in error:
                headers["Retry-After"] = str(error["retry_after"])
            name = error.get("error") or ("ratelimited" if status == 429 else "fatal_error")
            return status, {"ok": False, "error": name}, headers
        if path not in _METHODS:
            return 404, {"ok": False, "error": "unknown_method"}, {}
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != fake._token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if "_invalid_json" in payload:
            return 200, {"ok": False, "error": "invalid_json"}, {}
        refused = fake._missing_scope(path, payload)
        if refused is not None:
            return 200, refused, {}
        if path == "/api/conversations.history":
            return 200, fake._history(payload), {}
        if path == "/api/conversations.list":
            return 200, fake._list(payload), {}
        if path == "/api/files.getUploadURLExternal":
            return 200, fake._upload_url(payload), {}
        if path == "/api/files.completeUploadExternal":
            return 200, fake._complete(payload), {}
        channel = payload.get("channel")
        if not channel:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if not fake._channel_known(str(channel)):
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if not payload.get("text") and not payload.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}, {}
        if "blocks" in payload:
            problem = _blocks_problem(payload["blocks"])
            if problem is not None:
                return 200, {"ok": False, "error": "invalid_blocks", "errors": [problem]}, {}
        if path == "/api/chat.update":
            return 200, fake._update(payload), {}
        return 200, fake._post(payload), {}

    def _payload(self, raw: bytes) -> dict[str, Any]:
        """The request arguments from a JSON or form body (form `blocks` is a JSON string)."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json":
                data = json.loads(raw.decode("utf-8") or "{}")
                return dict(data) if isinstance(data, dict) else {"_invalid_json": True}
            form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8")).items()}
            for key in ("blocks", "metadata"):
                if key in form:
                    form[key] = json.loads(form[key])
            return dict(form)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"_invalid_json": True}

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str], text: str | None = None
    ) -> None:
        data = (json.dumps(body, ensure_ascii=False) if text is None else text).encode("utf-8")
        self.send_response(status)
        kind = "application/json" if text is None else "text/plain"
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
