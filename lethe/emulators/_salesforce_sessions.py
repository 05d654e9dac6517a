"""The emulated org's integration users, their sessions and the ApiEvent log.

Each connected app's client credentials (or JWT consumer key) run as one
integration user, as vendor-apis.md §1.4 advises (one per downstream), so an
ApiEvent row can name who read what by ``Username``/``UserId``. A session
remembers the connected app that issued it until its first API call: that call
is the one that authenticated, so only its ApiEvent carries the
``ConnectedAppId``; every later call holds an existing token and logs null, as
the real field does (vendor-apis.md §0).

A mixin of ``SalesforceStore``: it shares the store's SQLite connection, lock
and counters.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from lethe.emulators._salesforce_schema import make_id

DEFAULT_USERNAME = "integration@emulated-org.example"
SESSIONS_DDL = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY COLLATE NOCASE, id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    user_id TEXT NOT NULL,
    app_id TEXT,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_identifier TEXT NOT NULL UNIQUE,
    fields TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Caller:
    """The integration user behind one API call.

    ``connected_app_id`` is set only when this call is the token's first, the
    one that authenticated.
    """

    username: str
    user_id: str
    connected_app_id: str | None
    token: str = field(repr=False)


class Sessions:
    """Integration users, tokens with their sessions, and ApiEvent rows."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    org_id: str
    user_id: str

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # SalesforceStore provides it

    def _next(self, prefix: str) -> int:
        raise NotImplementedError  # SalesforceStore provides it

    def user(self, username: str) -> str:
        """The 005 id of an integration user, created on first mention."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM users WHERE username = ?", (username,)
            ).fetchone()
            if row is not None:
                return str(row[0])
            user_id = make_id("005", self._next("005") + 1)  # 1 is the default
            db.execute("INSERT INTO users VALUES (?, ?)", (username, user_id))
        return user_id

    def issue_token(
        self, *, username: str = DEFAULT_USERNAME, app_id: str | None = None
    ) -> str:
        """A session for ``username``; ``app_id`` is the connected app that
        authenticated it (None for a session made outside OAuth)."""
        user_id = self.user(username)
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        with self._transaction() as db:
            db.execute("INSERT INTO tokens VALUES (?, ?)", (token, time.time()))
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, 0)",
                (token, username, user_id, app_id),
            )
        return token

    def use_session(self, token: str) -> Caller | None:
        """Who a valid token speaks for, and whether this call authenticated.

        A token from before sessions were kept speaks for the default user.
        """
        with self._transaction() as db:
            if not db.execute(
                "SELECT 1 FROM tokens WHERE token = ?", (token,)
            ).fetchone():
                return None
            row = db.execute(
                "SELECT username, user_id, app_id, used FROM sessions WHERE token = ?",
                (token,),
            ).fetchone()
            db.execute("UPDATE sessions SET used = 1 WHERE token = ?", (token,))
        if row is None:
            return Caller(DEFAULT_USERNAME, self.user_id, None, token)
        app_id = None if row["used"] else row["app_id"]
        return Caller(row["username"], row["user_id"], app_id, token)

    def token_valid(self, token: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM tokens WHERE token = ?", (token,))
            return row.fetchone() is not None

    def revoke_tokens(self, token: str | None = None) -> None:
        """End one session, or all of them (the next call answers 401)."""
        with self._transaction() as db:
            if token is None:
                db.execute("DELETE FROM tokens")
                db.execute("DELETE FROM sessions")
            else:
                db.execute("DELETE FROM tokens WHERE token = ?", (token,))
                db.execute("DELETE FROM sessions WHERE token = ?", (token,))

    # -- ApiEvent ----------------------------------------------------------

    def log_api_event(self, event: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO api_events (event_identifier, fields) VALUES (?, ?)",
                (event["EventIdentifier"], json.dumps(event, sort_keys=True)),
            )

    def api_events(self) -> list[dict[str, Any]]:
        """Every ApiEvent row, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT fields FROM api_events ORDER BY seq"
            ).fetchall()
        return [json.loads(row[0]) for row in rows]
