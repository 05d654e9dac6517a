"""Where is this person's data? A networkx graph over flow edges and copies.

Direct holdings come from copies (a manifest or a source snapshot said so).
Inferred holdings follow flow edges that pass the key through unchanged
(raw → mart): the downstream dataset holds the same keys. Traversal keeps a
visited set, so cycles (a two-way sync) end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import networkx as nx
from sqlmodel import Session, col, select

from lethe.vault import Vault
from lineage._ol_aliases import canonical_namer
from lineage.models import Copy, FlowEdge, IdentityLink


@dataclass
class Holding:
    """One dataset that holds the subject's data, with how lethe learned it."""

    system: str
    dataset: str
    key_digests: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    last_copied_at: datetime | None = None
    learned_from: set[str] = field(default_factory=set)

    @property
    def key_count(self) -> int:
        return len(self.key_digests)

    @property
    def local_name(self) -> str:
        """The dataset name inside its system (``raw.sf_contact``)."""
        return self.dataset.split(":", 1)[1]


def _how(copy: Copy) -> str:
    """How lethe learned of a copy, in words for `lineage where`."""
    if copy.learned_from == "manifest":
        return f"manifest of {copy.job}"
    if copy.learned_from == "source":
        return "source snapshot"
    if copy.learned_from == "discovery":
        return copy.job  # "identity search" or "discovery scan"
    if copy.learned_from == "apievent":
        return f"ApiEvent read by {copy.job}"
    return "re-check" if copy.learned_from == "re-check" else copy.job


def system_of(dataset: str) -> str:
    return dataset.split(":", 1)[0]


def build_graph(db: Session, estate: str) -> nx.DiGraph:
    """Flow edges between canonical dataset names (aliases merged)."""
    canonical = canonical_namer(db, estate)
    graph = nx.DiGraph()
    for edge in db.exec(select(FlowEdge).where(FlowEdge.estate == estate)):
        source, target = canonical(edge.source), canonical(edge.target)
        if source == target:
            continue
        known = graph.get_edge_data(source, target, default={})
        if known.get("passthrough") and not edge.key_passthrough:
            continue  # two jobs on one pair: keep the one that passes keys on
        graph.add_edge(source, target, job=edge.job, passthrough=edge.key_passthrough)
    return graph


def subjects_for(db: Session, estate: str, identity_digests: Iterable[str]) -> set[str]:
    """Salesforce record digests that these identity digests name."""
    digests = list(identity_digests)
    if not digests:
        return set()
    rows = db.exec(
        select(IdentityLink.subject_digest).where(
            IdentityLink.estate == estate,
            col(IdentityLink.identity_digest).in_(digests),
        )
    )
    return set(rows)


def where(
    db: Session,
    estate: str,
    subject_digests: Iterable[str],
    *,
    vault: Vault | None = None,
) -> list[Holding]:
    """Every dataset holding data of these subjects, direct and inferred.

    With a vault the raw keys are opened too (for erasure); without one only
    digests and counts are returned (for display).
    """
    subjects = list(subject_digests)
    holdings: dict[str, Holding] = {}
    if not subjects:
        return []
    copies = db.exec(
        select(Copy).where(
            Copy.estate == estate,
            col(Copy.subject_digest).in_(subjects),
            col(Copy.erased_at).is_(None),
        )
    )
    canonical = canonical_namer(db, estate)
    for copy in copies:
        dataset = canonical(copy.dataset)
        holding = holdings.setdefault(
            dataset, Holding(system=system_of(dataset), dataset=dataset)
        )
        holding.key_digests.add(copy.key_digest)
        if vault is not None and copy.key_sealed is not None:
            holding.keys.add(vault.open(db, "lineage", copy.key_sealed))
        holding.learned_from.add(_how(copy))
        if holding.last_copied_at is None or copy.copied_at > holding.last_copied_at:
            holding.last_copied_at = copy.copied_at
    _infer_downstream(build_graph(db, estate), holdings)
    return sorted(holdings.values(), key=lambda h: h.dataset)


def _infer_downstream(graph: nx.DiGraph, holdings: dict[str, Holding]) -> None:
    frontier = [name for name in holdings if name in graph]
    visited = set(frontier)
    while frontier:
        source = frontier.pop()
        for target in graph.successors(source):
            edge = graph.edges[source, target]
            if not edge["passthrough"] or target in visited:
                continue
            visited.add(target)
            upstream = holdings[source]
            holding = holdings.setdefault(
                target, Holding(system=system_of(target), dataset=target)
            )
            holding.learned_from.add(f"flow edge {edge['job']} from {source}")
            holding.keys |= upstream.keys
            holding.key_digests |= upstream.key_digests
            if upstream.last_copied_at and (
                holding.last_copied_at is None
                or upstream.last_copied_at > holding.last_copied_at
            ):
                holding.last_copied_at = upstream.last_copied_at
            frontier.append(target)
