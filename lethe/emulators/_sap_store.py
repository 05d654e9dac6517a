"""API_BUSINESS_PARTNER's entity sets and their SQLite store.

``SETS`` is the service's data model: each set's keys, properties with their
EDM kind and length, read-only properties, ``sap:creatable``/``deletable``
flags, ETag use and navigation links. ``SapStore`` keeps one table per set and
applies the rules the real system applies on write: If-Match checks, fresh
ETags, number ranges for new partners, addresses and persons, and copying a
partner's name to its customer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lethe.emulators._odata import (
    EntitySet,
    Nav,
    ODataError,
    bad_request,
    decode,
    etag_header,
    not_found,
    to_sql,
)

COMM_KEYS = {"AddressID": ("s", 10), "Person": ("s", 10), "OrdinalNumber": ("s", 3)}
SETS: dict[str, EntitySet] = {
    s.name: s
    for s in (
        EntitySet(
            "A_BusinessPartner",
            ("BusinessPartner",),
            {
                "BusinessPartner": ("s", 10),
                "Customer": ("s", 10),
                "BusinessPartnerCategory": ("s", 1),
                "BusinessPartnerFullName": ("s", 81),
                "FirstName": ("s", 40),
                "LastName": ("s", 40),
                "BirthDate": ("d", 0),
                "SearchTerm1": ("s", 20),
                "BusinessPartnerIsBlocked": ("b", 0),
                "IsMarkedForArchiving": ("b", 0),
                "BusinessPartnerIDByExtSystem": ("s", 20),
                "LastChangeDate": ("d", 0),
                "ETag": ("s", 26),
            },
            frozenset({"BusinessPartner", "Customer", "LastChangeDate", "ETag"}),
            deletable=False,
            etag=True,
            navs={
                "to_BusinessPartnerAddress": Nav(
                    "A_BusinessPartnerAddress",
                    True,
                    (("BusinessPartner", "BusinessPartner"),),
                ),
                "to_Customer": Nav("A_Customer", False, (("Customer", "Customer"),)),
            },
        ),
        EntitySet(
            "A_BusinessPartnerAddress",
            ("BusinessPartner", "AddressID"),
            {
                "BusinessPartner": ("s", 10),
                "AddressID": ("s", 10),
                "Person": ("s", 10),
                "FullName": ("s", 80),
                "StreetName": ("s", 60),
                "HouseNumber": ("s", 10),
                "PostalCode": ("s", 10),
                "CityName": ("s", 40),
                "Country": ("s", 3),
            },
            frozenset({"BusinessPartner", "AddressID", "Person"}),
            etag=True,
            navs={
                nav: Nav(
                    target, True, (("AddressID", "AddressID"), ("Person", "Person"))
                )
                for nav, target in (
                    ("to_EmailAddress", "A_AddressEmailAddress"),
                    ("to_PhoneNumber", "A_AddressPhoneNumber"),
                )
            },
        ),
        EntitySet(
            "A_AddressEmailAddress",
            tuple(COMM_KEYS),
            {
                **COMM_KEYS,
                "IsDefaultEmailAddress": ("b", 0),
                "EmailAddress": ("s", 241),
                "SearchEmailAddress": ("s", 20),
            },
            frozenset({*COMM_KEYS, "SearchEmailAddress"}),
        ),
        EntitySet(
            "A_AddressPhoneNumber",
            tuple(COMM_KEYS),
            {
                **COMM_KEYS,
                "DestinationLocationCountry": ("s", 3),
                "IsDefaultPhoneNumber": ("b", 0),
                "PhoneNumber": ("s", 30),
                "PhoneNumberExtension": ("s", 10),
                "InternationalPhoneNumber": ("s", 30),
                "PhoneNumberType": ("s", 1),
            },
            frozenset({*COMM_KEYS, "InternationalPhoneNumber"}),
        ),
        EntitySet(
            "A_Customer",
            ("Customer",),
            {
                "Customer": ("s", 10),
                "CustomerName": ("s", 80),
                "PostingIsBlocked": ("b", 0),
                "OrderIsBlockedForCustomer": ("s", 2),
                "DeliveryIsBlocked": ("s", 2),
                "BillingIsBlockedForCustomer": ("s", 2),
                "DeletionIndicator": ("b", 0),
            },
            frozenset({"Customer", "CustomerName"}),
            creatable=False,
            deletable=False,
            etag=True,
        ),
    )
}


class SapStore:
    """API_BUSINESS_PARTNER's entity sets in SQLite (``path=None``: in memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.RLock()
        target = ":memory:" if path is None else str(path)
        self._db = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            for spec in SETS.values():
                self._db.execute(_ddl(spec))
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER)"
            )

    def create_partner(
        self,
        *,
        first_name: str,
        last_name: str,
        email: str | None = None,
        phone: str | None = None,
        street: str | None = None,
        postal_code: str | None = None,
        city: str | None = None,
        country: str | None = None,
        ext_id: str | None = None,
        birth_date: date | str | None = None,
    ) -> str:
        """Add a person partner with one address and a customer; returns its id."""
        partner = {
            "BusinessPartnerCategory": "1",
            "FirstName": first_name,
            "LastName": last_name,
            "SearchTerm1": last_name.upper()[:20],
            "BusinessPartnerIDByExtSystem": ext_id or "",
            "BirthDate": str(birth_date) if birth_date else None,
        }
        address = {
            "StreetName": street or "",
            "PostalCode": postal_code or "",
            "CityName": city or "",
            "Country": country or "",
        }
        emails = [{"EmailAddress": email}] if email else []
        phones = [{"PhoneNumber": phone}] if phone else []
        return self.insert_tree(partner, [(address, emails, phones)], customer={})

    def partner(self, bp: str) -> dict[str, Any]:
        """One partner with its addresses (each with e-mails, phones) and customer."""
        row = self.get("A_BusinessPartner", {"BusinessPartner": bp})
        if row is None:
            raise KeyError("no such business partner")
        addresses = []
        for address in self.related(
            "A_BusinessPartner", "to_BusinessPartnerAddress", row
        ):
            address["emails"] = self.related(
                "A_BusinessPartnerAddress", "to_EmailAddress", address
            )
            address["phones"] = self.related(
                "A_BusinessPartnerAddress", "to_PhoneNumber", address
            )
            addresses.append(address)
        customers = self.related("A_BusinessPartner", "to_Customer", row)
        customer = customers[0] if customers else None
        return {**row, "addresses": addresses, "customer": customer}

    def reset(self) -> None:
        """Empty every entity set and restart the number ranges."""
        with self._transaction():
            for name in [*SETS, "meta"]:
                self._db.execute(f'DELETE FROM "{name}"')  # noqa: S608

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def update_partner(self, bp: str, **fields: Any) -> None:
        """Change a partner as a clerk in SAP would (new ETag, no If-Match)."""
        changes = decode(SETS["A_BusinessPartner"], fields)
        self.update("A_BusinessPartner", {"BusinessPartner": bp}, changes, if_match="*")

    def count(self) -> int:
        return self.count_rows("A_BusinessPartner")

    def checksum(self, exclude: Sequence[str] = ()) -> str:
        """SHA-256 over every entity, leaving out the given partners and theirs."""
        excluded = set(exclude)
        addresses = {
            (r["AddressID"], r["Person"])
            for r in self.rows("A_BusinessPartnerAddress")
            if r["BusinessPartner"] in excluded
        }
        customers = {
            r["Customer"]
            for r in self.rows("A_BusinessPartner")
            if r["BusinessPartner"] in excluded
        }
        digest = hashlib.sha256()
        for name in sorted(SETS):
            for row in self.rows(name):
                if _owned_by(row, excluded, addresses, customers):
                    continue
                digest.update(json.dumps([name, row], sort_keys=True).encode())
        return digest.hexdigest()

    # -- entity-set level, used by the OData app --------------------------------

    def rows(
        self,
        name: str,
        where: str = "",
        params: Sequence[Any] = (),
        *,
        order: Sequence[tuple[str, bool]] = (),
        limit: int = -1,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        spec = SETS[name]
        clauses = [f'"{c}" {"DESC" if desc else "ASC"}' for c, desc in order]
        clauses += [f'"{k}" ASC' for k in spec.keys]
        # Identifiers come from the entity-set allow-list; values are bound.
        sql = (
            f'SELECT * FROM "{name}" {"WHERE " + where if where else ""} '  # noqa: S608
            f"ORDER BY {', '.join(clauses)} LIMIT ? OFFSET ?"
        )
        with self._lock:
            found = self._db.execute(sql, [*params, limit, offset]).fetchall()
        return [_from_sql(spec, r) for r in found]

    def count_rows(self, name: str, where: str = "", params: Sequence[Any] = ()) -> int:
        sql = f'SELECT COUNT(*) FROM "{name}" {"WHERE " + where if where else ""}'  # noqa: S608
        with self._lock:
            return int(self._db.execute(sql, list(params)).fetchone()[0])

    def get(self, name: str, key: Mapping[str, str]) -> dict[str, Any] | None:
        where, params = _key_where(SETS[name], key)
        found = self.rows(name, where, params)
        return found[0] if found else None

    def related(
        self, name: str, nav: str, row: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        link = SETS[name].navs[nav]
        if any(not row[source] for source, _ in link.on):
            return []
        where = " AND ".join(f'"{target}" = ?' for _, target in link.on)
        return self.rows(link.target, where, [row[source] for source, _ in link.on])

    def insert_tree(
        self,
        partner: Mapping[str, Any],
        addresses: Sequence[
            tuple[Mapping[str, Any], Sequence[Mapping], Sequence[Mapping]]
        ],
        *,
        customer: Mapping[str, Any] | None,
    ) -> str:
        """Insert a partner with its addresses, e-mails, phones and customer."""
        with self._transaction():
            bp = partner.get("BusinessPartner") or str(self._next("partner", 1000000))
            if self.get("A_BusinessPartner", {"BusinessPartner": bp}) is not None:
                raise bad_request(f"Business partner {bp} already exists")
            full = (
                f"{partner.get('FirstName', '')} {partner.get('LastName', '')}".strip()
            )
            person = str(self._next("person", 9980000000))
            self._insert(
                "A_BusinessPartner",
                {"BusinessPartnerFullName": full, **partner, "BusinessPartner": bp}
                | {"Customer": bp if customer is not None else ""},
            )
            for address, emails, phones in addresses:
                self._insert_address(bp, person, full, address, emails, phones)
            if customer is not None:
                self._insert(
                    "A_Customer", {**customer, "Customer": bp, "CustomerName": full}
                )
        return bp

    def update(
        self,
        name: str,
        key: Mapping[str, str],
        changes: Mapping[str, Any],
        *,
        if_match: str | None,
    ) -> dict[str, Any]:
        """Apply changes after the If-Match check; returns the new row."""
        spec = SETS[name]
        with self._transaction():
            row = self.get(name, key)
            if row is None:
                raise not_found(name)
            _check_if_match(spec, row, if_match)
            values = dict(changes)
            if spec.etag:
                values["_etag"] = self._new_etag()
            if name == "A_BusinessPartner":
                values |= {"ETag": values["_etag"], "LastChangeDate": str(date.today())}
            self._set(spec, key, values)
            if name == "A_BusinessPartner" and row["Customer"]:
                self._sync_customer_name(row["Customer"], {**row, **values})
            return self.get(name, key) or {}

    def delete(self, name: str, key: Mapping[str, str]) -> bool:
        spec = SETS[name]
        with self._transaction():
            row = self.get(name, key)
            if row is None:
                return False
            for nav, link in spec.navs.items():
                if link.many and name == "A_BusinessPartnerAddress":
                    for child in self.related(name, nav, row):
                        self.delete(link.target, _key_of(SETS[link.target], child))
            where, params = _key_where(spec, key)
            self._db.execute(f'DELETE FROM "{name}" WHERE {where}', params)  # noqa: S608
            return True

    # -- internals ----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _next(self, counter: str, start: int) -> int:
        with self._transaction():
            found = self._db.execute(
                "SELECT value FROM meta WHERE name = ?", [counter]
            ).fetchone()
            value = start if found is None else int(found[0])
            self._db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                [counter, value + 1],
            )
            return value

    def _new_etag(self) -> str:
        return f"{datetime.now(UTC):%Y%m%d%H%M%S}.{self._next('revision', 1):07d}"

    def _insert(self, name: str, values: Mapping[str, Any]) -> None:
        spec = SETS[name]
        row = {p: _default(kind) for p, (kind, _) in spec.props.items()} | dict(values)
        if spec.etag:
            row["_etag"] = self._new_etag()
        if name == "A_BusinessPartner":
            row |= {"ETag": row["_etag"], "LastChangeDate": str(date.today())}
        columns = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" for _ in row)
        self._db.execute(
            f'INSERT INTO "{name}" ({columns}) VALUES ({marks})',  # noqa: S608
            [to_sql(v) for v in row.values()],
        )

    def _insert_address(
        self,
        bp: str,
        person: str,
        full_name: str,
        address: Mapping[str, Any],
        emails: Sequence[Mapping[str, Any]],
        phones: Sequence[Mapping[str, Any]],
    ) -> None:
        address_id = str(self._next("address", 22000))
        keys = {"AddressID": address_id, "Person": person}
        self._insert(
            "A_BusinessPartnerAddress",
            {"FullName": full_name, **address, "BusinessPartner": bp, **keys},
        )
        for n, email in enumerate(emails, start=1):
            text = email.get("EmailAddress", "")
            self._insert(
                "A_AddressEmailAddress",
                {"IsDefaultEmailAddress": n == 1, **email, **keys}
                | {"OrdinalNumber": str(n), "SearchEmailAddress": text.upper()[:20]},
            )
        for n, phone in enumerate(phones, start=1):
            defaults = {"IsDefaultPhoneNumber": n == 1, "PhoneNumberType": "1"}
            defaults["DestinationLocationCountry"] = address.get("Country", "")
            self._insert(
                "A_AddressPhoneNumber",
                {**defaults, **phone, **keys, "OrdinalNumber": str(n)}
                | {"InternationalPhoneNumber": phone.get("PhoneNumber", "")},
            )

    def _set(self, spec: EntitySet, key: Mapping[str, str], values: Mapping) -> None:
        if spec.name == "A_AddressEmailAddress" and "EmailAddress" in values:
            values = {
                **values,
                "SearchEmailAddress": values["EmailAddress"].upper()[:20],
            }
        if spec.name == "A_AddressPhoneNumber" and "PhoneNumber" in values:
            values = {**values, "InternationalPhoneNumber": values["PhoneNumber"]}
        if not values:
            return
        where, params = _key_where(spec, key)
        assignments = ", ".join(f'"{c}" = ?' for c in values)
        self._db.execute(
            f'UPDATE "{spec.name}" SET {assignments} WHERE {where}',  # noqa: S608
            [*(to_sql(v) for v in values.values()), *params],
        )

    def _sync_customer_name(self, customer: str, partner: Mapping[str, Any]) -> None:
        name = str(partner["BusinessPartnerFullName"])[:80]
        self._set(SETS["A_Customer"], {"Customer": customer}, {"CustomerName": name})


def _ddl(spec: EntitySet) -> str:
    kinds = {"s": "TEXT", "b": "INTEGER", "d": "TEXT"}
    columns = [f'"{p}" {kinds[k]}' for p, (k, _) in spec.props.items()]
    if spec.etag:
        columns.append('"_etag" TEXT')
    keys = ", ".join(f'"{k}"' for k in spec.keys)
    columns.append(f"PRIMARY KEY ({keys})")
    return f'CREATE TABLE IF NOT EXISTS "{spec.name}" ({", ".join(columns)})'


def _default(kind: str) -> Any:
    return {"s": "", "b": False, "d": None}[kind]


def _from_sql(spec: EntitySet, row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for prop, (kind, _) in spec.props.items():
        if kind == "b":
            out[prop] = bool(out[prop])
    return out


def _key_where(spec: EntitySet, key: Mapping[str, str]) -> tuple[str, list[str]]:
    if set(key) != set(spec.keys):
        raise bad_request(f"The key of {spec.name} is {', '.join(spec.keys)}")
    return " AND ".join(f'"{k}" = ?' for k in spec.keys), [key[k] for k in spec.keys]


def _key_of(spec: EntitySet, row: Mapping[str, Any]) -> dict[str, str]:
    return {k: row[k] for k in spec.keys}


def _owned_by(row: Mapping, partners: set[str], addresses: set, customers: set) -> bool:
    if row.get("BusinessPartner") in partners:
        return True
    if (row.get("AddressID"), row.get("Person")) in addresses:
        return True
    return "CustomerName" in row and row["Customer"] in customers


def _check_if_match(
    spec: EntitySet, row: Mapping[str, Any], if_match: str | None
) -> None:
    if not spec.etag or if_match == "*":
        return
    if if_match is None:
        raise ODataError(
            428,
            "/IWBEP/CM_MGW_RT/PRECONDITION_REQUIRED",
            "Data service request is required to be conditional; use If-Match",
        )
    current = etag_header(row["_etag"])
    if if_match.strip() not in (current, current.removeprefix("W/")):
        raise ODataError(
            412,
            "/IWBEP/CM_MGW_RT/190",
            "State of the resource (entity) was already changed (If-Match)",
        )
