"""The pieces every command needs, made once per process: settings, keys, vault."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from lethe.config import Settings, load_settings
from lethe.keys import KeyRing
from lethe.vault import Vault


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def keys(self) -> KeyRing:
        ring = KeyRing(self.settings)
        ring.ensure()
        return ring

    @cached_property
    def vault(self) -> Vault:
        return Vault(self.keys)


_current: dict[str, Runtime] = {}


def current() -> Runtime:
    """The runtime for the present environment (LETHE_HOME, LETHE_DATABASE_URL)."""
    settings = load_settings()
    key = f"{settings.home}|{settings.database_url}"
    if key not in _current:
        _current[key] = Runtime(settings)
    return _current[key]


def reset() -> None:
    _current.clear()
