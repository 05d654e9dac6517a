"""``lethe estate up``: serve a built sample estate again."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from lethe.cli._common import console, handled
from lethe.estate.build import load_settings_file, serve

app = typer.Typer(help="The sample estate's emulators.", no_args_is_help=True)


@app.command()
@handled
def up(
    workdir: Annotated[Path, typer.Option(help="The folder `lethe demo` built.")],
) -> None:
    """Serve the estate's emulators on their recorded ports until interrupted."""
    settings = load_settings_file(workdir)
    servers = serve(workdir.absolute(), settings, fixed_ports=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(
        f"serving salesforce {servers.salesforce.base_url}, analytics "
        f"{servers.analytics.base_url}, erp {servers.erp.base_url}; Ctrl-C stops"
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()
