"""Flow edges from a dbt manifest, and what the manifest gets wrong.

``import_dbt_manifest`` reads a ``manifest.json`` (schema v7 to v12) and stores
one flow edge from each parent model, seed, snapshot or source to each model or
snapshot dbt builds from it. The job is ``dbt:<child unique_id>``; a dataset is
named ``<system>:<schema>.<relation>`` in lower case, where the relation is a
node's ``alias`` (else its ``name``) or a source's ``identifier`` (else its
``name``). The database is left out: the system stands for it. Ephemeral models
are never materialised, so their parents feed their children directly. Tests,
analyses and operations hold no data and make no edges. Stored edges are never
stored twice (the flow edge's unique constraint, checked before insert).

A child's parents are the union of three places, because real manifests do not
always agree: its ``depends_on.nodes``, its ``parent_map`` entry, and every
``child_map`` entry that names it.

Two kinds of finding are reported; neither stops the import.

*Broken link*: a reference to a node the manifest does not define, so the
edge cannot be named and is not stored. That is a model's or snapshot's
``depends_on.nodes`` or ``parent_map`` entry naming no node or source, or a
``child_map`` entry naming a missing model, seed, snapshot or source (missing
tests in the maps are ignored: tests hold no data).

*PII contradiction*: one column (or one node) declared both personal and not
personal. Evidence that a column **is** personal data:

- its description says ``PII``, ``personal data`` or ``personally
  identifiable`` (whole words, any case), other than in a negation;
- its ``meta`` sets one of ``pii``, ``contains_pii``, ``is_pii`` or
  ``personal_data`` to true (a boolean, or yes/true/1);
- its ``tags`` include ``pii``, ``personal`` or ``personal_data``;
- its name is a direct identifier (``email``, ``first_name``, ``last_name``,
  ``phone`` and the others in ``IDENTIFIER_COLUMNS``).

Evidence that it is **not**:

- its description says ``not PII``, ``no PII`` or ``non-PII`` (or the same of
  personal data);
- its ``meta`` sets one of those keys to false;
- its ``tags`` include ``no_pii``, ``non_pii`` or ``not_pii``;
- its node's ``meta`` or ``config.meta`` sets one of those keys to false, or
  its node's ``tags`` include one of those tags: the whole node is declared
  free of personal data, so every column inherits it.

A column with evidence both ways is a contradiction. A node whose own meta or
tags say both is one too. A node declared personal does not make each of its
columns personal, so it contradicts nothing at column level. The manifest's
descriptions are the ``schema.yml`` docs as dbt rendered them (doc blocks
included), so a schema.yml that says "PII." is read here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from lethe.errors import InputError
from lineage.capture import load_flow_edges

log = logging.getLogger(__name__)

SCHEMA_VERSIONS = range(7, 13)
DATA_KINDS = frozenset({"model", "seed", "snapshot", "source"})
BUILT_KINDS = frozenset({"model", "snapshot"})
PII_META_KEYS = ("pii", "contains_pii", "is_pii", "personal_data")
PII_TAGS = frozenset({"pii", "personal", "personal_data"})
NOT_PII_TAGS = frozenset({"no_pii", "non_pii", "not_pii"})
IDENTIFIER_COLUMNS = frozenset(
    {
        "email",
        "email_address",
        "first_name",
        "last_name",
        "full_name",
        "phone",
        "phone_number",
        "mobile",
        "mobile_phone",
        "date_of_birth",
        "birthdate",
        "ssn",
        "ip_address",
        "street",
        "street_address",
    }
)
_SUBJECT = r"(?:pii|personal\s+data|personally\s+identifiable)"
_NEGATED = re.compile(rf"\b(?:not|no|non)[\s-]+{_SUBJECT}\b", re.IGNORECASE)
_AFFIRMED = re.compile(rf"\b{_SUBJECT}\b", re.IGNORECASE)
_VERSION = re.compile(r"/manifest/v(\d+)\.json$")


@dataclass(frozen=True, order=True)
class BrokenLink:
    """``referrer`` names ``missing`` (in ``via``), which the manifest lacks."""

    referrer: str
    missing: str
    via: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"broken link: {self.referrer} names {self.missing} in "
            f"{' and '.join(self.via)}, which the manifest does not define; "
            "that flow edge is not stored"
        )


@dataclass(frozen=True)
class PiiContradiction:
    """A column (or, with no column, a node) declared personal and not."""

    node: str
    column: str | None
    says_pii: tuple[str, ...]
    says_not_pii: tuple[str, ...]

    def describe(self) -> str:
        subject = f"{self.node} column {self.column}" if self.column else self.node
        return (
            f"PII contradiction: {subject} is personal data per "
            f"{', '.join(self.says_pii)}, but not per {', '.join(self.says_not_pii)}"
        )


@dataclass(frozen=True)
class DbtImport:
    """What one manifest gave: its edges, and its findings in a stable order."""

    schema_version: int
    datasets: int
    edges: int
    added: int
    broken_links: tuple[BrokenLink, ...] = ()
    pii_contradictions: tuple[PiiContradiction, ...] = ()

    @property
    def findings(self) -> list[str]:
        return [link.describe() for link in self.broken_links] + [
            contradiction.describe() for contradiction in self.pii_contradictions
        ]

    @property
    def clean(self) -> bool:
        return not self.broken_links and not self.pii_contradictions


def import_dbt_manifest(
    db: Session,
    estate_name: str,
    manifest: Mapping[str, Any],
    *,
    system: str = "warehouse",
) -> DbtImport:
    """Store the manifest's flow edges in ``system``; report what is broken."""
    version = schema_version(manifest)
    known = _known_nodes(manifest)
    edges, broken = _edges(manifest, known, system)
    added = load_flow_edges(
        db,
        estate_name,
        [{"from": s, "to": t, "job": job} for s, t, job in sorted(edges)],
    )
    datasets = {name for s, t, _ in edges for name in (s, t)}
    result = DbtImport(
        schema_version=version,
        datasets=len(datasets),
        edges=len(edges),
        added=added,
        broken_links=tuple(sorted(broken)),
        pii_contradictions=tuple(
            sorted(_contradictions(known), key=lambda c: (c.node, c.column or ""))
        ),
    )
    log.info(
        "dbt manifest v%d: %d flow edges (%d new), %d broken links, "
        "%d PII contradictions",
        version,
        result.edges,
        added,
        len(result.broken_links),
        len(result.pii_contradictions),
    )
    return result


def schema_version(manifest: Mapping[str, Any]) -> int:
    """The manifest's schema version; refuses what is not a v7 to v12 manifest."""
    metadata = manifest.get("metadata") if isinstance(manifest, Mapping) else None
    url = metadata.get("dbt_schema_version") if isinstance(metadata, Mapping) else None
    match = _VERSION.search(str(url or ""))
    if match is None or not isinstance(manifest.get("nodes"), Mapping):
        raise InputError(
            "not a dbt manifest: expected metadata.dbt_schema_version and nodes "
            "(dbt writes target/manifest.json)"
        )
    version = int(match.group(1))
    if version not in SCHEMA_VERSIONS:
        raise InputError(
            f"dbt manifest schema v{version} is not supported; lethe reads "
            f"v{SCHEMA_VERSIONS[0]} to v{SCHEMA_VERSIONS[-1]}"
        )
    return version


def _known_nodes(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    nodes = dict(manifest["nodes"])
    sources = manifest.get("sources") or {}
    if not isinstance(sources, Mapping) or not all(
        isinstance(node, Mapping) for node in [*nodes.values(), *sources.values()]
    ):
        raise InputError("the dbt manifest's nodes and sources must be objects")
    return {**nodes, **sources}


def _kind(node: Mapping[str, Any]) -> str:
    return str(node.get("resource_type", ""))


def _is_ephemeral(node: Mapping[str, Any]) -> bool:
    config = node.get("config") or {}
    return _kind(node) == "model" and config.get("materialized") == "ephemeral"


def dataset_name(system: str, unique_id: str, node: Mapping[str, Any]) -> str:
    """``system:schema.relation`` in lower case."""
    if _kind(node) == "source":
        relation = node.get("identifier") or node.get("name")
    else:
        relation = node.get("alias") or node.get("name")
    schema = node.get("schema")
    if not schema or not relation:
        raise InputError(
            f"dbt node {unique_id} has no schema or name; the manifest is incomplete"
        )
    return f"{system}:{schema}.{relation}".lower()


def _references(manifest: Mapping[str, Any]) -> dict[str, dict[str, set[str]]]:
    """child unique_id -> parent unique_id -> where the manifest says so."""
    found: dict[str, dict[str, set[str]]] = {}

    def note(child: str, parent: str, via: str) -> None:
        found.setdefault(child, {}).setdefault(parent, set()).add(via)

    for child, node in manifest["nodes"].items():
        for parent in (node.get("depends_on") or {}).get("nodes") or ():
            note(child, parent, "depends_on.nodes")
    for child, parents in (manifest.get("parent_map") or {}).items():
        for parent in parents:
            note(child, parent, "parent_map")
    for parent, children in (manifest.get("child_map") or {}).items():
        for child in children:
            note(child, parent, "child_map")
    return found


def _edges(
    manifest: Mapping[str, Any], known: Mapping[str, Mapping[str, Any]], system: str
) -> tuple[set[tuple[str, str, str]], list[BrokenLink]]:
    references = _references(manifest)
    edges: set[tuple[str, str, str]] = set()
    broken: list[BrokenLink] = []
    for child, parents in references.items():
        node = known.get(child)
        if node is None:
            broken.extend(_missing_children(child, parents, known))
            continue
        if _kind(node) not in BUILT_KINDS:
            continue
        for parent, via in parents.items():
            if parent not in known and via - {"child_map"}:
                broken.append(BrokenLink(child, parent, tuple(sorted(via))))
        if _is_ephemeral(node):
            continue  # its parents feed its children directly
        target = dataset_name(system, child, node)
        for parent in parents:
            for origin in _materialised(parent, known, references):
                source = dataset_name(system, origin, known[origin])
                edges.add((source, target, f"dbt:{child}"))
    return edges, broken


def _missing_children(
    child: str,
    parents: Mapping[str, set[str]],
    known: Mapping[str, Mapping[str, Any]],
) -> Iterator[BrokenLink]:
    """A child_map naming a data node the manifest never defines."""
    if child.split(".", 1)[0] not in DATA_KINDS:
        return
    for parent, via in parents.items():
        if parent in known and "child_map" in via:
            yield BrokenLink(parent, child, ("child_map",))


def _materialised(
    unique_id: str,
    known: Mapping[str, Mapping[str, Any]],
    references: Mapping[str, Mapping[str, set[str]]],
) -> Iterable[str]:
    """The data nodes behind a parent, looking through ephemeral models."""
    found: set[str] = set()
    frontier, seen = [unique_id], {unique_id}
    while frontier:
        current = frontier.pop()
        node = known.get(current)
        if node is None or _kind(node) not in DATA_KINDS:
            continue
        if not _is_ephemeral(node):
            found.add(current)
            continue
        for parent in references.get(current, {}):
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return sorted(found)


def _contradictions(known: Mapping[str, Mapping[str, Any]]) -> list[PiiContradiction]:
    found = []
    for unique_id, node in sorted(known.items()):
        if _kind(node) not in DATA_KINDS:
            continue
        node_yes, node_no = _node_evidence(node)
        if node_yes and node_no:
            found.append(PiiContradiction(unique_id, None, node_yes, node_no))
        for key, column in (node.get("columns") or {}).items():
            name = str(column.get("name") or key)
            yes, no = _column_evidence(name, column)
            no = no + tuple(f"node {place}" for place in node_no)
            if yes and no:
                found.append(PiiContradiction(unique_id, name, yes, no))
    return found


def _node_evidence(node: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    config = node.get("config") or {}
    yes: list[str] = []
    no: list[str] = []
    metas = {
        "meta": node.get("meta"),
        "config.meta": config.get("meta"),
        "source_meta": node.get("source_meta"),
    }
    for where, meta in metas.items():
        _meta_evidence(where, meta, yes, no)
    tags = {*(node.get("tags") or ()), *(config.get("tags") or ())}
    _tag_evidence("tags", tags, yes, no)
    return _unique(yes), _unique(no)


def _column_evidence(
    name: str, column: Mapping[str, Any]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    yes: list[str] = []
    no: list[str] = []
    description = str(column.get("description") or "")
    if _NEGATED.search(description):
        no.append("description")
    if _AFFIRMED.search(_NEGATED.sub("", description)):
        yes.append("description")
    _meta_evidence("meta", column.get("meta"), yes, no)
    _tag_evidence("tags", set(column.get("tags") or ()), yes, no)
    if name.strip('"`').lower() in IDENTIFIER_COLUMNS:
        yes.append("column name")
    return tuple(yes), tuple(no)


def _meta_evidence(where: str, meta: Any, yes: list[str], no: list[str]) -> None:
    if not isinstance(meta, Mapping):
        return
    for key in PII_META_KEYS:
        flag = _flag(meta.get(key))
        if flag is not None:
            (yes if flag else no).append(f"{where} {key}={str(flag).lower()}")


def _tag_evidence(where: str, tags: set[Any], yes: list[str], no: list[str]) -> None:
    names = {str(tag).lower().replace("-", "_") for tag in tags}
    yes.extend(f"{where} {tag}" for tag in sorted(names & PII_TAGS))
    no.extend(f"{where} {tag}" for tag in sorted(names & NOT_PII_TAGS))


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in {"true", "yes", "1"}:
        return True
    if text in {"false", "no", "0"}:
        return False
    return None


def _unique(places: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(places))
