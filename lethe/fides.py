"""Fides dataset annotations: which columns of which tables identify a person.

A Fides dataset file (``dataset:`` holding fideslang ``Dataset`` models, each
with ``collections`` of ``fields``) tags every field with data categories of
the fideslang taxonomy. The discovery scan reads it to learn, per collection
(a table):

- the fields that identify a person: a field whose ``fides_meta.identity`` is
  ``email`` or ``phone_number``, or that carries a data category at or under
  ``user.contact.email`` or ``user.contact.phone_number``;
- the key a copy is known by: a field marked ``fides_meta.primary_key`` (when
  several are, as Fides allows for candidate keys, the one named ``id``, else
  the first by name); without one, a field named ``id``; without that, the
  first identifying field itself, so a table keyed by nothing but the address
  is still found, and erased by that value.

A collection with no identifying field is skipped and counted. Nested fields
(document stores) are checked for categories but not searched; identifying
ones are counted as ``nested``. ``fides_meta.namespace.schema`` on a dataset
puts its collections in that schema (``schema.collection``).

Every data category used anywhere must be in the taxonomy: an unknown one is a
ConfigError naming the file and line, the collection and the field.
``categories()`` and ``is_known_category()`` are the taxonomy look-ups the
erasure policy validates against too.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lethe.errors import ConfigError
from lethe.yamlfile import Lines, load

IDENTITY_CATEGORIES = {
    "email": "user.contact.email",
    "phone": "user.contact.phone_number",
}
FIDES_IDENTITIES = {"email": "email", "phone_number": "phone"}


@cache
def categories() -> frozenset[str]:
    """Every data category key of the fideslang taxonomy (``user.contact.email``)."""
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    return frozenset(c.fides_key for c in DEFAULT_TAXONOMY.data_category)


def is_known_category(key: str) -> bool:
    """Whether ``key`` names a data category of the fideslang taxonomy."""
    return key in categories()


def identity_kind(category: str) -> str | None:
    """``email`` or ``phone`` for a category at or under the identifying ones."""
    for kind, root in IDENTITY_CATEGORIES.items():
        if category == root or category.startswith(root + "."):
            return kind
    return None


@dataclass(frozen=True)
class TaggedTable:
    """One collection with person-identifying fields (field names, not values)."""

    fides_dataset: str
    collection: str
    schema: str | None
    key: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # every field's, nested ones too (the policy's)

    @property
    def qualified(self) -> str:
        """``schema.collection``, or the collection alone without a schema."""
        return f"{self.schema}.{self.collection}" if self.schema else self.collection


@dataclass(frozen=True)
class Annotations:
    """What one Fides dataset file says about identifying fields."""

    path: Path
    tables: tuple[TaggedTable, ...]
    skipped: int = 0
    nested: int = 0


def load_annotations(path: Path) -> Annotations:
    """Read one Fides dataset file; raises ConfigError naming the place."""
    data, lines = load(path, what="the Fides dataset file")
    items = data.get("dataset") if isinstance(data, Mapping) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"{path}: a Fides dataset file holds 'dataset:' with a list of datasets"
        )
    tables: list[TaggedTable] = []
    skipped = nested = 0
    for index, raw in enumerate(items):
        model = _model(raw, lines, ("dataset", index))
        _check_categories(raw, lines, ("dataset", index))
        schema = _schema(model, lines, ("dataset", index))
        for collection in model.collections:
            table = _tagged(model.fides_key, schema, collection)
            nested += sum(_nested_identifying(f) for f in collection.fields)
            if table is None:
                skipped += 1
            else:
                tables.append(table)
    return Annotations(path=path, tables=tuple(tables), skipped=skipped, nested=nested)


def load_all(paths: Iterable[Path]) -> list[Annotations]:
    return [load_annotations(path) for path in paths]


def _model(raw: Any, lines: Lines, where: tuple[Hashable, ...]) -> Any:
    from fideslang.models import Dataset
    from pydantic import ValidationError

    if not isinstance(raw, Mapping):
        raise lines.error(where, "a Fides dataset is a mapping with fides_key")
    try:
        return Dataset(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        raise lines.error(
            (*where, *loc), f"not a valid Fides dataset ({first['msg']})"
        ) from None
    except (TypeError, ValueError) as exc:
        raise lines.error(
            where, f"not a valid Fides dataset ({type(exc).__name__})"
        ) from None


def _check_categories(raw: Mapping[str, Any], lines: Lines, where: tuple) -> None:
    _check_list(raw, lines, where, "the dataset")
    for c_index, collection in enumerate(raw.get("collections") or []):
        name = f"collection {collection.get('name')!r}"
        at = (*where, "collections", c_index)
        _check_list(collection, lines, at, name)
        _check_fields(collection.get("fields") or [], lines, at, name, "")


def _check_fields(
    fields: Sequence[Mapping[str, Any]], lines: Lines, where: tuple, name: str, up: str
) -> None:
    for f_index, item in enumerate(fields):
        field = f"{up}{item.get('name')}"
        at = (*where, "fields", f_index)
        _check_list(item, lines, at, f"{name}, field {field!r}")
        _check_fields(item.get("fields") or [], lines, at, name, f"{field}.")


def _check_list(item: Mapping[str, Any], lines: Lines, where: tuple, what: str) -> None:
    for c_index, category in enumerate(item.get("data_categories") or []):
        if not is_known_category(str(category)):
            place = lines.at(*where, "data_categories", c_index)
            raise ConfigError(
                f"{place}: {what}: unknown data category {category!r}; use a key "
                "of the fideslang taxonomy, such as user.contact.email"
            )


def _schema(model: Any, lines: Lines, where: tuple) -> str | None:
    namespace = (model.fides_meta.namespace if model.fides_meta else None) or {}
    schema = namespace.get("schema")
    if schema is None:
        return None
    if not isinstance(schema, str) or not schema.strip():
        raise lines.error(
            (*where, "fides_meta", "namespace", "schema"), "the schema is a name"
        )
    return schema.strip()


def _kinds(field: Any) -> set[str]:
    kinds = {identity_kind(c) for c in field.data_categories or []}
    identity = field.fides_meta.identity if field.fides_meta else None
    kinds.add(FIDES_IDENTITIES.get(identity or ""))
    return {kind for kind in kinds if kind}


def _field_categories(fields: Iterable[Any]) -> set[str]:
    found: set[str] = set()
    for item in fields:
        found.update(item.data_categories or [])
        found |= _field_categories(item.fields or [])
    return found


def _nested_identifying(field: Any) -> int:
    return sum(bool(_kinds(f)) + _nested_identifying(f) for f in field.fields or [])


def _tagged(fides_key: str, schema: str | None, collection: Any) -> TaggedTable | None:
    emails = tuple(f.name for f in collection.fields if "email" in _kinds(f))
    phones = tuple(f.name for f in collection.fields if "phone" in _kinds(f))
    if not emails and not phones:
        return None
    names = [f.name for f in collection.fields]  # fideslang sorts them by name
    primary = [
        f.name for f in collection.fields if f.fides_meta and f.fides_meta.primary_key
    ]
    if primary:
        key = "id" if "id" in primary else primary[0]
    else:
        key = "id" if "id" in names else (emails + phones)[0]
    return TaggedTable(
        fides_dataset=fides_key,
        collection=collection.name,
        schema=schema,
        key=key,
        emails=emails,
        phones=phones,
        categories=tuple(sorted(_field_categories(collection.fields))),
    )
