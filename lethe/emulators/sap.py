"""Loopback emulator of SAP S/4HANA's API_BUSINESS_PARTNER service (OData V2).

The ERP connector blocks and anonymises business partners instead of deleting
them, so what it must get right is SAP's gatekeeping: Basic auth, the CSRF
token handshake, optimistic concurrency with ETags, and the EDMX flags that
forbid deleting a partner. This emulator enforces those as documented
(vendor-apis.md §2.1, the API_BUSINESS_PARTNER EDMX):

- service root ``/sap/opu/odata/sap/API_BUSINESS_PARTNER``, ``$metadata`` as a
  minimal EDMX carrying ``sap:creatable/updatable/deletable``;
- verbose JSON: ``{"d": {"results": [...]}}`` for collections, ``{"d": {...}}``
  for one entity, ``__metadata`` with ``uri``, ``type`` and ``etag``,
  ``__deferred`` navigation links, ``__count`` and ``__next`` server paging;
- ``$filter`` (``eq``/``ne`` joined by ``and``/``or``, parentheses, ``''``
  escapes), ``$select``, ``$expand``, ``$orderby``, ``$top``, ``$skip``,
  ``$inlinecount=allpages``;
- writes need the token from a ``GET`` with ``x-csrf-token: Fetch`` plus the
  session cookie, else 403 with ``x-csrf-token: Required``;
- PATCH/MERGE on partners, addresses and customers need ``If-Match`` (the
  entity's etag or ``*``): missing → 428, stale → 412, success → 204;
- ``A_BusinessPartner`` and ``A_Customer`` are ``sap:deletable="false"``; a
  DELETE on them answers 405 Method Not Allowed with an ``Allow`` header, the
  HTTP reading of a resource that exists but refuses the method (gateway
  releases differ: some answer 403 or 501; the connector never sends one);
- a change to a partner's name is copied to its customer's ``CustomerName``,
  as S/4HANA's customer-vendor integration does.

Error codes are representative: ``/IWBEP/CM_MGW_RT/190`` is SAP's If-Match
message, the others are named after their condition. Not emulated: Atom/XML
payloads (JSON is returned whatever the Accept header), ``$batch``, ``$count``,
PUT, POST to any set but ``A_BusinessPartner``, filter functions and comparisons
other than eq/ne, suppliers, roles and banks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._server import Faults, install_faults

SERVICE_ROOT = "/sap/opu/odata/sap/API_BUSINESS_PARTNER"
NAMESPACE = "API_BUSINESS_PARTNER"
SESSION_COOKIE = "SAP_SESSIONID_EMU_100"
_WRITES = ("POST", "PUT", "PATCH", "MERGE", "DELETE")


@dataclass(frozen=True)
class _Nav:
    target: str
    many: bool
    on: tuple[tuple[str, str], ...]  # (source property, target property)


@dataclass(frozen=True)
class _EntitySet:
    name: str
    keys: tuple[str, ...]
    props: dict[str, tuple[str, int]]  # name -> (s|b|d, max length)
    readonly: frozenset[str] = frozenset()
    creatable: bool = True
    deletable: bool = True
    etag: bool = False
    navs: dict[str, _Nav] = field(default_factory=dict)


_COMM_KEYS = {"AddressID": ("s", 10), "Person": ("s", 10), "OrdinalNumber": ("s", 3)}
_SETS: dict[str, _EntitySet] = {
    s.name: s
    for s in (
        _EntitySet(
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
                "to_BusinessPartnerAddress": _Nav(
                    "A_BusinessPartnerAddress",
                    True,
                    (("BusinessPartner", "BusinessPartner"),),
                ),
                "to_Customer": _Nav("A_Customer", False, (("Customer", "Customer"),)),
            },
        ),
        _EntitySet(
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
                nav: _Nav(
                    target, True, (("AddressID", "AddressID"), ("Person", "Person"))
                )
                for nav, target in (
                    ("to_EmailAddress", "A_AddressEmailAddress"),
                    ("to_PhoneNumber", "A_AddressPhoneNumber"),
                )
            },
        ),
        _EntitySet(
            "A_AddressEmailAddress",
            tuple(_COMM_KEYS),
            {
                **_COMM_KEYS,
                "IsDefaultEmailAddress": ("b", 0),
                "EmailAddress": ("s", 241),
                "SearchEmailAddress": ("s", 20),
            },
            frozenset({*_COMM_KEYS, "SearchEmailAddress"}),
        ),
        _EntitySet(
            "A_AddressPhoneNumber",
            tuple(_COMM_KEYS),
            {
                **_COMM_KEYS,
                "DestinationLocationCountry": ("s", 3),
                "IsDefaultPhoneNumber": ("b", 0),
                "PhoneNumber": ("s", 30),
                "PhoneNumberExtension": ("s", 10),
                "InternationalPhoneNumber": ("s", 30),
                "PhoneNumberType": ("s", 1),
            },
            frozenset({*_COMM_KEYS, "InternationalPhoneNumber"}),
        ),
        _EntitySet(
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


class ODataError(Exception):
    """An OData V2 error answer: status, SAP-style code and English message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "code": self.code,
                "message": {"lang": "en", "value": self.message},
                "innererror": {"transactionid": secrets.token_hex(16).upper()},
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _bad_request(message: str) -> ODataError:
    return ODataError(400, "/IWBEP/CM_MGW_RT/BAD_REQUEST", message)


def _not_found(segment: str) -> ODataError:
    return ODataError(
        404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for the segment '{segment}'."
    )


def _etag_header(value: str) -> str:
    return f"W/\"'{value}'\""


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
            for spec in _SETS.values():
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
            for name in [*_SETS, "meta"]:
                self._db.execute(f'DELETE FROM "{name}"')  # noqa: S608

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def update_partner(self, bp: str, **fields: Any) -> None:
        """Change a partner as a clerk in SAP would (new ETag, no If-Match)."""
        changes = _decode(_SETS["A_BusinessPartner"], fields)
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
        for name in sorted(_SETS):
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
        spec = _SETS[name]
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
        where, params = _key_where(_SETS[name], key)
        found = self.rows(name, where, params)
        return found[0] if found else None

    def related(
        self, name: str, nav: str, row: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        link = _SETS[name].navs[nav]
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
                raise _bad_request(f"Business partner {bp} already exists")
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
        spec = _SETS[name]
        with self._transaction():
            row = self.get(name, key)
            if row is None:
                raise _not_found(name)
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
        spec = _SETS[name]
        with self._transaction():
            row = self.get(name, key)
            if row is None:
                return False
            for nav, link in spec.navs.items():
                if link.many and name == "A_BusinessPartnerAddress":
                    for child in self.related(name, nav, row):
                        self.delete(link.target, _key_of(_SETS[link.target], child))
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
        spec = _SETS[name]
        row = {p: _default(kind) for p, (kind, _) in spec.props.items()} | dict(values)
        if spec.etag:
            row["_etag"] = self._new_etag()
        if name == "A_BusinessPartner":
            row |= {"ETag": row["_etag"], "LastChangeDate": str(date.today())}
        columns = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" for _ in row)
        self._db.execute(
            f'INSERT INTO "{name}" ({columns}) VALUES ({marks})',  # noqa: S608
            [_to_sql(v) for v in row.values()],
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

    def _set(self, spec: _EntitySet, key: Mapping[str, str], values: Mapping) -> None:
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
            [*(_to_sql(v) for v in values.values()), *params],
        )

    def _sync_customer_name(self, customer: str, partner: Mapping[str, Any]) -> None:
        name = str(partner["BusinessPartnerFullName"])[:80]
        self._set(_SETS["A_Customer"], {"Customer": customer}, {"CustomerName": name})


def _ddl(spec: _EntitySet) -> str:
    kinds = {"s": "TEXT", "b": "INTEGER", "d": "TEXT"}
    columns = [f'"{p}" {kinds[k]}' for p, (k, _) in spec.props.items()]
    if spec.etag:
        columns.append('"_etag" TEXT')
    keys = ", ".join(f'"{k}"' for k in spec.keys)
    columns.append(f"PRIMARY KEY ({keys})")
    return f'CREATE TABLE IF NOT EXISTS "{spec.name}" ({", ".join(columns)})'


def _default(kind: str) -> Any:
    return {"s": "", "b": False, "d": None}[kind]


def _to_sql(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _from_sql(spec: _EntitySet, row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for prop, (kind, _) in spec.props.items():
        if kind == "b":
            out[prop] = bool(out[prop])
    return out


def _key_where(spec: _EntitySet, key: Mapping[str, str]) -> tuple[str, list[str]]:
    if set(key) != set(spec.keys):
        raise _bad_request(f"The key of {spec.name} is {', '.join(spec.keys)}")
    return " AND ".join(f'"{k}" = ?' for k in spec.keys), [key[k] for k in spec.keys]


def _key_of(spec: _EntitySet, row: Mapping[str, Any]) -> dict[str, str]:
    return {k: row[k] for k in spec.keys}


def _owned_by(row: Mapping, partners: set[str], addresses: set, customers: set) -> bool:
    if row.get("BusinessPartner") in partners:
        return True
    if (row.get("AddressID"), row.get("Person")) in addresses:
        return True
    return "CustomerName" in row and row["Customer"] in customers


def _check_if_match(
    spec: _EntitySet, row: Mapping[str, Any], if_match: str | None
) -> None:
    if not spec.etag or if_match == "*":
        return
    if if_match is None:
        raise ODataError(
            428,
            "/IWBEP/CM_MGW_RT/PRECONDITION_REQUIRED",
            "Data service request is required to be conditional; use If-Match",
        )
    current = _etag_header(row["_etag"])
    if if_match.strip() not in (current, current.removeprefix("W/")):
        raise ODataError(
            412,
            "/IWBEP/CM_MGW_RT/190",
            "State of the resource (entity) was already changed (If-Match)",
        )


# -- OData V2 wire format -------------------------------------------------------

_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_TOKEN = re.compile(r"\s*(?:(\()|(\))|('(?:[^']|'')*')|([A-Za-z_][\w]*)|(-?\d+))")


def _date_json(value: str | None) -> str | None:
    if value is None:
        return None
    moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    return f"/Date({int(moment.timestamp() * 1000)})/"


def _decode_value(prop: str, kind: str, limit: int, value: Any) -> Any:
    if kind == "b":
        if not isinstance(value, bool):
            raise _bad_request(f"Property '{prop}' expects a boolean")
        return value
    if kind == "d":
        return _decode_date(prop, value)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise _bad_request(f"Property '{prop}' expects a string of at most {limit}")
    return value


def _decode_date(prop: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    match = _DATE.match(text)
    try:
        if match:
            return str(datetime.fromtimestamp(int(match[1]) / 1000, UTC).date())
        return str(datetime.fromisoformat(text).date())
    except ValueError:
        raise _bad_request(f"Property '{prop}' has an invalid Edm.DateTime") from None


def _decode(
    spec: _EntitySet, payload: Any, *, allow: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _bad_request(f"The payload for {spec.name} must be a JSON object")
    out = {}
    for prop, value in payload.items():
        if prop == "__metadata" or prop in spec.navs:
            continue
        if prop not in spec.props:
            raise _bad_request(f"Property '{prop}' is invalid for {spec.name}")
        if prop in spec.readonly and prop not in allow:
            raise _bad_request(f"Property '{prop}' is read-only")
        out[prop] = _decode_value(prop, *spec.props[prop], value)
    return out


def _nav_items(payload: Mapping[str, Any], nav: str) -> list[Any]:
    value = payload.get(nav) or []
    items = value.get("results", []) if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise _bad_request(f"Navigation property '{nav}' expects a collection")
    return items


def _compile_filter(text: str | None, spec: _EntitySet) -> tuple[str, list[Any]]:
    """Turn ``Field eq 'v' and (A eq 'x' or B ne true)`` into bound SQL."""
    if not text:
        return "", []
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _bad_request("Invalid $filter expression")
        tokens.append(match)
        pos = match.end()
    parser = _FilterParser(tokens, spec)
    sql = parser.expression()
    if parser.pos != len(tokens):
        raise _bad_request("Invalid $filter expression")
    return sql, parser.params


class _FilterParser:
    def __init__(self, tokens: list[re.Match[str]], spec: _EntitySet) -> None:
        self.tokens, self.spec, self.pos = tokens, spec, 0
        self.params: list[Any] = []

    def _peek_word(self) -> str | None:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos][4]
        return None

    def _take(self) -> re.Match[str]:
        if self.pos >= len(self.tokens):
            raise _bad_request("Invalid $filter expression: it ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expression(self) -> str:
        parts = [self._conjunction()]
        while self._peek_word() == "or":
            self.pos += 1
            parts.append(self._conjunction())
        return "(" + " OR ".join(parts) + ")"

    def _conjunction(self) -> str:
        parts = [self._comparison()]
        while self._peek_word() == "and":
            self.pos += 1
            parts.append(self._comparison())
        return "(" + " AND ".join(parts) + ")"

    def _comparison(self) -> str:
        token = self._take()
        if token[1]:
            inner = self.expression()
            if not self._take()[2]:
                raise _bad_request("Invalid $filter expression: ')' expected")
            return inner
        prop, operator = token[4], self._take()[4]
        if prop not in self.spec.props:
            raise _bad_request(f"Property '{prop}' not found in {self.spec.name}")
        if operator not in ("eq", "ne"):
            raise _bad_request("Only 'eq' and 'ne' comparisons are supported")
        value = self._literal(self._take())
        if value is None:
            return f'"{prop}" IS {"NOT " if operator == "ne" else ""}NULL'
        self.params.append(_to_sql(value))
        return f'"{prop}" {"=" if operator == "eq" else "<>"} ?'

    @staticmethod
    def _literal(token: re.Match[str]) -> Any:
        if token[3]:
            return token[3][1:-1].replace("''", "'")
        if token[5]:
            return int(token[5])
        words = {"true": True, "false": False, "null": None}
        if token[4] in words:
            return words[token[4]]
        raise _bad_request("Invalid literal in $filter")


def _parse_expand(text: str | None, spec: _EntitySet) -> dict[str, dict]:
    tree: dict[str, dict] = {}
    for path in filter(None, (p.strip() for p in (text or "").split(","))):
        node, current = tree, spec
        for nav in path.split("/"):
            if nav not in current.navs:
                raise _bad_request(f"Navigation property '{nav}' not found")
            node = node.setdefault(nav, {})
            current = _SETS[current.navs[nav].target]
    return tree


def _parse_select(text: str | None, spec: _EntitySet) -> set[str] | None:
    if not text or text.strip() == "*":
        return None
    chosen = {p.strip() for p in text.split(",") if p.strip()}
    unknown = chosen - set(spec.props) - set(spec.navs)
    if unknown:
        raise _bad_request(f"Property '{sorted(unknown)[0]}' not found in $select")
    return chosen


def _parse_orderby(text: str | None, spec: _EntitySet) -> list[tuple[str, bool]]:
    order = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        prop, _, direction = part.partition(" ")
        if prop not in spec.props or direction.strip() not in ("", "asc", "desc"):
            raise _bad_request("Invalid $orderby")
        order.append((prop, direction.strip() == "desc"))
    return order


def _split_resource(resource: str) -> tuple[str, dict[str, str] | None, str | None]:
    """``A_Set(Key='v',K2='w')/to_Nav`` → (set, key or None, nav or None)."""
    name, rest = re.match(r"([^(/]*)(.*)", resource).groups()  # type: ignore[union-attr]
    key = None
    if rest.startswith("("):
        end, quoted = 1, False
        while end < len(rest) and (quoted or rest[end] != ")"):
            quoted = quoted != (rest[end] == "'")
            end += 1
        if end >= len(rest):
            raise _bad_request("Malformed key predicate")
        key, rest = _parse_key(rest[1:end]), rest[end + 1 :]
    if rest and not re.fullmatch(r"/\w+", rest):
        raise _not_found(rest.strip("/"))
    return name, key, rest[1:] or None


def _parse_key(text: str) -> dict[str, str]:
    parts = re.findall(r"(?:(\w+)=)?'((?:[^']|'')*)'\s*(?:,|$)", text)
    if not parts:
        raise _bad_request("Key values must be quoted strings")
    return {name: value.replace("''", "'") for name, value in parts}


class _Sessions:
    """CSRF tokens bound to session cookies, in memory (a restart ends them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}

    def fetch(self, session: str | None) -> tuple[str, str]:
        with self._lock:
            if session not in self._tokens:
                session = secrets.token_urlsafe(24)
                self._tokens[session] = secrets.token_urlsafe(18)
            return session, self._tokens[session]

    def valid(self, session: str | None, token: str | None) -> bool:
        with self._lock:
            expected = self._tokens.get(session or "")
        return bool(expected and token and hmac.compare_digest(expected, token))

    def expire_all(self) -> None:
        with self._lock:
            self._tokens.clear()


class _Service:
    def __init__(
        self,
        store: SapStore,
        sessions: _Sessions,
        user: str,
        password: str,
        page_size: int,
    ) -> None:
        self.store, self.sessions, self.page_size = store, sessions, page_size
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._authorization = f"Basic {credentials}"

    async def __call__(self, request: Request, resource: str = "") -> Response:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), self._authorization.encode()):
            return Response(
                "Logon failed",
                status_code=401,
                headers={
                    "WWW-Authenticate": 'Basic realm="SAP NetWeaver Application Server"'
                },
            )
        try:
            self._check_csrf(request)
            response = await self._route(request, resource)
        except ODataError as exc:
            response = exc.response()
        if request.method == "GET" and _is_fetch(request):
            session, token = self.sessions.fetch(request.cookies.get(SESSION_COOKIE))
            response.headers["x-csrf-token"] = token
            response.set_cookie(SESSION_COOKIE, session, path="/", httponly=True)
        return response

    def _check_csrf(self, request: Request) -> None:
        if request.method not in _WRITES:
            return
        session = request.cookies.get(SESSION_COOKIE)
        if not self.sessions.valid(session, request.headers.get("x-csrf-token")):
            raise ODataError(
                403,
                "/IWFND/CM_MGW/CSRF_TOKEN",
                "CSRF token validation failed",
                {"x-csrf-token": "Required"},
            )

    async def _route(self, request: Request, resource: str) -> Response:
        method = request.method
        if resource.strip("/") in ("", "$metadata"):
            if method != "GET":
                raise ODataError(405, "/IWBEP/CM_MGW_RT/METHOD", "Method not allowed")
            return _metadata() if resource.strip("/") else _service_document()
        name, key, nav = _split_resource(resource)
        if name not in _SETS:
            raise _not_found(name)
        spec = _SETS[name]
        if key is not None:
            key = _normalise_key(spec, key)
        if method == "GET":
            return self._get(request, spec, key, nav, resource)
        if nav is not None:
            raise ODataError(501, "/IWBEP/CM_MGW_RT/NOT_EMULATED", "Not emulated")
        if method == "POST" and key is None:
            return await self._create(request, spec)
        if method in ("PATCH", "MERGE") and key is not None:
            return await self._update(request, spec, key)
        if method == "DELETE" and key is not None:
            return self._delete(spec, key)
        raise ODataError(
            501, "/IWBEP/CM_MGW_RT/NOT_EMULATED", f"{method} is not emulated"
        )

    def _get(
        self,
        request: Request,
        spec: _EntitySet,
        key: dict[str, str] | None,
        nav: str | None,
        resource: str,
    ) -> Response:
        base = str(request.base_url).rstrip("/") + SERVICE_ROOT
        if key is None:
            return self._collection(request, spec, "", [], base, resource)
        row = self.store.get(spec.name, key)
        if row is None:
            raise _not_found(spec.name)
        if nav is None:
            expand = _parse_expand(request.query_params.get("$expand"), spec)
            select = _parse_select(request.query_params.get("$select"), spec)
            entity = self._entity(spec, row, base, expand, select)
            headers = {"etag": entity["__metadata"]["etag"]} if spec.etag else {}
            return JSONResponse({"d": entity}, headers=headers)
        if nav not in spec.navs:
            raise _not_found(nav)
        link = spec.navs[nav]
        where = " AND ".join(f'"{target}" = ?' for _, target in link.on)
        params = [row[source] for source, _ in link.on]
        return self._collection(
            request, _SETS[link.target], where, params, base, resource
        )

    def _collection(
        self,
        request: Request,
        spec: _EntitySet,
        where: str,
        params: list[Any],
        base: str,
        resource: str,
    ) -> Response:
        query = request.query_params
        filter_sql, filter_params = _compile_filter(query.get("$filter"), spec)
        where = " AND ".join(f"({w})" for w in (where, filter_sql) if w)
        params = [*params, *filter_params]
        top, skip = _int_option(query, "$top"), _int_option(query, "$skip") or 0
        token = _int_option(query, "$skiptoken") or 0
        want = (
            self.page_size if top is None else max(0, min(self.page_size, top - token))
        )
        rows = self.store.rows(
            spec.name,
            where,
            params,
            order=_parse_orderby(query.get("$orderby"), spec),
            limit=want + 1,
            offset=skip + token,
        )
        expand = _parse_expand(query.get("$expand"), spec)
        select = _parse_select(query.get("$select"), spec)
        body: dict[str, Any] = {
            "results": [
                self._entity(spec, r, base, expand, select) for r in rows[:want]
            ]
        }
        if query.get("$inlinecount") not in (None, "none", "allpages"):
            raise _bad_request("$inlinecount must be allpages or none")
        if query.get("$inlinecount") == "allpages":
            body["__count"] = str(self.store.count_rows(spec.name, where, params))
        if len(rows) > want and (top is None or token + want < top):
            options = [(k, v) for k, v in query.multi_items() if k != "$skiptoken"]
            options.append(("$skiptoken", str(token + want)))
            body["__next"] = f"{base}/{resource}?{urlencode(options)}"
        return JSONResponse({"d": body})

    def _entity(
        self,
        spec: _EntitySet,
        row: Mapping[str, Any],
        base: str,
        expand: Mapping[str, dict],
        select: set[str] | None = None,
    ) -> dict[str, Any]:
        uri = f"{base}/{spec.name}({_key_predicate(spec, row)})"
        meta = {"id": uri, "uri": uri, "type": f"{NAMESPACE}.{spec.name}Type"}
        if spec.etag:
            meta["etag"] = _etag_header(row["_etag"])
        out: dict[str, Any] = {"__metadata": meta}
        for prop, (kind, _) in spec.props.items():
            if select is None or prop in select:
                out[prop] = _date_json(row[prop]) if kind == "d" else row[prop]
        for nav, link in spec.navs.items():
            if nav in expand:
                target = _SETS[link.target]
                children = [
                    self._entity(target, child, base, expand[nav])
                    for child in self.store.related(spec.name, nav, row)
                ]
                single = children[0] if children else None
                out[nav] = {"results": children} if link.many else single
            elif select is None:
                out[nav] = {"__deferred": {"uri": f"{uri}/{nav}"}}
        return out

    async def _create(self, request: Request, spec: _EntitySet) -> Response:
        if spec.name != "A_BusinessPartner":
            if not spec.creatable:
                raise ODataError(
                    405, "/IWBEP/CM_MGW_RT/METHOD", "Entity set is not creatable"
                )
            raise ODataError(
                501, "/IWBEP/CM_MGW_RT/NOT_EMULATED", "Create is not emulated"
            )
        payload = await _json_body(request)
        partner = _decode(spec, payload, allow=frozenset({"BusinessPartner"}))
        if partner.get("BusinessPartnerCategory") not in ("1", "2", "3"):
            raise _bad_request("BusinessPartnerCategory must be 1, 2 or 3")
        address_spec = _SETS["A_BusinessPartnerAddress"]
        addresses = []
        for item in _nav_items(payload, "to_BusinessPartnerAddress"):
            address = _decode(address_spec, item, allow=address_spec.readonly)
            emails = [
                _decode(_SETS["A_AddressEmailAddress"], e, allow=frozenset(_COMM_KEYS))
                for e in _nav_items(item, "to_EmailAddress")
            ]
            phones = [
                _decode(_SETS["A_AddressPhoneNumber"], p, allow=frozenset(_COMM_KEYS))
                for p in _nav_items(item, "to_PhoneNumber")
            ]
            addresses.append(
                (_drop(address, _COMM_KEYS), _drop_all(emails), _drop_all(phones))
            )
        customer = payload.get("to_Customer")
        if customer is not None:
            customer = _decode(
                _SETS["A_Customer"], customer, allow=frozenset({"Customer"})
            )
            customer.pop("Customer", None)
        bp = self.store.insert_tree(partner, addresses, customer=customer)
        row = self.store.get(spec.name, {"BusinessPartner": bp}) or {}
        base = str(request.base_url).rstrip("/") + SERVICE_ROOT
        expand = _parse_expand(
            "to_BusinessPartnerAddress/to_EmailAddress,"
            "to_BusinessPartnerAddress/to_PhoneNumber,to_Customer",
            spec,
        )
        entity = self._entity(spec, row, base, expand)
        headers = {
            "location": entity["__metadata"]["uri"],
            "etag": entity["__metadata"]["etag"],
        }
        return JSONResponse({"d": entity}, status_code=201, headers=headers)

    async def _update(
        self, request: Request, spec: _EntitySet, key: dict[str, str]
    ) -> Response:
        changes = _decode(spec, await _json_body(request), allow=frozenset(spec.keys))
        for prop in spec.keys:
            if prop in changes and changes.pop(prop) != key.get(prop):
                raise _bad_request(f"Key property '{prop}' cannot be changed")
        row = self.store.update(
            spec.name, key, changes, if_match=request.headers.get("if-match")
        )
        headers = {"etag": _etag_header(row["_etag"])} if spec.etag else {}
        return Response(status_code=204, headers=headers)

    def _delete(self, spec: _EntitySet, key: dict[str, str]) -> Response:
        if not spec.deletable:
            raise ODataError(
                405,
                "/IWBEP/CM_MGW_RT/NOT_DELETABLE",
                f"Entity set {spec.name} is not deletable (sap:deletable=false)",
                {"Allow": "GET, PATCH, MERGE"},
            )
        if not self.store.delete(spec.name, key):
            raise _not_found(spec.name)
        return Response(status_code=204)


def _normalise_key(spec: _EntitySet, key: dict[str, str]) -> dict[str, str]:
    if len(spec.keys) == 1 and list(key) == [""]:
        return {spec.keys[0]: key[""]}
    return key


def _drop(values: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in values.items() if k not in names and k != "BusinessPartner"
    }


def _drop_all(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_drop(item, _COMM_KEYS) for item in items]


def _key_predicate(spec: _EntitySet, row: Mapping[str, Any]) -> str:
    if len(spec.keys) == 1:
        return _quote(row[spec.keys[0]])
    return ",".join(f"{k}={_quote(row[k])}" for k in spec.keys)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _is_fetch(request: Request) -> bool:
    return request.headers.get("x-csrf-token", "").lower() == "fetch"


def _int_option(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise _bad_request(f"{name} must be a non-negative integer")
    return int(text)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise _bad_request("The request body is not valid JSON") from None


def _service_document() -> JSONResponse:
    return JSONResponse({"d": {"EntitySets": sorted(_SETS)}})


def _metadata() -> Response:
    edm = {"s": "Edm.String", "b": "Edm.Boolean", "d": "Edm.DateTime"}
    types, assocs, sets, assoc_sets = [], [], [], []
    for spec in _SETS.values():
        props = "".join(
            f'<Property Name="{p}" Type="{edm[k]}"'
            + (f' MaxLength="{n}"' if k == "s" else "")
            + (' ConcurrencyMode="Fixed"' if p == "ETag" else "")
            + (' sap:updatable="false"' if p in spec.readonly else "")
            + "/>"
            for p, (k, n) in spec.props.items()
        )
        navs = "".join(
            f'<NavigationProperty Name="{nav}" '
            f'Relationship="{NAMESPACE}.assoc_{nav}_{spec.name}" '
            'FromRole="From" ToRole="To"/>'
            for nav in spec.navs
        )
        keys = "".join(f'<PropertyRef Name="{k}"/>' for k in spec.keys)
        types.append(
            f'<EntityType Name="{spec.name}Type"><Key>{keys}</Key>'
            f"{props}{navs}</EntityType>"
        )
        for nav, link in spec.navs.items():
            assoc = f"assoc_{nav}_{spec.name}"
            assocs.append(
                f'<Association Name="{assoc}">'
                f'<End Type="{NAMESPACE}.{spec.name}Type" '
                'Multiplicity="1" Role="From"/>'
                f'<End Type="{NAMESPACE}.{link.target}Type" '
                f'Multiplicity="{"*" if link.many else "0..1"}" Role="To"/>'
                "</Association>"
            )
            assoc_sets.append(
                f'<AssociationSet Name="{assoc}_set" Association="{NAMESPACE}.{assoc}">'
                f'<End EntitySet="{spec.name}" Role="From"/>'
                f'<End EntitySet="{link.target}" Role="To"/></AssociationSet>'
            )
        sets.append(
            f'<EntitySet Name="{spec.name}" EntityType="{NAMESPACE}.{spec.name}Type" '
            f'sap:creatable="{str(spec.creatable).lower()}" sap:updatable="true" '
            f'sap:deletable="{str(spec.deletable).lower()}"/>'
        )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx Version="1.0" '
        'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
        'xmlns:sap="http://www.sap.com/Protocols/SAPData">'
        '<edmx:DataServices m:DataServiceVersion="2.0">'
        f'<Schema Namespace="{NAMESPACE}" '
        'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">'
        + "".join(types + assocs)
        + f'<EntityContainer Name="{NAMESPACE}_Entities" '
        + 'm:IsDefaultEntityContainer="true">'
        + "".join(sets + assoc_sets)
        + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
    return Response(xml, media_type="application/xml")


def create_app(
    store: SapStore, *, username: str, password: str, page_size: int = 1000
) -> FastAPI:
    """The API_BUSINESS_PARTNER service over ``store``, guarded by Basic auth.

    ``app.state.faults`` plans injected faults; ``app.state.sessions`` holds the
    CSRF sessions (``expire_all()`` mimics a session timeout). ``page_size`` is
    the server page after which ``__next`` links continue the collection.
    """
    app = FastAPI(title="SAP API_BUSINESS_PARTNER emulator", openapi_url=None)
    app.state.store = store
    app.state.faults = Faults()
    app.state.sessions = _Sessions()
    install_faults(app, app.state.faults)
    service = _Service(store, app.state.sessions, username, password, page_size)

    async def endpoint(request: Request) -> Response:
        return await service(request, request.path_params.get("resource", ""))

    methods = ["GET", "POST", "PATCH", "MERGE", "PUT", "DELETE"]
    for path in (SERVICE_ROOT, SERVICE_ROOT + "/{resource:path}"):
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)
    return app
