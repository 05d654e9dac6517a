"""OData V2 wire format, as the SAP emulator speaks it.

Kept apart from the service so the protocol reads on its own: how an entity
set is described (``EntitySet``, ``Nav``), the error body SAP gateways answer
with, verbose-JSON values (``/Date(ms)/``, booleans, bounded strings, decimals
as strings), the ``$filter`` subset compiled to bound SQLite, ``$expand``/
``$select``/``$orderby``/``$top``/``$format``-style options, entity-key
predicates in resource paths, and the service and ``$metadata`` documents.
Nothing here knows which entity sets exist; callers pass them in.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse


@dataclass(frozen=True)
class Nav:
    target: str
    many: bool
    on: tuple[tuple[str, str], ...]  # (source property, target property)


@dataclass(frozen=True)
class EntitySet:
    name: str
    keys: tuple[str, ...]
    props: dict[str, tuple[str, int]]  # name -> (s|b|d|n, max length or precision)
    readonly: frozenset[str] = frozenset()
    creatable: bool = True
    updatable: bool = True
    deletable: bool = True
    etag: bool = False
    navs: dict[str, Nav] = field(default_factory=dict)


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


def bad_request(message: str) -> ODataError:
    return ODataError(400, "/IWBEP/CM_MGW_RT/BAD_REQUEST", message)


def not_found(segment: str) -> ODataError:
    return ODataError(
        404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for the segment '{segment}'."
    )


def etag_header(value: str) -> str:
    return f"W/\"'{value}'\""


DECIMAL_SCALE = 2
_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_TOKEN = re.compile(r"\s*(?:(\()|(\))|('(?:[^']|'')*')|([A-Za-z_][\w]*)|(-?\d+))")


def date_json(value: str | None) -> str | None:
    if value is None:
        return None
    moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    return f"/Date({int(moment.timestamp() * 1000)})/"


def _decode_value(prop: str, kind: str, limit: int, value: Any) -> Any:
    if kind == "b":
        if not isinstance(value, bool):
            raise bad_request(f"Property '{prop}' expects a boolean")
        return value
    if kind == "d":
        return _decode_date(prop, value)
    if kind == "n":
        return _decode_decimal(prop, limit, value)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise bad_request(f"Property '{prop}' expects a string of at most {limit}")
    return value


def _decode_decimal(prop: str, precision: int, value: Any) -> str:
    # Edm.Decimal travels as a JSON string in OData V2; numbers are taken too.
    try:
        number = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise bad_request(f"Property '{prop}' expects a decimal number")
    if (
        len(number.quantize(Decimal(1) / 10**DECIMAL_SCALE).as_tuple().digits)
        > precision
    ):
        raise bad_request(f"Property '{prop}' has more than {precision} digits")
    return f"{number:.{DECIMAL_SCALE}f}"


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
        raise bad_request(f"Property '{prop}' has an invalid Edm.DateTime") from None


def decode(
    spec: EntitySet, payload: Any, *, allow: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise bad_request(f"The payload for {spec.name} must be a JSON object")
    out = {}
    for prop, value in payload.items():
        if prop == "__metadata" or prop in spec.navs:
            continue
        if prop not in spec.props:
            raise bad_request(f"Property '{prop}' is invalid for {spec.name}")
        if prop in spec.readonly and prop not in allow:
            raise bad_request(f"Property '{prop}' is read-only")
        out[prop] = _decode_value(prop, *spec.props[prop], value)
    return out


def nav_items(payload: Mapping[str, Any], nav: str) -> list[Any]:
    value = payload.get(nav) or []
    items = value.get("results", []) if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise bad_request(f"Navigation property '{nav}' expects a collection")
    return items


def compile_filter(text: str | None, spec: EntitySet) -> tuple[str, list[Any]]:
    """Turn ``Field eq 'v' and (A eq 'x' or B ne true)`` into bound SQL."""
    if not text:
        return "", []
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise bad_request("Invalid $filter expression")
        tokens.append(match)
        pos = match.end()
    parser = _FilterParser(tokens, spec)
    sql = parser.expression()
    if parser.pos != len(tokens):
        raise bad_request("Invalid $filter expression")
    return sql, parser.params


class _FilterParser:
    def __init__(self, tokens: list[re.Match[str]], spec: EntitySet) -> None:
        self.tokens, self.spec, self.pos = tokens, spec, 0
        self.params: list[Any] = []

    def _peek_word(self) -> str | None:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos][4]
        return None

    def _take(self) -> re.Match[str]:
        if self.pos >= len(self.tokens):
            raise bad_request("Invalid $filter expression: it ends too early")
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
                raise bad_request("Invalid $filter expression: ')' expected")
            return inner
        prop, operator = token[4], self._take()[4]
        if prop not in self.spec.props:
            raise bad_request(f"Property '{prop}' not found in {self.spec.name}")
        if operator not in ("eq", "ne"):
            raise bad_request("Only 'eq' and 'ne' comparisons are supported")
        value = self._literal(self._take())
        if value is None:
            return f'"{prop}" IS {"NOT " if operator == "ne" else ""}NULL'
        self.params.append(to_sql(value))
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
        raise bad_request("Invalid literal in $filter")


def to_sql(value: Any) -> Any:
    """A value as SQLite binds it; the store uses it too, for the same columns."""
    return int(value) if isinstance(value, bool) else value


def parse_expand(
    text: str | None, spec: EntitySet, entity_sets: Mapping[str, EntitySet]
) -> dict[str, dict]:
    tree: dict[str, dict] = {}
    for path in filter(None, (p.strip() for p in (text or "").split(","))):
        node, current = tree, spec
        for nav in path.split("/"):
            if nav not in current.navs:
                raise bad_request(f"Navigation property '{nav}' not found")
            node = node.setdefault(nav, {})
            current = entity_sets[current.navs[nav].target]
    return tree


def parse_select(text: str | None, spec: EntitySet) -> set[str] | None:
    if not text or text.strip() == "*":
        return None
    chosen = {p.strip() for p in text.split(",") if p.strip()}
    unknown = chosen - set(spec.props) - set(spec.navs)
    if unknown:
        raise bad_request(f"Property '{sorted(unknown)[0]}' not found in $select")
    return chosen


def parse_orderby(text: str | None, spec: EntitySet) -> list[tuple[str, bool]]:
    order = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        prop, _, direction = part.partition(" ")
        if prop not in spec.props or direction.strip() not in ("", "asc", "desc"):
            raise bad_request("Invalid $orderby")
        order.append((prop, direction.strip() == "desc"))
    return order


def split_resource(resource: str) -> tuple[str, dict[str, str] | None, str | None]:
    """``A_Set(Key='v',K2='w')/to_Nav`` → (set, key or None, nav or None)."""
    name, rest = re.match(r"([^(/]*)(.*)", resource).groups()  # type: ignore[union-attr]
    key = None
    if rest.startswith("("):
        end, quoted = 1, False
        while end < len(rest) and (quoted or rest[end] != ")"):
            quoted = quoted != (rest[end] == "'")
            end += 1
        if end >= len(rest):
            raise bad_request("Malformed key predicate")
        key, rest = _parse_key(rest[1:end]), rest[end + 1 :]
    if rest and not re.fullmatch(r"/\w+", rest):
        raise not_found(rest.strip("/"))
    return name, key, rest[1:] or None


def _parse_key(text: str) -> dict[str, str]:
    parts = re.findall(r"(?:(\w+)=)?'((?:[^']|'')*)'\s*(?:,|$)", text)
    if not parts:
        raise bad_request("Key values must be quoted strings")
    return {name: value.replace("''", "'") for name, value in parts}


def normalise_key(spec: EntitySet, key: dict[str, str]) -> dict[str, str]:
    if len(spec.keys) == 1 and list(key) == [""]:
        return {spec.keys[0]: key[""]}
    return key


def key_predicate(spec: EntitySet, row: Mapping[str, Any]) -> str:
    if len(spec.keys) == 1:
        return _quote(row[spec.keys[0]])
    return ",".join(f"{k}={_quote(row[k])}" for k in spec.keys)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def check_format(query: Mapping[str, str]) -> None:
    """Allow ``$format=json`` (what is answered anyway); Atom/XML is not emulated."""
    wanted = query.get("$format")
    if wanted not in (None, "json"):
        raise ODataError(
            501, "/IWBEP/CM_MGW_RT/NOT_EMULATED", "Only $format=json is emulated"
        )


def int_option(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise bad_request(f"{name} must be a non-negative integer")
    return int(text)


def service_document(entity_sets: Mapping[str, EntitySet]) -> JSONResponse:
    return JSONResponse({"d": {"EntitySets": sorted(entity_sets)}})


def metadata(entity_sets: Mapping[str, EntitySet], namespace: str) -> Response:
    edm = {"s": "Edm.String", "b": "Edm.Boolean", "d": "Edm.DateTime"}
    edm["n"] = "Edm.Decimal"
    types, assocs, sets, assoc_sets = [], [], [], []
    for spec in entity_sets.values():
        props = "".join(
            f'<Property Name="{p}" Type="{edm[k]}"'
            + (f' MaxLength="{n}"' if k == "s" else "")
            + (f' Precision="{n}" Scale="{DECIMAL_SCALE}"' if k == "n" else "")
            + (' ConcurrencyMode="Fixed"' if p == "ETag" else "")
            + (' sap:updatable="false"' if p in spec.readonly else "")
            + "/>"
            for p, (k, n) in spec.props.items()
        )
        navs = "".join(
            f'<NavigationProperty Name="{nav}" '
            f'Relationship="{namespace}.assoc_{nav}_{spec.name}" '
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
                f'<End Type="{namespace}.{spec.name}Type" '
                'Multiplicity="1" Role="From"/>'
                f'<End Type="{namespace}.{link.target}Type" '
                f'Multiplicity="{"*" if link.many else "0..1"}" Role="To"/>'
                "</Association>"
            )
            assoc_sets.append(
                f'<AssociationSet Name="{assoc}_set" Association="{namespace}.{assoc}">'
                f'<End EntitySet="{spec.name}" Role="From"/>'
                f'<End EntitySet="{link.target}" Role="To"/></AssociationSet>'
            )
        sets.append(
            f'<EntitySet Name="{spec.name}" EntityType="{namespace}.{spec.name}Type" '
            f'sap:creatable="{str(spec.creatable).lower()}" '
            f'sap:updatable="{str(spec.updatable).lower()}" '
            f'sap:deletable="{str(spec.deletable).lower()}"/>'
        )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx Version="1.0" '
        'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
        'xmlns:sap="http://www.sap.com/Protocols/SAPData">'
        '<edmx:DataServices m:DataServiceVersion="2.0">'
        f'<Schema Namespace="{namespace}" '
        'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">'
        + "".join(types + assocs)
        + f'<EntityContainer Name="{namespace}_Entities" '
        + 'm:IsDefaultEntityContainer="true">'
        + "".join(sets + assoc_sets)
        + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
    return Response(xml, media_type="application/xml")
