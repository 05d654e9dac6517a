"""Dataset aliases: names that a ``symlinks`` facet declared to be one dataset.

Aliases are stored as they arrive and applied when lineage is read, never by
rewriting flow edges or copies, so an alias declared after the runs merges
their lineage exactly as one declared before them. Each group of aliased names
has one canonical name, chosen from the names alone: a name in a system the
estate knows beats one it does not, then the lexically smallest wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlmodel import Session, select

from lineage.openlineage_models import DatasetAlias


def record_alias(
    db: Session,
    estate: str,
    first: tuple[str, bool],
    second: tuple[str, bool],
    *,
    declared_by: str,
) -> bool:
    """Store that two (name, known) pairs are one dataset; False if known already."""
    (name_a, a_known), (name_b, b_known) = sorted([first, second])
    if name_a == name_b:
        return False
    existing = db.exec(
        select(DatasetAlias).where(
            DatasetAlias.estate == estate,
            DatasetAlias.name_a == name_a,
            DatasetAlias.name_b == name_b,
        )
    ).first()
    if existing is not None:
        return False
    db.add(
        DatasetAlias(
            estate=estate,
            name_a=name_a,
            name_b=name_b,
            a_known=a_known,
            b_known=b_known,
            declared_by=declared_by,
        )
    )
    db.flush()
    return True


def alias_groups(db: Session, estate: str) -> dict[str, str]:
    """Each aliased name mapped to its group's canonical name."""
    parent: dict[str, str] = {}
    known: dict[str, bool] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for alias in db.exec(select(DatasetAlias).where(DatasetAlias.estate == estate)):
        known[alias.name_a] = known.get(alias.name_a, False) or alias.a_known
        known[alias.name_b] = known.get(alias.name_b, False) or alias.b_known
        parent[root(alias.name_a)] = root(alias.name_b)
    groups: dict[str, list[str]] = {}
    for name in parent:
        groups.setdefault(root(name), []).append(name)
    canonical: dict[str, str] = {}
    for names in groups.values():
        chosen = min(names, key=lambda n: (not known.get(n, False), n))
        canonical.update({name: chosen for name in names})
    return canonical


def canonical_namer(db: Session, estate: str) -> Callable[[str], str]:
    """A function from a dataset name to its canonical name in this estate."""
    groups = alias_groups(db, estate)
    return lambda name: groups.get(name, name)


def aliases_of(db: Session, estate: str, names: Iterable[str]) -> set[str]:
    """Every name that means the same dataset as one of ``names`` (them too)."""
    given = set(names)
    groups = alias_groups(db, estate)
    wanted = {groups.get(name, name) for name in given}
    return given | {name for name, root in groups.items() if root in wanted}
