"""Logging that cannot leak identities, as a backstop to writing it right.

lethe's own code logs request ids and counts only. This module additionally
keeps httpx, httpcore and SQLAlchemy quiet (httpx logs full URLs, query strings
included, at INFO) and installs a filter that masks anything shaped like an
e-mail address or a phone number in every record, on lethe's, Prefect's and the
root logger's handlers.
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"[^\s@'\"<>(),;:%]+(?:@|%40)[^\s@'\"<>(),;:]+\.[A-Za-z]{2,}")
_PHONE = re.compile(
    r"\+\d[\d ().-]{7,}\d|\(\d{3}\)\s?\d{3}[ .-]\d{4}|\b\d{3}[.-]\d{3}[.-]\d{4}\b"
)
_QUIET = ("httpx", "httpcore", "sqlalchemy.engine", "uvicorn.access", "faker")
_PROTECTED = ("", "lethe", "prefect", "prefect.flow_runs", "prefect.task_runs")


def redact(text: str) -> str:
    return _PHONE.sub("<redacted-phone>", _EMAIL.sub("<redacted-email>", text))


class RedactIdentities(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            # A traceback may quote values; keep only the exception's type.
            exc_type = record.exc_info[0]
            record.msg = f"{record.msg} ({exc_type.__name__ if exc_type else 'error'})"
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = RedactIdentities()


def install() -> None:
    """Quiet chatty libraries and put the redaction filter everywhere it counts."""
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _PROTECTED:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
