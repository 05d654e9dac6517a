"""Run an ASGI emulator on loopback in a background thread, with fault injection.

Kinds: ``429``/``5xx`` answer at once with that status (``retry_after`` sets
Retry-After); ``timeout`` waits ``delay`` and answers 504 without doing the
work; ``slow`` waits ``delay`` and then serves the request; ``lost_answer``
serves the request and then waits ``delay`` before answering, so the work is
done but a client with a shorter timeout never hears of it.

Faults are planned per path prefix and consumed in order, either from Python
(``server.faults.add(...)``) or over HTTP at ``POST /__emulator/faults`` with a
JSON body of the same fields, so a test or the demo in another process can plan
them too. ``DELETE /__emulator/faults`` clears them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

FaultKind = Literal["429", "500", "502", "503", "timeout", "slow", "lost_answer"]


@dataclass
class Fault:
    kind: FaultKind
    path_prefix: str = "/"
    method: str | None = None
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0


class Faults:
    """A thread-safe list of planned faults, consumed as requests match them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: list[Fault] = []
        self.injected: list[dict[str, object]] = []

    def add(self, kind: FaultKind, path_prefix: str = "/", **options: object) -> None:
        with self._lock:
            self._planned.append(Fault(kind=kind, path_prefix=path_prefix, **options))  # type: ignore[arg-type]

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._planned:
                if not path.startswith(fault.path_prefix):
                    continue
                if fault.method and fault.method.upper() != method.upper():
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._planned.remove(fault)
                self.injected.append({"method": method, "path": path, **asdict(fault)})
                return fault
        return None


def install_faults(app: FastAPI, faults: Faults) -> None:
    """Add the fault middleware and the control endpoints to an emulator app."""

    @app.post("/__emulator/faults", include_in_schema=False)
    async def plan_fault(request: Request) -> dict[str, str]:
        body = await request.json()
        faults.add(**body)
        return {"status": "planned"}

    @app.delete("/__emulator/faults", include_in_schema=False)
    async def clear_faults() -> dict[str, str]:
        faults.clear()
        return {"status": "cleared"}

    @app.middleware("http")
    async def inject(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith("/__emulator"):
            return await call_next(request)
        fault = faults.take(request.method, request.url.path)
        if fault is None:
            return await call_next(request)
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return await call_next(request)
        if fault.kind == "lost_answer":
            # The vendor does the work, then the answer never arrives in time.
            response = await call_next(request)
            await asyncio.sleep(fault.delay or 30.0)
            return response
        if fault.kind == "timeout":
            # Answer only after the client has given up; the work is not done.
            await asyncio.sleep(fault.delay or 30.0)
            return JSONResponse({"error": "timeout"}, status_code=504)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(int(fault.retry_after))
        status = int(fault.kind)
        return JSONResponse(
            {"error": "injected fault", "status": status},
            status_code=status,
            headers=headers,
        )


class EmulatorServer:
    """Serve an app on 127.0.0.1 (port 0 picks a free port) until stopped."""

    def __init__(self, app: FastAPI, *, port: int = 0, faults: Faults | None = None):
        self.app = app
        self.faults = faults or getattr(app.state, "faults", Faults())
        self._config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("emulator did not start on 127.0.0.1")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
