"""Log lines of the worker and the CLI: Faust's text lines, or one JSON object per line.

`CARDSTREAM_LOG_FORMAT=json` makes every line (cardstream's, Faust's, aiokafka's)
a JSON object with `ts`, `level`, `logger`, `message`, the fields a call passed in
`extra=` (`topic`, `partition`, `offset`, `event_id`, ...) and `exception` when a
traceback is attached. The worker hands `logging_config(...)` to Faust's worker,
which installs it in place of its own colour handler; the CLI calls
`configure_cli_logging`.

What goes into a log line is the caller's responsibility: cardstream logs name a
record by topic, partition and offset, an event id, a link *name* or a customer
id, never a link value, a personal attribute or the record's bytes (the
dead-letter topic keeps the full reason).
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

#: Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime"}

#: `CARDSTREAM_LOG_LEVEL` names (Faust's) -> logging levels.
LEVELS = {
    "crit": logging.CRITICAL,
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def level_of(name: str) -> int:
    """The logging level of a `log_level` setting; raises ValueError for an unknown name."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {name!r}: use one of {', '.join(sorted(LEVELS))}"
        ) from None


def log_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON object of one log record (see the module docstring for its fields)."""
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    for name, value in vars(record).items():
        if name not in _RECORD_ATTRIBUTES and not name.startswith("_") and name not in fields:
            fields[name] = value
    if record.exc_info and record.exc_info[0] is not None:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        fields["exception"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (`log_fields`); values JSON lacks become strings."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(log_fields(record), default=str).decode()


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """A `logging.config.dictConfig` for Faust's worker; None keeps Faust's own text lines."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level_of(level), "handlers": ["default"]},
    }


def configure_cli_logging(log_format: str, level: str) -> None:
    """Send the CLI's log lines (its libraries' warnings) to stderr in `log_format`."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # the CLI talks to its user through stdout/stderr; logs only say what went wrong
    root.setLevel(max(level_of(level), logging.WARNING))
