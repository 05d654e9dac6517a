"""Loopback emulators of the vendor APIs lethe's connectors speak.

Each follows its vendor's documented API (see docs/emulators.md): paths, bodies,
statuses, limits and faults, so the same connector works against the real
service. They keep their state in a SQLite file so an estate survives restarts.
"""

from lethe.emulators._server import EmulatorServer, Fault, Faults

__all__ = ["EmulatorServer", "Fault", "Faults"]
