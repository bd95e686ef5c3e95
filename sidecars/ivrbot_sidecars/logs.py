"""structlog set-up for the speech servers.

A sidecar image carries no bot code, so it has its own few lines here instead of importing the
bot's `ivrbot.logs`; both read the same IVRBOT_LOG_LEVEL / IVRBOT_LOG_JSON and print the same shape.
Unlike the bot, a sidecar has no Pipecat (loguru) to quiet.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


def configure_logging() -> None:
    """Configure structlog from IVRBOT_LOG_LEVEL (default INFO) and IVRBOT_LOG_JSON (1: JSON lines)."""
    lvl = logging.getLevelNamesMapping().get(os.environ.get("IVRBOT_LOG_LEVEL", "INFO").upper(), logging.INFO)
    json_lines = os.environ.get("IVRBOT_LOG_JSON", "") == "1"
    renderer: Any = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
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
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger carrying the component name."""
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]
