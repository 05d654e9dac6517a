"""``lethe estate up``: serve a built sample estate again."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from lethe.cli._common import console, errors, handled
from lethe.config import load_settings
from lethe.errors import LetheError
from lethe.estate.build import load_settings_file, serve
from lethe.estate.config import load_estate

app = typer.Typer(help="The sample estate's emulators.", no_args_is_help=True)


def _warn_if_not_home_estate(name: str) -> None:
    home = load_settings().estate_file
    try:
        current = load_estate(home).name
    except LetheError:
        current = None
    if current != name:
        errors.print(
            f"warning: lethe's estate file ({home}) names {current or 'no estate'}, "
            f"not {name}; copy this folder's estate.yaml there (or set LETHE_ESTATE) "
            "for `lethe dsr run` to use it",
            markup=False,
        )


@app.command()
@handled
def up(
    workdir: Annotated[Path, typer.Option(help="The folder `lethe demo` built.")],
) -> None:
    """Serve the estate's emulators on their recorded ports until interrupted."""
    settings = load_settings_file(workdir)
    _warn_if_not_home_estate(settings["name"])
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
