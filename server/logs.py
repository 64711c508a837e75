"""Logging: text for people, JSON lines for log pipelines. Each line carries the session
id, frame index and request id of the work it is about; frame payloads are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

session_id: ContextVar[str | None] = ContextVar("session_id", default=None)
frame_index: ContextVar[int | None] = ContextVar("frame_index", default=None)
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class ContextFilter(logging.Filter):
    """Copies the context variables onto every record, for both formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = session_id.get()
        record.frame_index = frame_index.get()
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session_id", "frame_index", "request_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{k}={getattr(record, k)}"
            for k in ("request_id", "session_id", "frame_index")
            if getattr(record, k, None) is not None
        ]
        return f"{line} [{' '.join(context)}]" if context else line


def configure(level: str, fmt: str) -> None:
    """Root logging for the server and uvicorn (run uvicorn with ``log_config=None``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
