"""The emulator fixtures the vendor test modules share (see ``tests/_servers.py``),
and ``sap``: a connector on the module's served SAP emulator (``tests/_sap.py``)."""

from tests._sap import sap
from tests._servers import server, store

__all__ = ["sap", "server", "store"]
