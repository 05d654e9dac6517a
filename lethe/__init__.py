"""lethe: GDPR/CCPA erasure orchestrator with data lineage.

The application shell (configuration, ledger, vault, keys, CLI, sample estate and
vendor emulators) lives here; the domain lives in the top-level packages
``lineage``, ``erasure``, ``connectors`` and ``flows``.
"""

from lethe.errors import (
    ConfigError,
    ConnectorError,
    InputError,
    LetheError,
    NotFoundError,
    VerificationError,
)

__all__ = [
    "ConfigError",
    "ConnectorError",
    "InputError",
    "LetheError",
    "NotFoundError",
    "VerificationError",
]
__version__ = "0.1.0"
