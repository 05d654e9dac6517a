"""Dataset identity: an OpenLineage (namespace, name) becomes ``system:dataset``.

Two producers often name one table differently (``ANALYTICS.PUBLIC.CONTACTS``
from Spark, ``analytics.public.contacts`` from dbt), and a split name splits the
lineage graph. These rules make equal names equal before anything is stored:

1. Namespace form. A URI namespace has its scheme and host lower-cased, any
   user and password dropped, the engine's default port added when missing and
   trailing slashes removed; ``postgresql://`` is spelt ``postgres://`` as in
   OpenLineage's naming. Any other namespace is only trimmed.
2. Engine. The namespace's scheme names the engine; a plain namespace such as
   ``food_delivery`` can name one with ``engine:`` in the estate's mapping.
3. Identifiers. For SQL engines a name is split on dots outside quotes
   (``"..."``, ```...```, ``[...]``). Engines that fold unquoted identifiers
   fold them (Snowflake to upper case; Postgres, Redshift, DuckDB, Trino, Hive,
   Databricks and SQL Server to lower case) and keep a quoted part's case. A part
   that means the same unquoted is written in lower case without quotes; any
   other part keeps double quotes (``"MixedCase"``).
4. Default schema. A one-part name on a database.schema.table engine gets the
   engine's default schema (``public``, ``main``, ``dbo``; ``default_schema:``
   overrides).
5. Database. With ``database:`` in the mapping, a three-part name in that
   database loses its database part, so ``analytics.public.contacts`` and
   ``public.contacts`` are one dataset.
6. System. The estate file's ``openlineage_namespaces`` maps a namespace (in
   the form of rule 1) to a system; without an entry the namespace is its own
   system, lower-cased, with each run of characters other than letters, digits,
   ``_``, ``.`` and ``-`` replaced by ``-``.

Names on other engines (paths on s3, gs, file, hdfs, Kafka topics, plain
namespaces without an engine) are kept as given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lethe.errors import ConfigError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PLAIN_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_QUOTES = {'"': '"', "`": "`", "[": "]"}
_SCHEME_ALIASES = {"postgresql": "postgres", "mssql": "sqlserver"}


@dataclass(frozen=True)
class Engine:
    fold: str | None  # "lower", "upper" or None (case-sensitive)
    levels: int  # 3 for database.schema.table, 2 for database.table
    default_schema: str | None = None
    default_port: int | None = None


ENGINES: dict[str, Engine] = {
    "postgres": Engine("lower", 3, "public", 5432),
    "redshift": Engine("lower", 3, "public", 5439),
    "snowflake": Engine("upper", 3, "public"),
    "duckdb": Engine("lower", 3, "main"),
    "trino": Engine("lower", 3),
    "databricks": Engine("lower", 3),
    "sqlserver": Engine("lower", 3, "dbo", 1433),
    "hive": Engine("lower", 2, default_port=9083),
    "bigquery": Engine(None, 3),
    "mysql": Engine(None, 2, default_port=3306),
}


@dataclass(frozen=True)
class NamespaceRule:
    """What the estate says about one namespace."""

    system: str
    engine: str | None = None
    database: str | None = None
    default_schema: str | None = None


@dataclass(frozen=True)
class DatasetName:
    """A dataset's lethe name, and whether the estate maps its namespace."""

    name: str
    namespace: str
    mapped: bool

    @property
    def system(self) -> str:
        return self.name.split(":", 1)[0]


@dataclass(frozen=True)
class Namer:
    """Names datasets for one estate; see the module docstring for the rules."""

    rules: Mapping[str, NamespaceRule] = field(default_factory=dict)
    estate_systems: frozenset[str] = frozenset()

    @property
    def known_systems(self) -> frozenset[str]:
        return self.estate_systems | {rule.system for rule in self.rules.values()}

    def dataset(self, namespace: str, name: str) -> DatasetName:
        form = normalize_namespace(namespace)
        rule = self.rules.get(form)
        engine_name = (rule.engine if rule and rule.engine else None) or scheme(form)
        local = normalize_name(name, engine_name, rule)
        system = rule.system if rule else system_for(form)
        return DatasetName(f"{system}:{local}", form, mapped=rule is not None)

    def is_known(self, dataset: str) -> bool:
        return dataset.split(":", 1)[0] in self.known_systems


def scheme(namespace: str) -> str | None:
    if not _URI.match(namespace):
        return None
    raw = namespace.split("://", 1)[0].lower()
    return _SCHEME_ALIASES.get(raw, raw)


def normalize_namespace(namespace: str) -> str:
    text = namespace.strip()
    if not _URI.match(text):
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.rstrip("/")
    engine = scheme(text) or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = ENGINES[engine].default_port if engine in ENGINES else None
    port = port or default_port
    netloc = f"{host}:{port}" if port and host else host
    rest = parts.path.rstrip("/")
    if parts.query:
        rest += f"?{parts.query}"
    return f"{engine}://{netloc}{rest}"


def system_for(namespace: str) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", namespace.lower()).strip("-")
    return slug or "openlineage"


def normalize_name(
    name: str, engine_name: str | None, rule: NamespaceRule | None
) -> str:
    text = name.strip()
    engine = ENGINES.get(engine_name or "")
    if engine is None:
        return text
    parts = _split(text)
    if parts is None:
        return text
    if rule and rule.default_schema and engine.levels == 3 and len(parts) == 1:
        parts.insert(0, (rule.default_schema, False))
    elif engine.default_schema and engine.levels == 3 and len(parts) == 1:
        parts.insert(0, (engine.default_schema, False))
    rendered = [_render(part, quoted, engine) for part, quoted in parts]
    if rule and rule.database and len(rendered) == engine.levels:
        if rendered[0] == _render(rule.database, False, engine):
            rendered = rendered[1:]
    return ".".join(rendered)


def _split(text: str) -> list[tuple[str, bool]] | None:
    """Identifier parts with whether each was quoted; None if unbalanced."""
    parts: list[tuple[str, bool]] = []
    current, quoted, closing, i = "", False, None, 0
    while i < len(text):
        char = text[i]
        if closing is not None:
            if char == closing and text[i + 1 : i + 2] == closing:
                current += char  # a doubled quote inside a quoted part
                i += 1
            elif char == closing:
                closing = None
            else:
                current += char
        elif char in _QUOTES and not current:
            closing, quoted = _QUOTES[char], True
        elif char == ".":
            parts.append((current, quoted))
            current, quoted = "", False
        else:
            current += char
        i += 1
    if closing is not None:
        return None
    parts.append((current, quoted))
    return parts


def _render(part: str, quoted: bool, engine: Engine) -> str:
    value = part if quoted or engine.fold is None else _fold(part, engine.fold)
    if _PLAIN_PART.fullmatch(value):
        if engine.fold is None:
            return value
        if _fold(value, engine.fold) == value:
            return value.lower()
    return '"' + value.replace('"', '""') + '"'


def _fold(value: str, how: str) -> str:
    return value.upper() if how == "upper" else value.lower()


def namer_from_settings(
    raw: Any, *, estate_systems: frozenset[str] = frozenset()
) -> Namer:
    """A namer from the estate file's ``openlineage_namespaces`` value."""
    if raw is None:
        return Namer(estate_systems=estate_systems)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "openlineage_namespaces in the estate file must map namespaces to systems"
        )
    rules = {}
    for namespace, value in raw.items():
        rules[normalize_namespace(str(namespace))] = _rule(str(namespace), value)
    return Namer(rules=rules, estate_systems=estate_systems)


def _rule(namespace: str, value: Any) -> NamespaceRule:
    if isinstance(value, str):
        value = {"system": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("system"), str):
        raise ConfigError(
            f"openlineage_namespaces[{namespace!r}] needs a system: write "
            "'namespace: system' or '{system: ..., engine: ..., database: ...}'"
        )
    unknown = set(value) - {"system", "engine", "database", "default_schema"}
    if unknown:
        raise ConfigError(
            f"openlineage_namespaces[{namespace!r}] has unknown keys "
            f"{', '.join(sorted(unknown))}; use system, engine, database, "
            "default_schema"
        )
    engine = value.get("engine")
    if engine is not None and _SCHEME_ALIASES.get(engine, engine) not in ENGINES:
        raise ConfigError(
            f"openlineage_namespaces[{namespace!r}]: engine must be one of "
            f"{', '.join(sorted(ENGINES))}"
        )
    system = value["system"]
    if ":" in system or not system.strip():
        raise ConfigError(
            f"openlineage_namespaces[{namespace!r}]: system {system!r} must be a "
            "name without ':'"
        )
    return NamespaceRule(
        system=system,
        engine=_SCHEME_ALIASES.get(engine, engine) if engine else None,
        database=value.get("database"),
        default_schema=value.get("default_schema"),
    )
