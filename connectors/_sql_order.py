"""Deleting in foreign-key order, read live from the database.

A warehouse erasure deletes the subject's rows from several tables in one
transaction. The order comes from the foreign keys the database reports now
(not from configuration), children before parents; a key that rows the plan
leaves in place still hold blocks the delete, and is named.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Table,
    and_,
    column,
    func,
    inspect,
    not_,
    select,
    table,
    tuple_,
)

BATCH_CAP = 1000
_SYSTEM_SCHEMAS = frozenset({"information_schema"})

Ident = tuple[str, str]


@dataclass(frozen=True)
class Target:
    """One dataset of the plan, reflected: its table, key column and keys."""

    dataset: str
    ident: Ident
    table: Table
    key: Column[Any]
    keys: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class ForeignKey:
    name: str | None
    child: Ident
    child_columns: tuple[str, ...]
    parent: Ident
    parent_columns: tuple[str, ...]

    def label(self) -> str:
        child = ".".join(self.child)
        parent = ".".join(self.parent)
        return f"{self.name or 'unnamed foreign key'} ({child} -> {parent})"


def chunks(values: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(values), BATCH_CAP):
        yield values[start : start + BATCH_CAP]


def foreign_keys(conn: Connection, parents: set[Ident]) -> list[ForeignKey]:
    """Every foreign key in the database that references one of ``parents``."""
    inspector = inspect(conn)
    default = inspector.default_schema_name or ""
    found = []
    for schema in inspector.get_schema_names():
        if schema in _SYSTEM_SCHEMAS:
            continue
        for (_, name), fks in inspector.get_multi_foreign_keys(schema=schema).items():
            for fk in fks:
                parent = (fk["referred_schema"] or default, fk["referred_table"])
                if parent not in parents:
                    continue
                found.append(
                    ForeignKey(
                        name=fk["name"],
                        child=(schema, name),
                        child_columns=tuple(fk["constrained_columns"]),
                        parent=parent,
                        parent_columns=tuple(fk["referred_columns"]),
                    )
                )
    return found


def delete_order(targets: Sequence[Target], fks: Sequence[ForeignKey]) -> list[Target]:
    """Targets with every referencing target first; plan order otherwise.

    In a cycle the first remaining target goes next and the database decides:
    if its rows are still referenced, the transaction rolls back.
    """
    by_table: dict[Ident, list[str]] = {}
    for target in targets:
        by_table.setdefault(target.ident, []).append(target.dataset)
    waits: dict[str, set[str]] = {target.dataset: set() for target in targets}
    for fk in fks:
        if fk.child == fk.parent:
            continue
        for parent in by_table.get(fk.parent, []):
            waits[parent].update(by_table.get(fk.child, []))

    ordered: list[Target] = []
    remaining = list(targets)
    while remaining:
        done = {target.dataset for target in ordered}
        ready = [t for t in remaining if waits[t.dataset] <= done]
        ordered.append(ready[0] if ready else remaining[0])
        remaining.remove(ordered[-1])
    return ordered


def blocks(conn: Connection, fk: ForeignKey, targets: Sequence[Target]) -> bool:
    """Whether rows the plan leaves in place still reference the subject's rows."""
    parent = next(t for t in targets if t.ident == fk.parent)
    planned = [t for t in targets if t.ident == fk.child]
    names = dict.fromkeys([*fk.child_columns, *(t.key.name for t in planned)])
    child = table(fk.child[1], *map(column, names), schema=fk.child[0])
    refs = tuple_(*(child.c[name] for name in fk.child_columns))
    referenced = [parent.table.c[name] for name in fk.parent_columns]
    for chunk in chunks(parent.keys):
        subject_rows = select(*referenced).where(parent.key.in_(chunk))
        condition: ColumnElement[bool] = refs.in_(subject_rows)
        for other in planned:
            condition = and_(condition, not_(child.c[other.key.name].in_(other.keys)))
        query = select(func.count()).select_from(child).where(condition)
        if conn.execute(query).scalar_one():
            return True
    return False
