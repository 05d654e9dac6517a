"""Divergence reconciliation: do downstream copies still say what the source
of truth says?

For each rule of the estate file's ``divergence:`` list, a sample of the
subjects lineage places in the target dataset is read in both systems, the
field values are compared under lethe's text normalisation (trimmed,
case-folded), and an alert is raised when the share that differs passes the
rule's threshold (for example more than 5 % of contacts with a different
country). Values are compared in memory only; results carry counts.

    divergence:
      - name: contact_country
        source: salesforce:Contact
        source_field: MailingCountry
        target: warehouse:raw.sf_contact
        target_field: country
        sample: 200        # default 100
        threshold: 0.05    # default 0.05

The target must be keyed by the source record's id (as raw copies are).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlmodel import col, select

from flows.estate import connector_for, current_estate
from lethe import ledger
from lethe.errors import ConfigError
from lethe.runtime import current
from lineage.models import Alert, Copy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    source_field: str
    target: str
    target_field: str
    sample: int = 100
    threshold: float = 0.05


def rules_of(raw: Mapping[str, Any]) -> list[Rule]:
    rules = []
    for number, item in enumerate(raw.get("divergence") or [], start=1):
        try:
            rule = Rule(**item)
        except TypeError:
            raise ConfigError(
                f"divergence rule {number} needs name, source, source_field, target "
                "and target_field (sample and threshold are optional)"
            ) from None
        if ":" not in rule.source or ":" not in rule.target:
            raise ConfigError(f"divergence rule {rule.name}: name datasets system:name")
        if not 0 <= rule.threshold <= 1 or rule.sample < 1:
            raise ConfigError(
                f"divergence rule {rule.name}: threshold is a share (0-1), sample >= 1"
            )
        rules.append(rule)
    return rules


def _normal(value: Any) -> str | None:
    return None if value is None else str(value).strip().casefold()


def _sample(estate: str, dataset: str, size: int) -> list[str]:
    """The first ``size`` live keys lineage holds for the dataset (stable order)."""
    vault = current().vault
    with ledger.session() as db:
        rows = db.exec(
            select(Copy)
            .where(
                Copy.estate == estate,
                Copy.dataset == dataset,
                col(Copy.erased_at).is_(None),
                col(Copy.key_sealed).is_not(None),
            )
            .order_by(col(Copy.key_digest))
        )
        keys: list[str] = []
        for copy in rows:
            key = vault.open(db, "lineage", copy.key_sealed)  # type: ignore[arg-type]
            if key not in keys:
                keys.append(key)
            if len(keys) == size:
                break
    return keys


@task(name="compare-copies", persist_result=False, cache_policy=NO_CACHE)
def compare(rule: Rule) -> dict[str, Any]:
    estate = current_estate()
    keys = _sample(estate.name, rule.target, rule.sample)
    source_system, source_object = rule.source.split(":", 1)
    target_system, target_dataset = rule.target.split(":", 1)
    with connector_for(estate, source_system) as source:
        read: Any = getattr(source, "read_fields")  # noqa: B009 - not in the protocol
        truth = read(source_object, keys, [rule.source_field])
    with connector_for(estate, target_system) as target:
        read = getattr(target, "read_fields")  # noqa: B009
        copies = read(target_dataset, keys, [rule.target_field])
    compared = [k for k in keys if k in truth and k in copies]
    differ = sum(
        _normal(truth[k][rule.source_field]) != _normal(copies[k][rule.target_field])
        for k in compared
    )
    ratio = differ / len(compared) if compared else 0.0
    alert = ratio > rule.threshold
    if alert:
        detail = (
            f"{differ} of {len(compared)} sampled copies in {rule.target} differ from "
            f"{rule.source} on {rule.source_field} ({ratio:.1%} > {rule.threshold:.1%})"
        )
        with ledger.session() as db:
            db.add(
                Alert(
                    estate=estate.name,
                    kind="divergence",
                    dataset=rule.target,
                    request_id="",
                    detail=detail,
                )
            )
        log.warning("divergence %s: %s", rule.name, detail)
    return {
        "sampled": len(keys),
        "compared": len(compared),
        "divergent": differ,
        "ratio": round(ratio, 4),
        "threshold": rule.threshold,
        "alert": alert,
    }


@flow(name="check-divergence", log_prints=False, persist_result=False)
def check_divergence() -> dict[str, dict[str, Any]]:
    """Compare every divergence rule's sample; returns counts per rule."""
    estate = current_estate()
    return {rule.name: compare(rule) for rule in rules_of(estate.raw)}
