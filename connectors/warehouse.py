"""SQL warehouse connector (SQLite and PostgreSQL) on SQLAlchemy Core.

A warehouse copy is erased only when the row is gone: soft-delete flags such as
``is_deleted`` never count, so every dataset is a real ``DELETE``. All datasets
of one subject go in ONE transaction, ordered from the live foreign-key metadata
reflected on every run (child tables before the tables they reference). A
foreign key from a table outside the plan rolls the whole erase back and the
error names the constraint, so a subject is never left half-erased.

"Deleted" is not "physically gone", so each Outcome says which it is: SQLite
runs with ``secure_delete`` (freed pages are zeroed) and, in WAL mode, a
truncating checkpoint; PostgreSQL gets a ``VACUUM`` per touched table.

With ``fides_datasets`` (Fides dataset files, lethe/fides.py) the connector
also searches by identity: ``find_by_identity`` runs one parameterised SELECT
per annotated table over its e-mail and phone columns and compares in lethe's
one normalisation. A collection maps to the dataset whose ``table`` (or name)
is the collection's ``schema.collection`` (or bare collection); a collection
no dataset names becomes a dataset of that name, keyed by the annotation's key
field, so a table only the scan knows of can be erased too.

Keys and other bound values never reach logs or exception text: the engine
hides parameters, SQL is built from bound parameters and quoted identifiers
only, and database errors are reduced to their SQLSTATE or SQLite error name
and the constraint's name before they leave this module. That reduction and the
choice of anonymisation placeholders live in ``_sql.py``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    delete,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from connectors._retention import Retention
from connectors._sql import (
    error_code,
    find_identities,
    placeholder,
    translate_error,
    violated_constraint,
)
from connectors._sql_order import (
    BATCH_CAP,
    ForeignKey,
    Target,
    blocks,
    chunks,
    delete_order,
    foreign_keys,
)
from connectors._warehouse_setup import (
    DatasetConfig,
    build_engine,
    parse_tables,
    search_columns,
)
from connectors.base import Action, Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import ConfigError, ConnectorError, LetheError
from lethe.fides import load_all
from lethe.identity import normalize_email, normalize_phone

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def _scrubbed(operation: str) -> Callable[[_F], _F]:
    """Raise only lethe errors, with no database exception chained to them.

    A driver's message can quote the failing row (PostgreSQL's "Failing row
    contains ..."), so the original exception must not ride along as
    ``__context__`` into tracebacks, Prefect logs or error reporters.
    """

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def scrubbed(self: WarehouseConnector, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except sa_exc.DBAPIError as exc:
                error: LetheError = translate_error(self.system, operation, exc)
            except LetheError as exc:
                error = exc
            error.__cause__ = error.__context__ = None
            raise error

        return cast(_F, scrubbed)

    return decorate


class WarehouseConnector:
    """Delete or anonymise a subject's rows in a SQL warehouse and prove it.

    ``tables`` maps each dataset name to ``{"table": ..., "key_column": ...}``;
    on PostgreSQL ``table`` may be schema-qualified (``"raw.sf_contact"``).
    ``fides_datasets`` lists Fides dataset files whose annotated tables
    ``find_by_identity`` searches.
    """

    def __init__(
        self,
        *,
        system: str,
        url: str,
        tables: Mapping[str, Mapping[str, str]],
        physical_purge: bool = True,
        statement_timeout_seconds: float = 30.0,
        platform: str | None = None,
        time_travel_days: float | None = None,
        fail_safe_days: float | None = None,
        backup_retention_days: float | None = None,
        fides_datasets: Sequence[str] = (),
    ) -> None:
        if statement_timeout_seconds <= 0:
            raise ConfigError(f"{system}: statement_timeout_seconds must be > 0")
        self.system = system
        self.capabilities = Capabilities(
            hard_delete=True, anonymise=True, verify_by_read=True, batch_cap=BATCH_CAP
        )
        self._tables = parse_tables(system, tables)
        annotations = load_all(Path(f) for f in fides_datasets)
        self._search = search_columns(self._tables, annotations)
        if annotations:
            logger.debug(
                "%s: %d annotated tables to search; %d collections without an "
                "identifying field and %d nested identifying fields not searched",
                system,
                len(self._search),
                sum(a.skipped for a in annotations),
                sum(a.nested for a in annotations),
            )
        self._physical_purge = physical_purge
        self._retention = Retention.configured(
            system,
            platform=platform,
            time_travel_days=time_travel_days,
            fail_safe_days=fail_safe_days,
            backup_retention_days=backup_retention_days,
        )
        self._engine = build_engine(system, url, statement_timeout_seconds)

    @_scrubbed("locate")
    def locate(self, keys: Keys) -> Located:
        with self._engine.connect() as conn:
            counts = {t.dataset: _count(conn, t) for t in self._targets(conn, keys)}
        return Located(counts=counts)

    @_scrubbed("erase")
    def erase(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        deleted = self._delete_all(keys)
        total = sum(n for _, n in deleted)
        if total == 0:
            logger.info("%s: erase %s matched no rows", self.system, idempotency_key)
            return _outcome("already_absent", 0, "no rows matched; nothing deleted")

        detail = self._purge([t for t, n in deleted if n], verb="deleted")
        bytes_gone = detail.endswith(
            ("freed pages zeroed (SQLite secure_delete)", "WAL checkpointed")
        )
        logger.info(
            "%s: erase %s deleted %d rows in %d datasets; %s",
            self.system,
            idempotency_key,
            total,
            sum(1 for _, n in deleted if n),
            detail,
        )
        outcome = _outcome("deleted", total, detail)
        dates = self._retention.dates(outcome.finished_at, bytes_gone=bytes_gone)
        return replace(outcome, dates=dates)

    @property
    def searchable_datasets(self) -> tuple[str, ...]:
        """The datasets ``find_by_identity`` searches (annotated tables)."""
        return tuple(self._search)

    @_scrubbed("search")
    def find_by_identity(
        self,
        *,
        emails: Sequence[str] = (),
        phones: Sequence[str] = (),
        phone_region: str = "US",
    ) -> dict[str, list[str]]:
        """Keys of the rows holding one of these identities, by dataset."""
        wanted_emails = {normalize_email(e) for e in emails}
        wanted_phones = {normalize_phone(p, region=phone_region) for p in phones}
        found: dict[str, list[str]] = {}
        if not wanted_emails and not wanted_phones:
            return found
        with self._engine.connect() as conn:
            for dataset, (email_columns, phone_columns) in self._search.items():
                target = self._targets(conn, {dataset: ()})[0]
                missing = [
                    c
                    for c in (*email_columns, *phone_columns)
                    if c not in target.table.c
                ]
                if missing:
                    raise ConfigError(
                        f"{self.system}: the Fides annotation of {dataset!r} names "
                        f"column(s) {', '.join(missing)}, which the table lacks"
                    )
                keys = find_identities(
                    conn,
                    target.table,
                    target.key,
                    email_columns=email_columns,
                    phone_columns=phone_columns,
                    emails=wanted_emails,
                    phones=wanted_phones,
                    phone_region=phone_region,
                )
                if keys:
                    found[dataset] = keys
        logger.debug(
            "%s: identity search found keys in %d datasets", self.system, len(found)
        )
        return found

    @_scrubbed("read")
    def read_fields(
        self, dataset: str, keys: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Column values by key (for reconciliation; values stay in memory)."""
        with self._engine.connect() as conn:
            target = self._targets(conn, {dataset: list(keys)})[0]
            missing = [c for c in columns if c not in target.table.c]
            if missing:
                raise ConfigError(
                    f"{self.system}: {dataset} has no column {', '.join(missing)}"
                )
            picked = [target.table.c[c] for c in columns]
            found: dict[str, dict[str, Any]] = {}
            for chunk in chunks(target.keys):
                query = select(target.key, *picked).where(target.key.in_(chunk))
                for row in conn.execute(query):
                    found[str(row[0])] = dict(zip(columns, row[1:], strict=True))
        return found

    @_scrubbed("verify")
    def verify(self, keys: Keys) -> Evidence:
        with self._engine.connect() as conn:
            counts = {t.dataset: _count(conn, t) for t in self._targets(conn, keys)}
        remaining = sum(counts.values())
        detail = (
            "no rows for the keys in any dataset (delete flags ignored)"
            if remaining == 0
            else f"{remaining} rows remain (delete flags ignored)"
        )
        return Evidence(
            verified=remaining == 0,
            observed=counts,
            checked_at=datetime.now(UTC),
            detail=detail,
        )

    @_scrubbed("anonymise")
    def anonymise(
        self,
        keys: Keys,
        columns: Mapping[str, Sequence[str]],
        *,
        idempotency_key: str,
    ) -> Outcome:
        """Overwrite the named columns of the subject's rows with placeholders.

        Each placeholder comes from the column's reflected type, length and
        nullability and is random per run, never derived from the old value.
        The rows stay, so ``verify`` still counts them: it proves absence only.
        """
        updated = self._update_all(keys, columns)
        total = sum(n for _, n in updated)
        if total == 0:
            return _outcome("already_absent", 0, "no rows matched; nothing changed")

        detail = self._purge([t for t, n in updated if n], verb="anonymised")
        logger.info(
            "%s: anonymise %s changed %d rows; %s",
            self.system,
            idempotency_key,
            total,
            detail,
        )
        return _outcome("anonymised", total, detail)

    def close(self) -> None:
        self._engine.dispose()

    # -- one transaction each ------------------------------------------------

    def _delete_all(self, keys: Keys) -> list[tuple[Table, int]]:
        targets: list[Target] = []
        fks: list[ForeignKey] = []
        try:
            with self._engine.begin() as conn:
                targets = self._targets(conn, keys)
                fks = foreign_keys(conn, {t.ident for t in targets})
                order = delete_order(targets, fks)
                logger.debug(
                    "%s: delete order %s", self.system, [t.dataset for t in order]
                )
                return [(t.table, _delete(conn, t)) for t in order]
        except sa_exc.IntegrityError as exc:
            raise self._blocked(exc, targets, fks) from None

    def _update_all(
        self, keys: Keys, columns: Mapping[str, Sequence[str]]
    ) -> list[tuple[Table, int]]:
        wanted = {dataset: keys.get(dataset, ()) for dataset in columns}
        current = ""
        try:
            with self._engine.begin() as conn:
                done = []
                for target in self._targets(conn, wanted):
                    current = target.dataset
                    values = self._placeholders(target, columns[target.dataset])
                    done.append((target.table, _update(conn, target, values)))
                return done
        except sa_exc.IntegrityError as exc:
            raise ConnectorError(
                f"{self.system}: anonymise rolled back, nothing was changed; "
                f"{violated_constraint(exc)} rejects the placeholder in dataset "
                f"{current!r}; make the column nullable, relax the constraint or "
                "plan another action for it"
            ) from None

    # -- reflection ----------------------------------------------------------

    def _targets(self, conn: Connection, keys: Keys) -> list[Target]:
        default = inspect(conn).default_schema_name or ""
        metadata = MetaData()
        targets = []
        for dataset, values in keys.items():
            config = self._config(dataset)
            found = self._reflect(conn, metadata, dataset, config)
            targets.append(
                Target(
                    dataset=dataset,
                    ident=(config.schema or default, config.table),
                    table=found,
                    key=found.c[config.key_column],
                    keys=tuple(dict.fromkeys(values)),
                )
            )
        return targets

    def _config(self, dataset: str) -> DatasetConfig:
        if dataset not in self._tables:
            raise ConfigError(
                f"{self.system}: dataset {dataset!r} is not configured; add it to "
                "the system's tables setting"
            )
        return self._tables[dataset]

    def _reflect(
        self,
        conn: Connection,
        metadata: MetaData,
        dataset: str,
        config: DatasetConfig,
    ) -> Table:
        try:
            found = Table(
                config.table,
                metadata,
                schema=config.schema,
                autoload_with=conn,
                resolve_fks=False,
            )
        except sa_exc.NoSuchTableError:
            raise ConfigError(
                f"{self.system}: table {config.qualified!r} of dataset {dataset!r} "
                "does not exist; check tables[...]['table']"
            ) from None
        if config.key_column not in found.c:
            raise ConfigError(
                f"{self.system}: table {config.qualified!r} has no column "
                f"{config.key_column!r}; check tables[...]['key_column']"
            )
        return found

    def _placeholders(self, target: Target, names: Sequence[str]) -> dict[str, Any]:
        missing = [name for name in names if name not in target.table.c]
        if not names or missing:
            raise ConfigError(
                f"{self.system}: dataset {target.dataset!r} lacks the anonymise "
                f"column(s) {', '.join(missing) or '(none named)'}; check columns"
            )
        return {name: self._placeholder(target.table.c[name]) for name in names}

    def _placeholder(self, col: Column[Any]) -> Any:
        try:
            return placeholder(col)
        except ValueError as exc:
            raise ConfigError(f"{self.system}: {exc}") from None

    # -- after the commit ----------------------------------------------------

    def _purge(self, tables: Sequence[Table], *, verb: str) -> str:
        try:
            if self._engine.dialect.name == "sqlite":
                return f"rows {verb}; {self._purge_sqlite()}"
            return f"rows {verb}; {self._vacuum(tables)}"
        except sa_exc.DBAPIError as exc:
            logger.warning(
                "%s: purge failed after commit (%s)", self.system, error_code(exc)
            )
            return f"rows {verb}; physical purge not run (failed: {error_code(exc)})"

    def _purge_sqlite(self) -> str:
        with self._engine.connect() as conn:
            secure = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            if not secure:
                return "secure_delete is off, freed pages NOT zeroed"
            if mode != "wal":
                return "freed pages zeroed (SQLite secure_delete)"
            if not self._physical_purge:
                return "freed pages zeroed in the WAL only; checkpoint not run"
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
        if busy:
            return "freed pages zeroed in the WAL only; checkpoint blocked by a reader"
        return "freed pages zeroed (SQLite secure_delete); WAL checkpointed"

    def _vacuum(self, tables: Sequence[Table]) -> str:
        if not self._physical_purge:
            return "VACUUM not run"

        quote = self._engine.dialect.identifier_preparer.format_table
        with self._engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            for name in dict.fromkeys(quote(t) for t in tables):
                conn.exec_driver_sql(f"VACUUM {name}")
        return "VACUUM run"

    # -- errors --------------------------------------------------------------

    def _blocked(
        self,
        exc: sa_exc.IntegrityError,
        targets: Sequence[Target],
        fks: Sequence[ForeignKey],
    ) -> ConnectorError:
        blockers = self._blockers(exc, targets, fks)
        named = ", ".join(blockers) if blockers else violated_constraint(exc)
        return ConnectorError(
            f"{self.system}: erase rolled back, nothing was deleted; blocked by "
            f"{named}; add the referencing table to the plan or resolve its rows "
            "first"
        )

    def _blockers(
        self,
        exc: sa_exc.IntegrityError,
        targets: Sequence[Target],
        fks: Sequence[ForeignKey],
    ) -> list[str]:
        diag = getattr(exc.orig, "diag", None)
        name = getattr(diag, "constraint_name", None)
        if name:
            return [fk.label() for fk in fks if fk.name == name] or [name]
        try:
            with self._engine.connect() as conn:
                return [fk.label() for fk in fks if blocks(conn, fk, targets)]
        except sa_exc.DBAPIError:
            return [fk.label() for fk in fks]


# -- statements --------------------------------------------------------------


def _count(conn: Connection, target: Target) -> int:
    query = select(func.count()).select_from(target.table)
    return sum(
        conn.execute(query.where(target.key.in_(chunk))).scalar_one()
        for chunk in chunks(target.keys)
    )


def _delete(conn: Connection, target: Target) -> int:
    statement = delete(target.table)
    return sum(
        conn.execute(statement.where(target.key.in_(chunk))).rowcount
        for chunk in chunks(target.keys)
    )


def _update(conn: Connection, target: Target, values: Mapping[str, Any]) -> int:
    statement = update(target.table).values(dict(values))
    return sum(
        conn.execute(statement.where(target.key.in_(chunk))).rowcount
        for chunk in chunks(target.keys)
    )


def _outcome(action: Action, records: int, detail: str) -> Outcome:
    return Outcome(
        status="done",
        action=action,
        records_affected=records,
        detail=detail,
        finished_at=datetime.now(UTC),
    )
