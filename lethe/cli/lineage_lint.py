"""``lethe lineage lint``: governance findings over the estate's flow edges."""

from __future__ import annotations

from typing import Any

import typer
import yaml
from sqlmodel import select

from lethe import ledger
from lethe.cli._common import console, handled, needs_ledger
from lethe.errors import ConfigError


@handled
@needs_ledger
def lint_command() -> None:
    """Shared fields, foreign writes, cycles, unlinked personal data; exit 1 if any."""
    from flows.estate import current_estate
    from lineage.lint import lint, ownership_of, personal_data_of
    from lineage.models import FlowEdge

    estate = current_estate()
    raw = _raw(estate.path)
    # the policy file's domains say who owns what; the estate file's older
    # ``ownership:`` map, when given, is read as before
    ownership = ownership_of(raw) if raw.get("ownership") else estate.policy.owners()
    datasets, systems = personal_data_of(raw)
    with ledger.session() as db:
        stored = select(FlowEdge.id).where(FlowEdge.estate == estate.name)
        if db.exec(stored).first() is None:
            raise ConfigError(
                f"the ledger holds no flow edges for estate {estate.name!r}; "
                "run `lethe lineage capture` first"
            )
        findings = lint(
            db,
            estate.name,
            ownership,
            source=estate.source,
            personal_datasets=datasets,
            personal_systems=systems,
        )
    for finding in findings:
        console.print(finding.describe(), markup=False, soft_wrap=True)
    noun = "finding" if len(findings) == 1 else "findings"
    console.print(f"{len(findings)} {noun}", markup=False)
    if findings:
        raise typer.Exit(1)


def _raw(path: Any) -> dict[str, Any]:
    """The estate file as written (load_estate has already checked it)."""
    if path is None:
        return {}
    return dict(yaml.safe_load(path.read_text()) or {})
