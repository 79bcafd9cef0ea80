"""Logging of every entry point: plain text as it always was, or JSON lines (``TENANTCTL_LOG_FORMAT=json``).

One handler on the root logger, on stderr (stdout is the CLI's ``--json`` report), so every library's
records (Alembic's, uvicorn's, Celery's) come out the same way. JSON: one object per line with ``time``,
``level``, ``logger``, ``message``, whatever ``extra=`` added, and the fields :func:`bind` holds for the
current context: ``lifecycle.carry`` binds ``rollout_id``, ``run_id``, ``attempt`` and ``tenant`` for a
run's whole life. Every record's message (and a JSON line's every value) is scrubbed of passwords by
:func:`secrets.mask_text`, a net under the rule that nothing logs a URL with its password.

Celery workers and beat leave their logging to Celery's own setup, hooked in ``workers/app.py``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from .secrets import mask_text
from .settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
"""The services' text lines (``serve``); the CLI's keep Python's default, the bare message."""

_NOTHING: Mapping[str, object] = MappingProxyType({})
_bound: ContextVar[Mapping[str, object]] = ContextVar("tenantctl_log_fields")
_handler: logging.Handler | None = None
_cli: bool | None = None


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged in this context (this thread or task, and the tasks it
    starts), until the block ends. Nested binds add to the outer ones."""
    token = _bound.set({**_bound.get(_NOTHING), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


class ContextFilter(logging.Filter):
    """Puts the bound fields on each record; a field the call passed itself (``extra=``) wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get(_NOTHING).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class ScrubFilter(logging.Filter):
    """Masks passwords in the message, whichever formatter writes it (ours, Celery's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _Text(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return mask_text(super().formatException(ei))


class JsonLines(JsonFormatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, then the extra fields."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's message again, in ANSI colours
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Tracebacks and extra fields are scrubbed too."""
        return {k: mask_text(v) if isinstance(v, str) else v for k, v in log_data.items()}


def configure(settings: Settings, *, cli: bool = False) -> None:
    """Set up the root logger for this process: one handler of ours on stderr, replacing the one an earlier
    call installed (the CLI configures when it reads the settings; ``serve`` configures again).

    ``cli``: in text mode keep what the CLI always printed, the bare message of warnings and errors (its
    report is its output), unless ``TENANTCTL_LOG_LEVEL`` is set. JSON is the same everywhere."""
    global _handler, _cli
    root = logging.getLogger()
    level: str = settings.log_level
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonLines())
        logging.captureWarnings(True)  # a library's warning is a JSON line too, not raw text
    elif cli:
        handler.setFormatter(_Text("%(message)s"))
        level = level if "log_level" in settings.model_fields_set else "WARNING"
    else:
        handler.setFormatter(_Text(TEXT_FORMAT))
    add_filters(handler)
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _handler, _cli = handler, cli


def add_filters(handler: logging.Handler) -> None:
    """Our filters on a handler someone else made (Celery's, in text mode)."""
    if not any(isinstance(f, ScrubFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
        handler.addFilter(ScrubFilter())


def configured() -> bool | None:
    """How this process was configured: None (never), else the ``cli`` flag; a pool child started by
    this process configures itself the same way."""
    return _cli
