"""Structured logs: every event is one line of ``key=value`` pairs (logfmt), or JSON whose
fields ``log_event`` kept on the log record (``LOG_FORMAT=json``); a line logged while a request
is served carries its ``request_id``, Django's own error lines included."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# Set by the request-id middleware for the request this thread serves; empty elsewhere.
current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")


def _logfmt_value(value: object) -> str:
    text = str(value)
    if not text or any(char in text for char in ' "=\n'):
        return json.dumps(text)
    return text


def logfmt(pairs: dict[str, Any]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs.items())


def log_event(log: Callable[..., None], event: str, /, *, exc_info: bool = False, **fields: Any) -> None:
    """Logs one line ``event=<event> key=value ...`` with ``log``, a logger's ``info``,
    ``warning`` or ``exception``: the one way every module logs an event."""
    pairs = {"event": event, **fields}
    # Passed only when asked: logger.exception adds the traceback itself, and False would drop it.
    log(logfmt(pairs), extra={"fields": pairs}, **({"exc_info": True} if exc_info else {}))


def _request_id(record: logging.LogRecord) -> str:
    # Django logs a 5xx once more after the middleware returned: that record carries the request.
    return current_request_id.get() or str(getattr(getattr(record, "request", None), "request_id", ""))


def _header(record: logging.LogRecord) -> dict[str, Any]:
    time = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
    header = {"time": time, "level": record.levelname, "logger": record.name}
    if request_id := _request_id(record):
        header["request_id"] = request_id
    return header


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{logfmt(_header(record))} {record.getMessage()}"
        if record.exc_info:
            line = f"{line} exc={_logfmt_value(self.formatException(record.exc_info))}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = _header(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        else:
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
