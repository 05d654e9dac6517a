"""What every command shares: logging set-up, one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy.exc import OperationalError

from lethe import logsafe
from lethe.config import load_settings
from lethe.errors import InputError, LetheError

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def setup_logging() -> None:
    """Warnings to stderr, the request lifecycle to LETHE_HOME/logs/lethe.log."""
    root = logging.getLogger()
    if getattr(root, "_lethe_configured", False):
        return
    root.setLevel(logging.INFO)
    console_handler = logging.StreamHandler(sys.stderr)
    console_handler.setLevel(logging.WARNING)
    console_handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(console_handler)
    settings = load_settings()
    if settings.home.is_dir():  # never create a home just to log into it
        _log_to_file(root, settings.logs_dir)
    logsafe.install()
    root._lethe_configured = True  # type: ignore[attr-defined]


def _log_to_file(root: logging.Logger, logs: Path) -> None:
    try:
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = logs / "lethe.log"
        path.touch(mode=0o600, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(file_handler)
    except OSError:
        log.warning("cannot write the log file in %s; logging to stderr only", logs)


def fail(message: str, code: int = 1) -> None:
    # Plain stderr, never wrapped: the line may be copied into a shell.
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def handled(command: F) -> F:
    """Turn lethe's own errors into one line on stderr and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            setup_logging()
            return command(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), code=2)
        except LetheError as exc:
            fail(str(exc), code=1)
        except OperationalError:
            fail(
                "cannot reach the ledger database: check LETHE_DATABASE_URL and "
                "that its server is running"
            )
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            fail(
                f"cannot use{where}: {exc.strerror or type(exc).__name__}; "
                "check LETHE_HOME and the paths given"
            )

    return wrapper  # type: ignore[return-value]


def needs_ledger(command: F) -> F:
    """For commands that read requests: refuse a home with no ledger in it."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lethe import ledger

        ledger.require()
        return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
