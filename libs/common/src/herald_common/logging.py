"""structlog set-up: JSON lines (console when a terminal), with personal data and secrets masked.

Masking is a processor, so every log line passes through it whatever code emitted it: email
addresses keep their first character and domain, phone numbers their last two digits, and
credentials in URLs are removed.

Inside a trace every line carries ``trace_id`` (32 hex digits) and ``span_id``: those of the
current span, or, with no span current, the trace id of a ``traceparent`` bound to the context.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from . import tracing

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
_PHONE = re.compile(r"(?<![\w+.-])\+?\d(?:[\s.-]?\d){6,13}(\d{2})(?![\w-])")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def mask(text: str) -> str:
    """Mask email addresses, phone numbers and URL credentials in ``text``."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(r"***\1", text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def mask_personal_data(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key != "timestamp":
            event_dict[key] = _mask_value(value)
    return event_dict


def add_trace_ids(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the current span's ``trace_id`` and ``span_id``; with none, the trace id of the bound
    ``traceparent``, if any. An event that names its own ``trace_id`` keeps it."""
    if "trace_id" in event_dict:
        return event_dict
    ids = tracing.current_trace_ids()
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    elif (traceparent := event_dict.get("traceparent")) is not None:
        trace_id = tracing.trace_id_of(traceparent)
        if trace_id is not None:
            event_dict["trace_id"] = trace_id
    return event_dict


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog (and the stdlib loggers of libraries) for one service process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_personal_data,
        add_trace_ids,  # after masking: hex ids are not personal data
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.EventRenamer("message")
            if not use_console
            else structlog.processors.add_log_level,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared[1:],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
