"""One vendor emulator served for a whole test module, made fresh for each test.

Starting a server costs more than a test, so each module serves its emulator
once, from a module-scoped ``served`` fixture::

    @pytest.fixture(scope="module")
    def served() -> Iterator[Served[SapStore]]:
        store = SapStore()
        yield from serve(store, create_app(store, ...))

The ``store`` and ``server`` fixtures below (made visible by the conftests of
``tests/connectors`` and ``tests/emulators``) then give each test the store
emptied and no faults armed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import pytest
from fastapi import FastAPI

from lethe.emulators import EmulatorServer


class _Store(Protocol):
    def reset(self) -> None: ...


StoreT = TypeVar("StoreT", bound=_Store)


def _nothing() -> None:
    return None


@dataclass
class Served(Generic[StoreT]):
    """A store, the server in front of it, and what else a fresh start resets."""

    store: StoreT
    server: EmulatorServer
    on_fresh: Callable[[], None] = _nothing

    def fresh(self) -> StoreT:
        """Empty the store, clear planned faults, then run ``on_fresh``."""
        self.store.reset()
        self.server.faults.clear()
        self.on_fresh()
        return self.store


def serve(
    store: StoreT, app: FastAPI, *, on_fresh: Callable[[], None] = _nothing
) -> Iterator[Served[StoreT]]:
    """Serve ``app`` (built on ``store``) until the generator is closed."""
    with EmulatorServer(app) as server:
        yield Served(store, server, on_fresh)


@pytest.fixture
def store(served: Served[Any]) -> Any:
    """The module's emulator store, emptied, with no faults armed."""
    return served.fresh()


@pytest.fixture
def server(served: Served[Any], store: Any) -> EmulatorServer:
    """The module's emulator server (asking for it makes ``store`` fresh too)."""
    return served.server
