"""One error root for everything lethe raises on purpose.

    LetheError
    ├── InputError          bad user input: nothing was stored or changed
    │   └── NotFoundError   an id that names nothing in the ledger
    ├── ConfigError         a setting, key or estate file is wrong or missing
    ├── ConnectorError      a system answered badly or not at all
    │   └── TransientConnectorError   worth retrying (429, 5xx, timeout)
    ├── VerificationError   a re-read did not show what the action promised
    └── KeyDestroyedError   the data key of a purged request is gone

Messages say what was wrong and what to do about it. They never carry personal
data: name requests by id and subjects by keyed digest, never by e-mail.
"""

from __future__ import annotations


class LetheError(Exception):
    """Root of every error lethe raises on purpose."""


class InputError(LetheError):
    """The caller gave input lethe cannot accept; nothing was changed."""


class NotFoundError(InputError):
    """An identifier that names nothing lethe knows."""


class ConfigError(LetheError):
    """A setting, key file or estate file is wrong or missing."""


class ConnectorError(LetheError):
    """A system answered in a way that does not let the step succeed.

    ``status`` is the HTTP status (or None); the message is already scrubbed.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientConnectorError(ConnectorError):
    """A failure worth retrying: rate limit, server error or timeout."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class VerificationError(LetheError):
    """A re-read did not show the subject absent, anonymised or retained."""


class KeyDestroyedError(LetheError):
    """The data key was destroyed (crypto-shredded); the plaintext is gone."""
