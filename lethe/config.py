"""Where lethe keeps its state, read from the environment.

``LETHE_HOME`` (default ``./.lethe``) holds the ledger, keys and configuration.
``LETHE_DATABASE_URL`` overrides the ledger (default: ``ledger.db`` in the home).
``LETHE_PHONE_REGION`` is the default region for phone numbers without a country
code (default ``US``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    phone_region: str = "US"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def certificates_dir(self) -> Path:
        return self.home / "certificates"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def estate_file(self) -> Path:
        """The estate lethe was last pointed at (written by ``lethe demo``)."""
        return self.home / "estate.yaml"


def load_settings() -> Settings:
    home = Path(os.environ.get("LETHE_HOME") or ".lethe").expanduser().absolute()
    url = os.environ.get("LETHE_DATABASE_URL") or f"sqlite:///{home / 'ledger.db'}"
    region = (os.environ.get("LETHE_PHONE_REGION") or "US").upper()
    return Settings(home=home, database_url=url, phone_region=region)
