"""How a step's plan actions run in one system, beyond a plain delete.

A step's datasets can carry different decisions of the policy (lethe/policy.py):
the flow runs one group per executed action — ``delete`` (and CCPA's
``aggregate``), ``anonymise`` (and ``deidentify``), ``retain`` — each as its own
attempt, so a re-run repeats none that finished.

Anonymising in place needs its own proof, since the rows stay: before the
first call, keyed digests of the fields' current values are sealed in the
request's vault; verification re-reads the fields and passes only when every
row is still there and no value matches a digest taken before. Retaining in
place is verified by the records still being there, untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlmodel import select

from connectors.base import Connector, Evidence, Outcome
from connectors.registry import plan_method
from erasure.models import DEFERRED, DONE, Request
from lethe import ledger
from lethe.policy import EXECUTED_AS, Retention
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow

PRE_IMAGE = "pre_image"
_EPOCH = date(2000, 1, 1)


def groups(
    parts: Mapping[str, Mapping[str, Any]],
    planned_action: str,
    keys: Mapping[str, list[str]],
) -> dict[str, dict[str, list[str]]]:
    """The step's keys by attempt action, dataset by dataset.

    Held and finished parts are left out. A part freed from a hold runs in a
    later round, under its own attempt (``delete.r1``), so the attempt that
    finished the rest of the step is not mistaken for it.
    """
    found: dict[str, dict[str, list[str]]] = {}
    for dataset, values in sorted(keys.items()):
        part = parts.get(dataset, {})
        if part.get("state") in (DEFERRED, DONE):
            continue
        action = EXECUTED_AS[str(part.get("action", planned_action))]
        if part.get("round"):
            action = f"{action}.r{part['round']}"
        found.setdefault(action, {})[dataset] = values
    return found


def base(action: str) -> str:
    """The executed action of an attempt action: ``delete.r1`` is a delete."""
    return action.split(".", 1)[0]


def fields_of(
    parts: Mapping[str, Mapping[str, Any]], datasets: Iterable[str]
) -> dict[str, list[str]]:
    """The columns the policy names for each dataset's anonymisation."""
    return {d: list(parts.get(d, {}).get("fields") or []) for d in datasets}


def check_fields(
    connector: Any,
    kind: str,
    parts: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, list[str]]],
) -> None:
    """Before any group runs: the columns an anonymisation names exist.

    ``read_fields`` raises ConfigError naming a missing column, so a policy
    that names the wrong one changes nothing anywhere in the step.
    """
    for action, dataset_keys in groups.items():
        if plan_method(kind, base(action)) != "anonymise":
            continue
        for dataset, values in fields_of(parts, dataset_keys).items():
            connector.read_fields(dataset, dataset_keys[dataset][:1], values)


def _digest(value: Any) -> str:
    return current().vault.digest("field", str(value))


def seal_pre_image(
    connector: Any,
    request_id: str,
    system: str,
    keys: Mapping[str, list[str]],
    fields: Mapping[str, list[str]],
) -> None:
    """Keyed digests of the values about to be overwritten (never the values)."""
    rows = []
    for dataset, values in keys.items():
        columns = fields.get(dataset) or []
        found = connector.read_fields(dataset, values, columns)
        for record in found.values():
            for value in record.values():
                if value is None or value == "":
                    continue
                rows.append(
                    SealedIdentity(
                        request_id=request_id,
                        role=PRE_IMAGE,
                        kind="field",
                        system=system,
                        dataset=dataset,
                        digest=_digest(value),
                    )
                )
    with ledger.session() as db:
        db.add_all(rows)


def verify_anonymised(
    connector: Any,
    request_id: str,
    system: str,
    keys: Mapping[str, list[str]],
    fields: Mapping[str, list[str]],
) -> Evidence:
    """Every row still there, and none of its fields holds a value it held before."""
    with ledger.session() as db:
        before = set(
            db.exec(
                select(SealedIdentity.digest).where(
                    SealedIdentity.request_id == request_id,
                    SealedIdentity.role == PRE_IMAGE,
                    SealedIdentity.system == system,
                )
            )
        )
    observed: dict[str, object] = {}
    ok = True
    for dataset, values in keys.items():
        found = connector.read_fields(dataset, values, fields.get(dataset) or [])
        unchanged = sum(
            1
            for record in found.values()
            for value in record.values()
            if value not in (None, "") and _digest(value) in before
        )
        observed[dataset] = {"rows": len(found), "fields_unchanged": unchanged}
        ok = ok and unchanged == 0 and len(found) == len(set(values))
    return Evidence(
        verified=ok,
        observed=observed,
        checked_at=datetime.now(UTC),
        detail="anonymised fields re-read: no value left from before"
        if ok
        else "a re-read found rows missing or fields still holding earlier values",
    )


def retain_in_place(keys: Mapping[str, list[str]]) -> Outcome:
    """Keep the records as they are: the policy retains them under a basis."""
    return Outcome(
        status="done",
        action="retained",
        records_affected=0,
        detail="kept as they are, under the policy's retention",
        finished_at=utcnow(),
    )


def verify_retained(connector: Connector, keys: Mapping[str, list[str]]) -> Evidence:
    located = connector.locate(keys)
    expected = sum(len(set(v)) for v in keys.values())
    return Evidence(
        verified=located.total == expected,
        observed=dict(located.counts),
        checked_at=datetime.now(UTC),
        detail="retained records re-read: all present"
        if located.total == expected
        else "retained records are missing",
    )


def retention(
    parts: Mapping[str, Mapping[str, Any]],
    datasets: Sequence[str],
    outcome: Outcome,
    request: Request,
) -> tuple[date, str, str] | None:
    """The until-date, basis and a note from the policy's retention rule.

    ``last_document`` counts from the latest document date the system reported
    (``dates["last_document"]``); when it reported none, from the erasure date,
    which no document of the subject can postdate, and the note says so.
    """
    chosen = [parts[d] for d in datasets if parts.get(d, {}).get("retention")]
    if not chosen:
        return None
    # several retention rules: the longest obligation wins
    rule = max(chosen, key=lambda p: Retention.from_json(p["retention"]).until(_EPOCH))
    spec = Retention.from_json(rule["retention"])
    erased = (outcome.finished_at or utcnow()).date()
    note = ""
    if spec.anchor == "last_document":
        reported = outcome.dates.get("last_document")
        if reported:
            anchor = date.fromisoformat(reported[:10])
        else:
            anchor = erased
            note = "no document date reported; counted from the erasure date"
    elif spec.anchor == "receipt":
        anchor = request.received_at.date()
    else:
        anchor = erased
    return spec.until(anchor), str(rule["basis"]), note
