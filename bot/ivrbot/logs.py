"""structlog set-up shared by every component.

Call-scoped code binds the SIP Call-ID once (``log = get_logger(__name__).bind(call_id=...)``)
so every line of a call can be grepped by it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


def configure_logging(level: str | None = None, json_output: bool | None = None) -> None:
    """Configure structlog; level and format come from IVRBOT_LOG_LEVEL / IVRBOT_LOG_JSON."""
    lvl_name = (level or os.environ.get("IVRBOT_LOG_LEVEL", "INFO")).upper()
    lvl = logging.getLevelNamesMapping().get(lvl_name, logging.INFO)
    as_json = json_output if json_output is not None else os.environ.get("IVRBOT_LOG_JSON", "") == "1"
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Quiet the libraries that log per frame or per request (Pipecat logs through loguru).
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr)
    try:
        from loguru import logger as loguru_logger

        loguru_logger.remove()
        loguru_logger.add(sys.stderr, level="DEBUG" if lvl <= logging.DEBUG else "WARNING")
    except ImportError:  # pragma: no cover - loguru comes with pipecat
        pass


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger carrying the component name."""
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]
