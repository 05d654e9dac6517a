"""Lineage: where each person's data went, and where it is now.

Copies (subject-level) and flow edges (dataset-level) live in the ledger;
``where`` answers "where is this person's data?" over a networkx graph.
"""

from lineage.capture import (
    CaptureSummary,
    SourceRecord,
    key_digest,
    load_flow_edges,
    mark_erased,
    record_discovered,
    record_found_again,
    record_manifest,
    record_source_snapshot,
    subject_digest,
)
from lineage.graph import Holding, build_graph, subjects_for, where
from lineage.suppression import (
    Resurrection,
    find_resurrections,
    record_alert,
    suppress,
)

__all__ = [
    "Resurrection",
    "find_resurrections",
    "record_alert",
    "suppress",
    "CaptureSummary",
    "Holding",
    "SourceRecord",
    "build_graph",
    "key_digest",
    "load_flow_edges",
    "mark_erased",
    "record_discovered",
    "record_found_again",
    "record_manifest",
    "record_source_snapshot",
    "subject_digest",
    "subjects_for",
    "where",
]
