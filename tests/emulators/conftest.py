"""The emulator fixtures the vendor test modules share (see ``tests/_servers.py``)."""

from tests._servers import server, store

__all__ = ["server", "store"]
