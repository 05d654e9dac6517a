"""Turn accepted OpenLineage events into lineage rows.

A run's inputs and outputs are gathered from all its events; once the run is
COMPLETE each input feeds each output as a flow edge named ``namespace.job``
(an input named only in an output's column lineage counts too), and the
output's ``columnLineage`` becomes the edge's ``field_map``: output field ->
the input field(s) of that edge's input dataset that carry its value (DIRECT
transformations, or none stated). Several input fields are joined with ",".
A JobEvent's inputs and outputs are the job's declared lineage and become
edges at once; so do ``lineage`` facets (LineageFacet 1-0-0) with dataset
targets and dataset sources. A run and its output are never one dataset: such
self-edges are skipped.

A COMPLETE run with no outputs is a defect when the job writes: its SQL facet
writes (INSERT, MERGE, CREATE TABLE ... AS, ...), its jobType is a dbt MODEL,
SNAPSHOT or SEED, or another run of the same job reported outputs. Outputs
that arrive later (events out of order) resolve the defect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from lethe.vault import utcnow
from lineage._ol_aliases import record_alias
from lineage._ol_names import DatasetName, Namer
from lineage._ol_schema import Checked
from lineage.models import FlowEdge
from lineage.openlineage_models import (
    LineageDefect,
    OpenLineageEvent,
    OpenLineageRun,
    OpenLineageRunDataset,
)

NO_OUTPUTS = "complete-without-outputs"
DECLARED_JOB = "declared lineage"
_OTHER_RUN_WROTE = "another run of this job reported outputs"
_WRITING_JOB_TYPES = {"MODEL", "SNAPSHOT", "SEED"}
_SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'", re.S)
_SQL_WRITES = re.compile(
    r"\b(INSERT\s+(?:INTO|OVERWRITE)|MERGE\s+INTO|DELETE\s+FROM|UPDATE\s+\S+\s+SET"
    r"|CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY|TRANSIENT|UNLOGGED|GLOBAL"
    r"|LOCAL|EXTERNAL|MATERIALIZED)\s+)*(?:TABLE|VIEW)|REPLACE\s+INTO|COPY\s+INTO"
    r"|TRUNCATE|UNLOAD)\b",
    re.I,
)

Row = list[str | None]  # [output field, input dataset, input field, DIRECT|INDIRECT]


@dataclass
class Outcome:
    """What storing one event added."""

    new: bool = False
    flow_edges: int = 0
    aliases: int = 0
    defects: list[LineageDefect] = field(default_factory=list)
    unmapped: set[str] = field(default_factory=set)


@dataclass
class _Context:
    db: Session
    estate: str
    namer: Namer
    origin: str
    outcome: Outcome

    def name(self, namespace: str, name: str) -> DatasetName:
        named = self.namer.dataset(namespace, name)
        if not named.mapped:
            self.outcome.unmapped.add(named.namespace)
        return named


def store(
    db: Session,
    estate: str,
    namer: Namer,
    checked: Checked,
    *,
    digest: str,
    origin: str,
    event_time: datetime,
) -> Outcome:
    """Store one validated event; an event seen before (same digest) adds nothing."""
    seen = db.exec(
        select(OpenLineageEvent.id).where(
            OpenLineageEvent.estate == estate, OpenLineageEvent.digest == digest
        )
    ).first()
    if seen is not None:
        return Outcome()
    event = checked.event
    ctx = _Context(db, estate, namer, origin, Outcome(new=True))
    job = _job_name(event.get("job"))
    run_id = event["run"]["runId"] if checked.kind == "RunEvent" else None
    db.add(
        OpenLineageEvent(
            estate=estate,
            digest=digest,
            kind=checked.kind,
            event_type=event.get("eventType"),
            job=job,
            run_id=run_id,
            event_time=event_time,
            producer=str(event.get("producer")),
            origin=origin,
            warnings=[str(w) for w in checked.warnings],
        )
    )
    _record_aliases(ctx, event)
    inputs = [ctx.name(d["namespace"], d["name"]).name for d in _list(event, "inputs")]
    outputs = [
        (ctx.name(d["namespace"], d["name"]).name, _dataset_rows(ctx, d))
        for d in _list(event, "outputs")
    ]
    outputs += _job_lineage_targets(ctx, event.get("job"))
    if checked.kind == "RunEvent" and job is not None and run_id is not None:
        _store_run(ctx, event, job, run_id, event_time, inputs, outputs)
    elif checked.kind == "JobEvent" and job is not None:
        ctx.outcome.flow_edges += _link(ctx, job, set(inputs), outputs)
    elif checked.kind == "DatasetEvent":
        dataset = event["dataset"]
        target = ctx.name(dataset["namespace"], dataset["name"]).name
        rows = _lineage_rows(ctx, _facet(dataset, "lineage"))
        ctx.outcome.flow_edges += _link(ctx, DECLARED_JOB, set(), [(target, rows)])
    db.flush()
    return ctx.outcome


def _store_run(
    ctx: _Context,
    event: Mapping[str, Any],
    job: str,
    run_id: str,
    event_time: datetime,
    inputs: list[str],
    outputs: list[tuple[str, list[Row]]],
) -> None:
    db = ctx.db
    run = db.exec(
        select(OpenLineageRun).where(
            OpenLineageRun.estate == ctx.estate, OpenLineageRun.run_id == run_id
        )
    ).first() or OpenLineageRun(estate=ctx.estate, run_id=run_id, job=job)
    run.writes = run.writes or _writes(event.get("job"))
    if event.get("eventType") == "COMPLETE" and run.completed_at is None:
        run.completed_at, run.completed_by = event_time, ctx.origin
    db.add(run)
    for name in inputs:
        _add_run_dataset(ctx, run, "input", name, [])
    for name, rows in outputs:
        _add_run_dataset(ctx, run, "output", name, rows)
    db.flush()
    if run.completed_at is not None:
        rows_of_run = _run_datasets(ctx, [run.run_id])
        sources = {r.dataset for r in rows_of_run if r.role == "input"}
        targets = [
            (r.dataset, r.column_lineage) for r in rows_of_run if r.role == "output"
        ]
        ctx.outcome.flow_edges += _link(ctx, run.job, sources, targets)
    ctx.outcome.defects += _check_defects(ctx, run)


def _add_run_dataset(
    ctx: _Context, run: OpenLineageRun, role: str, dataset: str, rows: list[Row]
) -> None:
    existing = ctx.db.exec(
        select(OpenLineageRunDataset).where(
            OpenLineageRunDataset.estate == ctx.estate,
            OpenLineageRunDataset.run_id == run.run_id,
            OpenLineageRunDataset.role == role,
            OpenLineageRunDataset.dataset == dataset,
        )
    ).first()
    if existing is None:
        ctx.db.add(
            OpenLineageRunDataset(
                estate=ctx.estate,
                run_id=run.run_id,
                job=run.job,
                role=role,
                dataset=dataset,
                column_lineage=_unique_rows(rows),
            )
        )
        return
    merged = _unique_rows([*existing.column_lineage, *rows])
    if merged != existing.column_lineage:
        existing.column_lineage = merged
        ctx.db.add(existing)


def _run_datasets(ctx: _Context, run_ids: list[str]) -> list[OpenLineageRunDataset]:
    return list(
        ctx.db.exec(
            select(OpenLineageRunDataset).where(
                OpenLineageRunDataset.estate == ctx.estate,
                col(OpenLineageRunDataset.run_id).in_(run_ids),
            )
        )
    )


def _link(
    ctx: _Context, job: str, inputs: set[str], outputs: list[tuple[str, list[Row]]]
) -> int:
    """Flow edges from every input to every output; returns how many are new."""
    added = 0
    for target, rows in outputs:
        sources = inputs | {row[1] for row in rows if row[1]}
        for source in sorted(sources - {target}):
            added += _upsert_edge(ctx, source, target, job, _field_map(rows, source))
    return added


def _field_map(rows: Iterable[Row], source: str) -> dict[str, str]:
    """Source field → target field(s), the direction the estate file's
    ``fields`` use (several targets of one source field joined by ``,``)."""
    fields: dict[str, set[str]] = {}
    for out_field, dataset, in_field, how in rows:
        if out_field and in_field and dataset == source and how == "DIRECT":
            fields.setdefault(in_field, set()).add(out_field)
    return {src: ",".join(sorted(outs)) for src, outs in sorted(fields.items())}


def _upsert_edge(
    ctx: _Context, source: str, target: str, job: str, field_map: dict[str, str]
) -> int:
    edge = ctx.db.exec(
        select(FlowEdge).where(
            FlowEdge.estate == ctx.estate,
            FlowEdge.source == source,
            FlowEdge.target == target,
            FlowEdge.job == job,
        )
    ).first()
    if edge is None:
        ctx.db.add(
            FlowEdge(
                estate=ctx.estate,
                source=source,
                target=target,
                job=job,
                field_map=field_map,
            )
        )
        ctx.db.flush()
        return 1
    merged = dict(edge.field_map)
    for out_field, in_fields in field_map.items():
        known = set(filter(None, merged.get(out_field, "").split(",")))
        merged[out_field] = ",".join(sorted(known | set(in_fields.split(","))))
    if merged != edge.field_map:
        edge.field_map = merged
        ctx.db.add(edge)
    return 0


def _check_defects(ctx: _Context, run: OpenLineageRun) -> list[LineageDefect]:
    """Record (or resolve) defects for this run, and for the job's other runs
    once this one shows that the job writes."""
    if _has_outputs(ctx, run.run_id):
        _resolve(ctx, run.run_id)
        silent = ctx.db.exec(
            select(OpenLineageRun).where(
                OpenLineageRun.estate == ctx.estate,
                OpenLineageRun.job == run.job,
                col(OpenLineageRun.completed_at).is_not(None),
                col(OpenLineageRun.run_id).not_in(_output_run_ids(ctx, run.job)),
            )
        ).all()
        found = [
            _record_defect(ctx, other, other.writes or _OTHER_RUN_WROTE)
            for other in silent
        ]
        return [defect for defect in found if defect is not None]
    if run.completed_at is None:
        return []
    reason = run.writes or (
        _OTHER_RUN_WROTE if ctx.db.exec(_output_run_ids(ctx, run.job)).first() else None
    )
    defect = _record_defect(ctx, run, reason) if reason else None
    return [defect] if defect else []


def _output_run_ids(ctx: _Context, job: str) -> Any:
    return select(OpenLineageRunDataset.run_id).where(
        OpenLineageRunDataset.estate == ctx.estate,
        OpenLineageRunDataset.job == job,
        OpenLineageRunDataset.role == "output",
    )


def _has_outputs(ctx: _Context, run_id: str) -> bool:
    return (
        ctx.db.exec(
            select(OpenLineageRunDataset.id).where(
                OpenLineageRunDataset.estate == ctx.estate,
                OpenLineageRunDataset.run_id == run_id,
                OpenLineageRunDataset.role == "output",
            )
        ).first()
        is not None
    )


def _record_defect(
    ctx: _Context, run: OpenLineageRun, reason: str
) -> LineageDefect | None:
    existing = ctx.db.exec(
        select(LineageDefect).where(
            LineageDefect.estate == ctx.estate,
            LineageDefect.kind == NO_OUTPUTS,
            LineageDefect.run_id == run.run_id,
        )
    ).first()
    if existing is not None:
        return None
    inputs = sorted(
        d.dataset for d in _run_datasets(ctx, [run.run_id]) if d.role == "input"
    )
    defect = LineageDefect(
        estate=ctx.estate,
        kind=NO_OUTPUTS,
        job=run.job,
        run_id=run.run_id,
        origin=run.completed_by or ctx.origin,
        detail=(
            f"COMPLETE run of job {run.job} reported no outputs, but {reason}; "
            f"inputs: {', '.join(inputs) or 'none'}"
        ),
    )
    ctx.db.add(defect)
    ctx.db.flush()
    return defect


def _resolve(ctx: _Context, run_id: str) -> None:
    for defect in ctx.db.exec(
        select(LineageDefect).where(
            LineageDefect.estate == ctx.estate,
            LineageDefect.run_id == run_id,
            col(LineageDefect.resolved_at).is_(None),
        )
    ):
        defect.resolved_at = utcnow()
        ctx.db.add(defect)


def _writes(job: Any) -> str | None:
    """Why the job's facets say it writes, or None."""
    facets = job.get("facets") if isinstance(job, dict) else None
    if not isinstance(facets, dict):
        return None
    sql = facets.get("sql")
    query = sql.get("query") if isinstance(sql, dict) else None
    if isinstance(query, str):
        match = _SQL_WRITES.search(_SQL_NOISE.sub(" ", query))
        if match:
            words = " ".join(match.group(1).upper().split()[:2])
            return f"its SQL facet writes ({words})"
    job_type = facets.get("jobType")
    if isinstance(job_type, dict) and job_type.get("jobType") in _WRITING_JOB_TYPES:
        return f"its jobType is {job_type.get('integration', '')} {job_type['jobType']}"
    return None


def _record_aliases(ctx: _Context, event: Mapping[str, Any]) -> None:
    datasets = [*_list(event, "inputs"), *_list(event, "outputs")]
    if isinstance(event.get("dataset"), dict):
        datasets.append(event["dataset"])
    for dataset in datasets:
        this = ctx.name(dataset["namespace"], dataset["name"]).name
        symlinks = _facet(dataset, "symlinks")
        for other in _entries(symlinks.get("identifiers")):
            alias = ctx.name(other["namespace"], other["name"]).name
            if record_alias(
                ctx.db,
                ctx.estate,
                (this, ctx.namer.is_known(this)),
                (alias, ctx.namer.is_known(alias)),
                declared_by=ctx.origin,
            ):
                ctx.outcome.aliases += 1


def _dataset_rows(ctx: _Context, dataset: Mapping[str, Any]) -> list[Row]:
    """Column lineage of an output: its columnLineage and lineage facets."""
    rows: list[Row] = []
    facet = _facet(dataset, "columnLineage")
    fields = facet.get("fields")
    for out_field, entry in (fields if isinstance(fields, dict) else {}).items():
        inputs = entry.get("inputFields") if isinstance(entry, dict) else None
        for source in _entries(inputs, "field"):
            named = ctx.name(source["namespace"], source["name"]).name
            rows.append([out_field, named, source["field"], _how(source)])
    for source in _entries(facet.get("dataset")):
        named = ctx.name(source["namespace"], source["name"]).name
        rows.append([None, named, source.get("field"), "INDIRECT"])
    return rows + _lineage_rows(ctx, _facet(dataset, "lineage"))


def _lineage_rows(ctx: _Context, facet: Mapping[str, Any]) -> list[Row]:
    """Rows from a LineageFacet's dataset form (``inputs`` and ``fields``)."""
    rows: list[Row] = []
    for source in _dataset_entries(facet.get("inputs")):
        named = ctx.name(source["namespace"], source["name"]).name
        how = "INDIRECT" if source.get("field") else "DIRECT"
        rows.append([None, named, source.get("field"), how])
    fields = facet.get("fields")
    for out_field, entry in (fields if isinstance(fields, dict) else {}).items():
        inputs = entry.get("inputs") if isinstance(entry, dict) else None
        for source in _dataset_entries(inputs):
            named = ctx.name(source["namespace"], source["name"]).name
            rows.append([out_field, named, source.get("field"), _how(source)])
    return rows


def _job_lineage_targets(ctx: _Context, job: Any) -> list[tuple[str, list[Row]]]:
    """Dataset targets of a job's ``lineage`` facet, with their rows."""
    facet = _facet(job, "lineage") if isinstance(job, dict) else {}
    targets = []
    for entry in _dataset_entries(facet.get("entries")):
        target = ctx.name(entry["namespace"], entry["name"]).name
        targets.append((target, _lineage_rows(ctx, entry)))
    return targets


def _how(source: Mapping[str, Any]) -> str:
    steps = source.get("transformations")
    if not isinstance(steps, list) or not steps:
        return "DIRECT"  # facets before 1-1-0 state no transformations
    direct = any(isinstance(s, dict) and s.get("type") == "DIRECT" for s in steps)
    return "DIRECT" if direct else "INDIRECT"


def _unique_rows(rows: Iterable[Row]) -> list[Row]:
    unique = {tuple(row): None for row in rows}
    return [list(row) for row in sorted(unique, key=lambda r: tuple(map(str, r)))]


def _job_name(job: Any) -> str | None:
    if not isinstance(job, dict):
        return None
    return f"{job.get('namespace')}.{job.get('name')}"


def _facet(holder: Any, key: str) -> Mapping[str, Any]:
    facets = holder.get("facets") if isinstance(holder, dict) else None
    value = facets.get(key) if isinstance(facets, dict) else None
    return value if isinstance(value, dict) else {}


def _list(event: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = event.get(key)
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def _entries(value: Any, *needed: str) -> Iterator[Mapping[str, Any]]:
    """Entries with string namespace and name (and ``needed`` keys); lenient
    mode lets malformed facets through, and those entries are skipped."""
    for entry in value if isinstance(value, list) else []:
        keys = ("namespace", "name", *needed)
        if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in keys):
            yield entry


def _dataset_entries(value: Any) -> Iterator[Mapping[str, Any]]:
    for entry in _entries(value):
        if entry.get("type", "DATASET") == "DATASET":
            yield entry
