"""Lineage: where each person's data went, and where it is now.

Copies (subject-level) and flow edges (dataset-level) live in the ledger;
``where`` answers "where is this person's data?" over a networkx graph.
OpenLineage events come in through ``import_events`` (and
``lineage.openlineage_api`` over HTTP).
"""

from lineage.bulk import record_manifest_bulk
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
from lineage.openlineage import (
    ImportReport,
    Intake,
    aliases_of,
    current_intake,
    import_events,
    list_defects,
    parse_events,
    read_events,
    validate_event,
)
from lineage.suppression import (
    Resurrection,
    find_resurrections,
    record_alert,
    suppress,
)

__all__ = [
    "record_manifest_bulk",
    "Resurrection",
    "find_resurrections",
    "record_alert",
    "suppress",
    "CaptureSummary",
    "Holding",
    "ImportReport",
    "Intake",
    "SourceRecord",
    "aliases_of",
    "build_graph",
    "current_intake",
    "import_events",
    "key_digest",
    "list_defects",
    "load_flow_edges",
    "mark_erased",
    "parse_events",
    "read_events",
    "record_discovered",
    "record_found_again",
    "record_manifest",
    "record_source_snapshot",
    "subject_digest",
    "subjects_for",
    "validate_event",
    "where",
]
