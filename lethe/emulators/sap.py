"""Loopback emulator of SAP S/4HANA's API_BUSINESS_PARTNER and
API_BILLING_DOCUMENT_SRV services (OData V2).

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
  as S/4HANA's customer-vendor integration does;
- ``/sap/opu/odata/sap/API_BILLING_DOCUMENT_SRV`` serves ``A_BillingDocument``
  headers read-only (``sap:creatable/updatable/deletable="false"``: writes
  answer 405) with the same host, Basic auth, CSRF sessions, query options
  and faults; ``SoldToParty`` is the customer number, which here equals the
  partner number. Documents are seeded through ``SapStore``.

Error codes are representative: ``/IWBEP/CM_MGW_RT/190`` is SAP's If-Match
message, the others are named after their condition. Not emulated: Atom/XML
payloads (JSON is returned whatever the Accept header; ``$format`` other than
``json`` answers 501), ``$batch``, ``$count``,
PUT, POST to any set but ``A_BusinessPartner``, filter functions and comparisons
other than eq/ne, suppliers, roles and banks.

This module is the service: Basic auth, CSRF sessions, routing and the shape of
the entities it answers with. The OData wire format (errors, ``$filter`` and the
other query options, key predicates, ``$metadata``) is in ``_odata.py``; the
entity sets are in ``_sap_sets.py`` and their SQLite store in ``_sap_store.py``.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._odata import (
    EntitySet,
    ODataError,
    bad_request,
    check_format,
    compile_filter,
    date_json,
    decode,
    etag_header,
    int_option,
    key_predicate,
    metadata,
    nav_items,
    normalise_key,
    not_found,
    parse_expand,
    parse_orderby,
    parse_select,
    service_document,
    split_resource,
)
from lethe.emulators._sap_sets import BILLING_SETS, COMM_KEYS, SETS
from lethe.emulators._sap_store import SapStore
from lethe.emulators._server import Faults, install_faults

__all__ = ["BILLING_ROOT", "SERVICE_ROOT", "ODataError", "SapStore", "create_app"]

SERVICE_ROOT = "/sap/opu/odata/sap/API_BUSINESS_PARTNER"
BILLING_ROOT = "/sap/opu/odata/sap/API_BILLING_DOCUMENT_SRV"
SESSION_COOKIE = "SAP_SESSIONID_EMU_100"
_WRITES = ("POST", "PUT", "PATCH", "MERGE", "DELETE")


@dataclass(frozen=True)
class _Api:
    """One OData service of the host: where it lives and what it holds."""

    root: str
    namespace: str
    sets: Mapping[str, EntitySet]


_PARTNERS = _Api(SERVICE_ROOT, "API_BUSINESS_PARTNER", SETS)
_BILLING = _Api(BILLING_ROOT, "API_BILLING_DOCUMENT_SRV", BILLING_SETS)


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
        api: _Api,
        store: SapStore,
        sessions: _Sessions,
        user: str,
        password: str,
        page_size: int,
    ) -> None:
        self.api, self.store, self.sessions = api, store, sessions
        self.page_size = page_size
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
            check_format(request.query_params)
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
            if resource.strip("/"):
                return metadata(self.api.sets, self.api.namespace)
            return service_document(self.api.sets)
        name, key, nav = split_resource(resource)
        if name not in self.api.sets:
            raise not_found(name)
        spec = self.api.sets[name]
        if key is not None:
            key = normalise_key(spec, key)
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
        spec: EntitySet,
        key: dict[str, str] | None,
        nav: str | None,
        resource: str,
    ) -> Response:
        base = str(request.base_url).rstrip("/") + self.api.root
        if key is None:
            return self._collection(request, spec, "", [], base, resource)
        row = self.store.get(spec.name, key)
        if row is None:
            raise not_found(spec.name)
        if nav is None:
            expand = parse_expand(
                request.query_params.get("$expand"), spec, self.api.sets
            )
            select = parse_select(request.query_params.get("$select"), spec)
            entity = self._entity(spec, row, base, expand, select)
            headers = {"etag": entity["__metadata"]["etag"]} if spec.etag else {}
            return JSONResponse({"d": entity}, headers=headers)
        if nav not in spec.navs:
            raise not_found(nav)
        link = spec.navs[nav]
        where = " AND ".join(f'"{target}" = ?' for _, target in link.on)
        params = [row[source] for source, _ in link.on]
        return self._collection(
            request, self.api.sets[link.target], where, params, base, resource
        )

    def _collection(
        self,
        request: Request,
        spec: EntitySet,
        where: str,
        params: list[Any],
        base: str,
        resource: str,
    ) -> Response:
        query = request.query_params
        filter_sql, filter_params = compile_filter(query.get("$filter"), spec)
        where = " AND ".join(f"({w})" for w in (where, filter_sql) if w)
        params = [*params, *filter_params]
        top, skip = int_option(query, "$top"), int_option(query, "$skip") or 0
        token = int_option(query, "$skiptoken") or 0
        want = (
            self.page_size if top is None else max(0, min(self.page_size, top - token))
        )
        rows = self.store.rows(
            spec.name,
            where,
            params,
            order=parse_orderby(query.get("$orderby"), spec),
            limit=want + 1,
            offset=skip + token,
        )
        expand = parse_expand(query.get("$expand"), spec, self.api.sets)
        select = parse_select(query.get("$select"), spec)
        body: dict[str, Any] = {
            "results": [
                self._entity(spec, r, base, expand, select) for r in rows[:want]
            ]
        }
        if query.get("$inlinecount") not in (None, "none", "allpages"):
            raise bad_request("$inlinecount must be allpages or none")
        if query.get("$inlinecount") == "allpages":
            body["__count"] = str(self.store.count_rows(spec.name, where, params))
        if len(rows) > want and (top is None or token + want < top):
            options = [(k, v) for k, v in query.multi_items() if k != "$skiptoken"]
            options.append(("$skiptoken", str(token + want)))
            body["__next"] = f"{base}/{resource}?{urlencode(options)}"
        return JSONResponse({"d": body})

    def _entity(
        self,
        spec: EntitySet,
        row: Mapping[str, Any],
        base: str,
        expand: Mapping[str, dict],
        select: set[str] | None = None,
    ) -> dict[str, Any]:
        uri = f"{base}/{spec.name}({key_predicate(spec, row)})"
        meta = {"id": uri, "uri": uri, "type": f"{self.api.namespace}.{spec.name}Type"}
        if spec.etag:
            meta["etag"] = etag_header(row["_etag"])
        out: dict[str, Any] = {"__metadata": meta}
        for prop, (kind, _) in spec.props.items():
            if select is None or prop in select:
                out[prop] = date_json(row[prop]) if kind == "d" else row[prop]
        for nav, link in spec.navs.items():
            if nav in expand:
                target = self.api.sets[link.target]
                children = [
                    self._entity(target, child, base, expand[nav])
                    for child in self.store.related(spec.name, nav, row)
                ]
                single = children[0] if children else None
                out[nav] = {"results": children} if link.many else single
            elif select is None:
                out[nav] = {"__deferred": {"uri": f"{uri}/{nav}"}}
        return out

    async def _create(self, request: Request, spec: EntitySet) -> Response:
        if spec.name != "A_BusinessPartner":
            if not spec.creatable:
                raise ODataError(
                    405, "/IWBEP/CM_MGW_RT/METHOD", "Entity set is not creatable"
                )
            raise ODataError(
                501, "/IWBEP/CM_MGW_RT/NOT_EMULATED", "Create is not emulated"
            )
        payload = await _json_body(request)
        partner = decode(spec, payload, allow=frozenset({"BusinessPartner"}))
        if partner.get("BusinessPartnerCategory") not in ("1", "2", "3"):
            raise bad_request("BusinessPartnerCategory must be 1, 2 or 3")
        address_spec = SETS["A_BusinessPartnerAddress"]
        addresses = []
        for item in nav_items(payload, "to_BusinessPartnerAddress"):
            address = decode(address_spec, item, allow=address_spec.readonly)
            emails = [
                decode(SETS["A_AddressEmailAddress"], e, allow=frozenset(COMM_KEYS))
                for e in nav_items(item, "to_EmailAddress")
            ]
            phones = [
                decode(SETS["A_AddressPhoneNumber"], p, allow=frozenset(COMM_KEYS))
                for p in nav_items(item, "to_PhoneNumber")
            ]
            addresses.append(
                (_drop(address, COMM_KEYS), _drop_all(emails), _drop_all(phones))
            )
        customer = payload.get("to_Customer")
        if customer is not None:
            customer = decode(
                SETS["A_Customer"], customer, allow=frozenset({"Customer"})
            )
            customer.pop("Customer", None)
        bp = self.store.insert_tree(partner, addresses, customer=customer)
        row = self.store.get(spec.name, {"BusinessPartner": bp}) or {}
        base = str(request.base_url).rstrip("/") + self.api.root
        expand = parse_expand(
            "to_BusinessPartnerAddress/to_EmailAddress,"
            "to_BusinessPartnerAddress/to_PhoneNumber,to_Customer",
            spec,
            SETS,
        )
        entity = self._entity(spec, row, base, expand)
        headers = {
            "location": entity["__metadata"]["uri"],
            "etag": entity["__metadata"]["etag"],
        }
        return JSONResponse({"d": entity}, status_code=201, headers=headers)

    async def _update(
        self, request: Request, spec: EntitySet, key: dict[str, str]
    ) -> Response:
        if not spec.updatable:
            raise ODataError(
                405,
                "/IWBEP/CM_MGW_RT/METHOD",
                f"Entity set {spec.name} is not updatable (sap:updatable=false)",
                {"Allow": "GET"},
            )
        changes = decode(spec, await _json_body(request), allow=frozenset(spec.keys))
        for prop in spec.keys:
            if prop in changes and changes.pop(prop) != key.get(prop):
                raise bad_request(f"Key property '{prop}' cannot be changed")
        row = self.store.update(
            spec.name, key, changes, if_match=request.headers.get("if-match")
        )
        headers = {"etag": etag_header(row["_etag"])} if spec.etag else {}
        return Response(status_code=204, headers=headers)

    def _delete(self, spec: EntitySet, key: dict[str, str]) -> Response:
        if not spec.deletable:
            raise ODataError(
                405,
                "/IWBEP/CM_MGW_RT/NOT_DELETABLE",
                f"Entity set {spec.name} is not deletable (sap:deletable=false)",
                {"Allow": "GET, PATCH, MERGE" if spec.updatable else "GET"},
            )
        if not self.store.delete(spec.name, key):
            raise not_found(spec.name)
        return Response(status_code=204)


def _drop(values: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in values.items() if k not in names and k != "BusinessPartner"
    }


def _drop_all(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_drop(item, COMM_KEYS) for item in items]


def _is_fetch(request: Request) -> bool:
    return request.headers.get("x-csrf-token", "").lower() == "fetch"


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise bad_request("The request body is not valid JSON") from None


def create_app(
    store: SapStore, *, username: str, password: str, page_size: int = 1000
) -> FastAPI:
    """API_BUSINESS_PARTNER and API_BILLING_DOCUMENT_SRV over ``store``, guarded
    by Basic auth.

    ``app.state.faults`` plans injected faults; ``app.state.sessions`` holds the
    CSRF sessions, shared by both services (``expire_all()`` mimics a session
    timeout). ``page_size`` is the server page after which ``__next`` links
    continue the collection.
    """
    app = FastAPI(title="SAP S/4HANA OData emulator", openapi_url=None)
    app.state.store = store
    app.state.faults = Faults()
    app.state.sessions = _Sessions()
    install_faults(app, app.state.faults)
    methods = ["GET", "POST", "PATCH", "MERGE", "PUT", "DELETE"]
    for api in (_PARTNERS, _BILLING):
        service = _Service(
            api, store, app.state.sessions, username, password, page_size
        )
        endpoint = _endpoint(service)
        for path in (api.root, api.root + "/{resource:path}"):
            app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)
    return app


def _endpoint(service: _Service) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await service(request, request.path_params.get("resource", ""))

    return endpoint
