"""The control socket's protocol (sans-IO): one request line, one response line.

Rules:
- The client sends one JSON object on one line, at most REQUEST_MAX bytes with its
  newline: {"v": 1, "get": "status"}. Anything else (junk, no newline within the bound,
  another version or command) is answered with an error object and counted by reason.
- The server answers one JSON object on one line and closes: {"v": 1, "ok": true,
  "status": {...}} or {"v": 1, "ok": false, "error": "..."}.
- Values are plain JSON: the daemon's state as a snapshot (control/snapshot.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 1
REQUEST_MAX = 1024  # bytes, newline included: one short command
COMMANDS = ("status",)


class RequestError(ValueError):
    """A request the server cannot take; `reason` is the short name it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    command: str


def encode_request(command: str = "status") -> bytes:
    return json.dumps({"v": VERSION, "get": command}).encode() + b"\n"


class RequestReader:
    """Bytes from a client in, at most one Request out (feed() returns it once complete)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Request | None:
        """Request once its line is complete, None while more may come; RequestError
        when it is too long or not a request."""
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) >= REQUEST_MAX:
                raise RequestError("request_too_long", f"no request within {REQUEST_MAX} bytes")
            return None
        if end >= REQUEST_MAX:
            raise RequestError("request_too_long", f"no request within {REQUEST_MAX} bytes")
        return parse_request(bytes(self._buffer[:end]))


def parse_request(line: bytes) -> Request:
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: RecursionError
        raise RequestError("not_json", "the request is not one JSON object") from None
    if not isinstance(message, dict):
        raise RequestError("not_json", "the request is not one JSON object")
    if message.get("v") != VERSION:
        raise RequestError("bad_version", f"protocol version {VERSION} only")
    command = message.get("get")
    if command not in COMMANDS:
        raise RequestError("unknown_command", f"unknown command; use one of {list(COMMANDS)}")
    return Request(command)


def encode_status(status: dict[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, "ok": True, "status": status}).encode() + b"\n"


def encode_error(error: str) -> bytes:
    return json.dumps({"v": VERSION, "ok": False, "error": error}).encode() + b"\n"


def decode_response(data: bytes) -> dict[str, Any]:
    """The status a response carries; RequestError if it is an error or not a response."""
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("bad_response", "the daemon's answer is not JSON") from None
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise RequestError("bad_response", "the daemon speaks another control protocol")
    if not message.get("ok"):
        raise RequestError("refused", str(message.get("error", "refused")))
    status = message.get("status")
    if not isinstance(status, dict):
        raise RequestError("bad_response", "the daemon's answer has no status")
    return status
