"""What every command shares: logging set-up, one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from lethe import logsafe
from lethe.config import load_settings
from lethe.errors import InputError, LetheError

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


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
    try:
        logs = load_settings().logs_dir
        logs.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(logs / "lethe.log", encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(file_handler)
    except OSError:
        pass
    logsafe.install()
    root._lethe_configured = True  # type: ignore[attr-defined]


def fail(message: str, code: int = 1) -> None:
    errors.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def handled(command: F) -> F:
    """Turn lethe's own errors into one line on stderr and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging()
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), code=2)
        except LetheError as exc:
            fail(str(exc), code=1)

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
