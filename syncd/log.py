"""Logging: one line per event on stderr (journald), plain or JSON, secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from syncd.config.secrets import redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Last line of defence: no URI credentials leave through a log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_extras(record))
        if record.exc_info and record.exc_info[0] is not None:
            event["error"] = redact(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
            event["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(event, default=str, sort_keys=False)


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...` — no timestamp when journald adds its own."""

    def __init__(self, *, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_quote(v)}" for k, v in _extras(record).items())
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if fields:
            line += f" {fields}"
        if self.timestamps:
            stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            line = f"{stamp} {line}"
        if record.exc_info and record.exc_info[0] is not None:
            line += redact(f" error={record.exc_info[0].__name__}: {record.exc_info[1]}")
            # The event stays on its first line; the traceback follows, indented.
            trace = redact(self.formatException(record.exc_info)).splitlines()
            line += "".join(f"\n  {text}" for text in trace)
        if not self.timestamps:  # journald takes each line as an entry: each gets a priority
            prefix = f"<{_syslog_priority(record.levelno)}>"
            line = "\n".join(prefix + text for text in line.split("\n"))
        return line


def _syslog_priority(level: int) -> int:
    """journald reads a `<N>` prefix as the line's priority, so `journalctl -p err` works."""
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    if level >= logging.INFO:
        return 6
    return 7


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def setup_logging(*, fmt: str = "text", level: str = "INFO", journald: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(timestamps=not journald))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pymongo").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
