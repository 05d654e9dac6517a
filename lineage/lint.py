"""Governance lint over the estate's flow edges and who owns which data.

The estate file may declare which system owns which data, and which data is
personal::

    ownership:                 # system -> the fields or datasets it masters
      salesforce: [Email, Phone]
      erp: [Customer, AccountNumber, "erp:A_BusinessPartner"]
    personal_data:
      systems: [analytics]     # every dataset of these systems
      datasets: ["warehouse:mart.customer_summary"]

An owned name with a ``:`` is a dataset (``system:dataset``); any other name is
a field, matched without regard to case against the field names of flow edges'
field maps. A name has at most one owner.

Four kinds of finding, each a ``Finding(kind, subject, detail)``, sorted by
kind (in the order below), then subject, then detail:

- ``multiple-writers``: one target field is written, through flow edges'
  field maps, from datasets of more than one system. Subject
  ``<dataset>.<field>``.
- ``foreign-write``: a flow from one system into another writes into a
  domain owned by a system other than the writer: a dataset that system owns,
  a field it owns in one of its own datasets, or a field its flows fill with
  data it owns (``Customer`` copied into ``salesforce:Contact.AccountNumber``
  makes that field the ERP's there). This is the write-back of a two-way sync
  into the other side's data. An owned field name elsewhere (an ``email``
  column the ERP loads into the warehouse) is not the owner's domain, and
  flows inside one system reshape its own copies and never count. Subject
  ``<job>``.
- ``cycle``: a cycle in the dataset graph, such as a two-way sync; erasing one
  side can be undone by the next run of the other. Subject: the datasets
  around it, starting from the smallest name.
- ``unlinked-personal-data``: a dataset declared personal (listed, or of a
  personal system) that no lineage path reaches from the source system, so
  no erasure traversal from the source would find it; or a personal system
  no flow edge names at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import networkx as nx
from sqlmodel import Session, select

from lethe.errors import ConfigError, InputError
from lineage.graph import system_of
from lineage.models import FlowEdge

KINDS = ("multiple-writers", "foreign-write", "cycle", "unlinked-personal-data")
MAX_CYCLES = 100


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str

    def describe(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


def ownership_of(estate: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The ``ownership:`` map of an estate file's raw contents, checked."""
    declared = estate.get("ownership") or {}
    systems = estate.get("systems") or {}
    if not isinstance(declared, Mapping):
        raise ConfigError(
            "the estate's ownership must map each system to the fields it owns"
        )
    ownership: dict[str, tuple[str, ...]] = {}
    for system, names in declared.items():
        if system not in systems:
            raise ConfigError(
                f"ownership names system {system!r}, which is not in 'systems'"
            )
        if not isinstance(names, Sequence) or isinstance(names, str):
            raise ConfigError(
                f"ownership of {system!r} must be a list of field or dataset names"
            )
        ownership[str(system)] = tuple(str(name) for name in names)
    try:
        _owners(ownership)
    except InputError as exc:
        raise ConfigError(f"the estate's ownership: {exc}") from None
    return ownership


def personal_data_of(estate: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The ``personal_data:`` section: (datasets, systems) declared personal."""
    declared = estate.get("personal_data") or {}
    systems = estate.get("systems") or {}
    if not isinstance(declared, Mapping):
        raise ConfigError("the estate's personal_data needs 'datasets' or 'systems'")
    datasets = [str(name) for name in declared.get("datasets") or ()]
    personal = [str(name) for name in declared.get("systems") or ()]
    for system in personal:
        if system not in systems:
            raise ConfigError(
                f"personal_data names system {system!r}, which is not in 'systems'"
            )
    return datasets, personal


def lint(
    db: Session,
    estate_name: str,
    ownership: Mapping[str, Sequence[str]],
    *,
    source: str = "salesforce",
    personal_datasets: Iterable[str] = (),
    personal_systems: Iterable[str] = (),
) -> list[Finding]:
    """Every governance finding for the estate's stored flow edges."""
    edges = list(
        db.exec(
            select(FlowEdge)
            .where(FlowEdge.estate == estate_name)
            .order_by(FlowEdge.source, FlowEdge.target, FlowEdge.job)
        )
    )
    graph = nx.DiGraph()
    for edge in edges:
        graph.add_edge(edge.source, edge.target)
    findings = [
        *_multiple_writers(edges),
        *_foreign_writes(edges, _owners(ownership)),
        *_cycles(graph, edges),
        *_unlinked(graph, source, set(personal_datasets), set(personal_systems)),
    ]
    return sorted(findings, key=lambda f: (KINDS.index(f.kind), f.subject, f.detail))


def _owners(ownership: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Owned name (lower case) -> its owner; refuses a name with two owners."""
    owners: dict[str, str] = {}
    for system, names in ownership.items():
        for name in names:
            key = name.lower()
            if owners.setdefault(key, system) != system:
                raise InputError(
                    f"{name!r} is owned by both {owners[key]} and {system}; "
                    "give each field or dataset one owner"
                )
    return owners


def _multiple_writers(edges: Sequence[FlowEdge]) -> list[Finding]:
    writers: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for edge in edges:
        for target_field in (edge.field_map or {}).values():
            writers.setdefault((edge.target, target_field), set()).add(
                (edge.source, edge.job)
            )
    findings = []
    for (target, target_field), sources in writers.items():
        if len({system_of(source) for source, _ in sources}) < 2:
            continue
        by = ", ".join(f"{source} (job {job})" for source, job in sorted(sources))
        findings.append(
            Finding(
                "multiple-writers", f"{target}.{target_field}", f"written from {by}"
            )
        )
    return findings


def _foreign_writes(
    edges: Sequence[FlowEdge], owners: Mapping[str, str]
) -> list[Finding]:
    held = _held(edges, owners)
    findings = []
    for edge in edges:
        writer, into = system_of(edge.source), system_of(edge.target)
        if writer == into:
            continue
        owner = owners.get(edge.target.lower())
        claims = [(edge.target, {owner} if owner else set())]
        for name in sorted((edge.field_map or {}).values()):
            holders = set(held.get((edge.target, name.lower()), ()))
            if owners.get(name.lower()) == into:
                holders.add(into)
            claims.append((f"{edge.target}.{name}", holders))
        findings += [
            Finding(
                "foreign-write", edge.job, f"{writer} writes {name}, which {owner} owns"
            )
            for name, holders in claims
            for owner in sorted(holders - {writer})
        ]
    return findings


def _held(
    edges: Sequence[FlowEdge], owners: Mapping[str, str]
) -> dict[tuple[str, str], set[str]]:
    """(dataset, field) -> the systems whose owned field a flow copied there."""
    held: dict[tuple[str, str], set[str]] = {}
    for edge in edges:
        writer = system_of(edge.source)
        for source_name, target_name in (edge.field_map or {}).items():
            if writer in {
                owners.get(source_name.lower()),
                owners.get(target_name.lower()),
            }:
                held.setdefault((edge.target, target_name.lower()), set()).add(writer)
    return held


def _cycles(graph: nx.DiGraph, edges: Sequence[FlowEdge]) -> list[Finding]:
    jobs: dict[tuple[str, str], list[str]] = {}
    for edge in edges:
        jobs.setdefault((edge.source, edge.target), []).append(edge.job)
    cycles = list(islice(nx.simple_cycles(graph), MAX_CYCLES + 1))
    findings = []
    for cycle in cycles[:MAX_CYCLES]:
        start = cycle.index(min(cycle))
        path = [*cycle[start:], *cycle[:start], min(cycle)]
        through = [", ".join(jobs[hop]) for hop in zip(path, path[1:], strict=False)]
        findings.append(
            Finding(
                "cycle",
                " → ".join(path),
                f"through jobs {'; '.join(through)}: an erasure on one side can "
                "be written back by the next run; pause the sync or re-verify "
                "after it",
            )
        )
    if len(cycles) > MAX_CYCLES:
        findings.append(
            Finding(
                "cycle",
                "…",
                f"more than {MAX_CYCLES} cycles; only the first {MAX_CYCLES} listed",
            )
        )
    return findings


def _unlinked(
    graph: nx.DiGraph,
    source: str,
    personal_datasets: set[str],
    personal_systems: set[str],
) -> list[Finding]:
    origins = [node for node in graph if system_of(node) == source]
    reached = set(origins).union(*(nx.descendants(graph, node) for node in origins))
    personal = personal_datasets | {
        node for node in graph if system_of(node) in personal_systems
    }
    findings = [
        Finding(
            "unlinked-personal-data",
            system,
            "declared personal, but no flow edge names any of its datasets",
        )
        for system in personal_systems - {system_of(node) for node in graph}
    ]
    for dataset in personal - reached:
        if system_of(dataset) == source:
            continue
        why = "no lineage path" if dataset in graph else "no flow edge at all"
        findings.append(
            Finding(
                "unlinked-personal-data",
                dataset,
                f"declared personal, but {why} from {source} reaches it; "
                "an erasure would not find its copies",
            )
        )
    return findings
