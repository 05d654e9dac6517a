"""The SQLite store behind the SAP emulator's two services.

``SapStore`` keeps one table per entity set of ``_sap_sets`` (business
partners and billing documents) and applies the rules the real system applies
on write: If-Match checks, fresh ETags, number ranges for new partners,
addresses, persons and billing documents, and copying a partner's name to its
customer. Billing documents are read-only over HTTP; ``add_billing_documents``
stands for SD billing, which creates them in the real system.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lethe.emulators._odata import (
    EntitySet,
    ODataError,
    bad_request,
    decode,
    etag_header,
    not_found,
    to_sql,
)
from lethe.emulators._sap_sets import BILLING_SETS, SETS

_ALL = {**SETS, **BILLING_SETS}


class SapStore:
    """Both services' entity sets in SQLite (``path=None``: in memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.RLock()
        target = ":memory:" if path is None else str(path)
        self._db = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            for spec in _ALL.values():
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
            for name in [*_ALL, "meta"]:
                self._db.execute(f'DELETE FROM "{name}"')  # noqa: S608

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def update_partner(self, bp: str, **fields: Any) -> None:
        """Change a partner as a clerk in SAP would (new ETag, no If-Match)."""
        changes = decode(SETS["A_BusinessPartner"], fields)
        self.update("A_BusinessPartner", {"BusinessPartner": bp}, changes, if_match="*")

    def add_billing_documents(
        self, documents: Iterable[Mapping[str, Any]]
    ) -> list[str]:
        """Bill customers as SD billing would; returns the new document numbers.

        Each document names ``SoldToParty`` (the customer number) and
        ``BillingDocumentDate`` and may set any other property, for example
        ``TotalNetAmount``, ``TransactionCurrency`` or
        ``BillingDocumentIsCancelled`` (a seed may be flagged cancelled without
        the S1 document that cancelled it). The rest is filled in as an invoice
        (F2) of company code 1010. All are added in one transaction, or none.
        """
        spec = BILLING_SETS["A_BillingDocument"]
        numbers = []
        with self._transaction():
            for document in documents:
                values = decode(spec, dict(document), allow=spec.readonly)
                if not values.get("SoldToParty") or not values.get(
                    "BillingDocumentDate"
                ):
                    raise bad_request(
                        "A billing document needs SoldToParty and BillingDocumentDate"
                    )
                number = values.get("BillingDocument") or str(
                    self._next("billing", 90000000)
                )
                self._insert(spec.name, _invoice(number, values) | values)
                numbers.append(number)
        return numbers

    def add_billing_document(
        self,
        customer: str,
        on: date | str,
        *,
        net_amount: str = "100.00",
        currency: str = "EUR",
        cancelled: bool = False,
    ) -> str:
        """One invoice for ``customer`` dated ``on``; returns its number."""
        document = {
            "SoldToParty": customer,
            "BillingDocumentDate": str(on),
            "TotalNetAmount": net_amount,
            "TransactionCurrency": currency,
            "BillingDocumentIsCancelled": cancelled,
        }
        return self.add_billing_documents([document])[0]

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
        for name in sorted(_ALL):
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
        spec = _ALL[name]
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
        where, params = _key_where(_ALL[name], key)
        found = self.rows(name, where, params)
        return found[0] if found else None

    def related(
        self, name: str, nav: str, row: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        link = _ALL[name].navs[nav]
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
        spec = _ALL[name]
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
        spec = _ALL[name]
        with self._transaction():
            row = self.get(name, key)
            if row is None:
                return False
            for nav, link in spec.navs.items():
                if link.many and name == "A_BusinessPartnerAddress":
                    for child in self.related(name, nav, row):
                        self.delete(link.target, _key_of(_ALL[link.target], child))
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
        spec = _ALL[name]
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


def _invoice(number: str, values: Mapping[str, Any]) -> dict[str, Any]:
    on = str(values["BillingDocumentDate"])
    return {
        "BillingDocument": number,
        "SDDocumentCategory": "M",
        "BillingDocumentCategory": "L",
        "BillingDocumentType": "F2",
        "CreationDate": on,
        "SalesOrganization": "1010",
        "CompanyCode": "1010",
        "FiscalYear": on[:4],
        "PayerParty": values["SoldToParty"],
        "TotalNetAmount": "0.00",
        "TransactionCurrency": "EUR",
    }


def _ddl(spec: EntitySet) -> str:
    kinds = {"s": "TEXT", "b": "INTEGER", "d": "TEXT", "n": "TEXT"}
    columns = [f'"{p}" {kinds[k]}' for p, (k, _) in spec.props.items()]
    if spec.etag:
        columns.append('"_etag" TEXT')
    keys = ", ".join(f'"{k}"' for k in spec.keys)
    columns.append(f"PRIMARY KEY ({keys})")
    return f'CREATE TABLE IF NOT EXISTS "{spec.name}" ({", ".join(columns)})'


def _default(kind: str) -> Any:
    return {"s": "", "b": False, "d": None, "n": "0.00"}[kind]


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
