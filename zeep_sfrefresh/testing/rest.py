"""The stand-in org's REST side: ``/services/data``, userinfo and the identity URL.

:func:`handle_rest_request` checks the bearer token (the 401s), counts the request and takes
the org's lock; the resources under ``/services/data/vXX.X`` are then :class:`RestApi`'s,
which works on the org's own state (its records, its query cursors, its parent lookup) and
answers as Salesforce's REST API does. What it serves, ``<v>`` being
``/services/data/vXX.X``:

* ``GET <v>/``: the resources of that version.
* ``GET <v>/query?q=`` and ``<v>/queryAll?q=``: the SOQL subset of
  :mod:`zeep_sfrefresh.testing.soql` (relationship fields and ``COUNT()`` included) in batches
  of ``Sforce-Query-Options: batchSize=N`` or the org's ``rest_batch_size``; a batch with more
  to come carries ``nextRecordsUrl`` (``<v>/query/<locator>``, for queryAll too, as
  Salesforce writes it), which ``GET`` continues.
* ``<v>/sobjects``: ``GET`` lists the objects; ``<v>/sobjects/<Type>``: ``GET`` summarises
  one, ``POST`` creates a record (201); ``<v>/sobjects/<Type>/describe``: ``GET``;
  ``<v>/sobjects/<Type>/<id>``: ``GET`` (all fields or ``?fields=``), ``PATCH`` (204) and
  ``DELETE`` (204).
* ``GET <v>/limits``: a handful of limits, ``DailyApiRequests`` counting the org's API calls.

Records are the org's, so what REST writes the SOAP APIs read and the other way round, and
a write is refused by the same rules (:class:`~zeep_sfrefresh.testing.data.SObjectInput`)
with the same status code, message and fields. Cursors are the org's too
(:mod:`zeep_sfrefresh.testing.paging`): a REST locator and a SOAP queryLocator name the same
kind of server-side cursor. Error bodies are Salesforce's: a JSON list of
``message``/``errorCode`` objects (plus ``fields`` for a refused record).

Nothing here logs, and no answer or exception carries a token: :class:`RestApi` never sees
one (the Authorization header stops at :func:`handle_rest_request`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from zeep_sfrefresh.testing import paging, soql, wire
from zeep_sfrefresh.testing.data import (
    SCHEMA,
    Record,
    RecordStore,
    SObjectInput,
    SObjectSpec,
    Value,
)
from zeep_sfrefresh.testing.paging import InvalidQueryLocator, Page, QueryCursors
from zeep_sfrefresh.testing.server import Answer
from zeep_sfrefresh.testing.state import API_LIMIT, OrgState

__all__ = [
    "MAX_BATCH_SIZE",
    "RestApi",
    "RestRequest",
    "handle_rest_request",
    "query_options_batch_size",
]

MAX_BATCH_SIZE = 2000
"""Salesforce never answers more than 2000 records in one batch, whatever was asked."""

_REST_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)(?P<rest>/.*)?$")
_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_BATCH_OPTION = re.compile(r"(?:^|[\s,;])batchSize\s*=\s*(\d+)", re.IGNORECASE)

_NO_BODY = "The HTTP entity body is required, but this request has no entity body."
_NO_QUERY = "A query string has to be specified"
_ID_GIVEN = "The Id field should not be specified in the sobject data."

_GET = ("GET", "HEAD")
_RECORD_METHODS = ("GET", "HEAD", "PATCH", "DELETE")
_SOBJECT_METHODS = ("GET", "HEAD", "POST")


def query_options_batch_size(header: str | None) -> int | None:
    """The ``batchSize`` of a ``Sforce-Query-Options`` header, clamped to 1..2000; None if none.

    Salesforce honours 200 to 2000 (and treats the number as a hint); the stand-in honours
    any N from 1 so tests can page through a handful of records.
    """
    match = _BATCH_OPTION.search(header or "")
    if match is None:
        return None
    return max(1, min(int(match.group(1)), MAX_BATCH_SIZE))


def handle_rest_request(
    org: OrgState,
    path: str,
    query: str,
    authorization: str | None,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """Answer a request on the REST side (called by the HTTP handler).

    ``GET /services/data/`` (the versions) needs no token. Everything else needs a live
    session as a bearer token: none, an unknown or an expired one is HTTP 401
    ``INVALID_SESSION_ID`` "Session expired or invalid" with ``WWW-Authenticate: Token``;
    one made REST-invalid (``StandInOrg.make_rest_invalid``) is the 401 "This session is not
    valid for use with the REST API" under ``/services/data`` (userinfo and the identity
    URL still take it). The resources under ``/services/data/vXX.X`` are
    :class:`RestApi`'s, answered with the lock held so they see and write the records the
    SOAP APIs do; their answers carry ``Sforce-Limit-Info`` as Salesforce's do. Every
    request counts in ``rest_requests``.
    """
    with org.lock:
        org.counters.rest_requests += 1
    if path.rstrip("/") == "/services/data":
        if method != "GET":
            allowed = wire.rest_method_not_allowed(method, ("GET", "HEAD"))
            return Answer.json(405, allowed, {"Allow": "GET, HEAD"})
        return Answer.json(200, wire.rest_versions())
    token = ""
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    match = _REST_PATH.match(path)
    with org.lock:
        session = org.sessions.get(token)
        if session is None:
            return Answer.json(401, wire.REST_INVALID_SESSION, {"WWW-Authenticate": "Token"})
        if match is not None and not session.rest:
            return Answer.json(401, wire.REST_NOT_VALID_FOR_REST, {"WWW-Authenticate": "Token"})
        org.counters.api_requests += 1
        if match is not None:
            api = RestApi(org.records, org.cursors, org.parent_record, instance_url=org.url)
            request = RestRequest(
                method,
                match.group("version"),
                match.group("rest") or "",
                query,
                headers or {},
                body,
            )
            api_requests = org.counters.api_requests
            answer = api.answer(
                request,
                batch_size=org.knobs.rest_batch_size,
                api_requests=api_requests,
                api_limit=API_LIMIT,
            )
            answer.headers["Sforce-Limit-Info"] = wire.rest_limit_info(api_requests, API_LIMIT)
            return answer
        info = org.user_info(session.user_id)
    if method == "GET" and (
        path == "/services/oauth2/userinfo" or path == f"/id/{org.org_id}/{session.user_id}"
    ):
        return Answer.json(200, wire.userinfo_body(info, org.url))
    return Answer.json(404, wire.REST_NOT_FOUND)


@dataclass(frozen=True)
class RestRequest:
    """One authenticated request under ``/services/data/v<version>``."""

    method: str
    version: str
    """The API version of the path (``66.0``): the answer's URLs keep it."""
    path: str
    """What follows the version (``/sobjects/Contact/003...``; "" for the version itself)."""
    query: str
    headers: Mapping[str, str]
    """Header values by lower-case name."""
    body: bytes


class _Refused(Exception):
    """Raised inside :class:`RestApi` to answer with an error at once."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _error(status: int, code: str, message: str) -> _Refused:
    return _Refused(Answer.json(status, wire.rest_error(code, message)))


class RestApi:
    """The REST resources over one org's state; made per request, called with its lock held.

    ``store`` and ``cursors`` are the org's own (the REST side shares them with SOAP);
    ``lookup`` finds parent records for relationship fields.
    """

    def __init__(
        self,
        store: RecordStore,
        cursors: QueryCursors,
        lookup: soql.ParentLookup,
        *,
        instance_url: str,
    ) -> None:
        self.store = store
        self.cursors = cursors
        self.lookup = lookup
        self.instance_url = instance_url

    def answer(
        self, request: RestRequest, *, batch_size: int, api_requests: int, api_limit: int
    ) -> Answer:
        """Route and answer one request.

        ``batch_size`` is the org's ``rest_batch_size`` (a ``Sforce-Query-Options`` header
        overrides it); ``api_requests`` and ``api_limit`` feed ``limits``.
        """
        parts = [unquote(part) for part in request.path.split("/") if part]
        try:
            if not parts:
                self._allow(request, _GET)
                return Answer.json(200, wire.rest_resources(request.version))
            head, rest = parts[0], parts[1:]
            if head in ("query", "queryAll") and len(rest) <= 1:
                self._allow(request, _GET)
                if rest:
                    return self._query_more(request, rest[0])
                return self._query(request, head == "queryAll", batch_size)
            if head == "limits" and not rest:
                self._allow(request, _GET)
                return Answer.json(200, wire.rest_limits(api_requests, api_limit))
            if head == "sobjects":
                return self._sobjects(request, rest)
        except _Refused as refused:
            return refused.answer
        return Answer.json(404, wire.REST_NOT_FOUND)

    @staticmethod
    def _allow(request: RestRequest, methods: tuple[str, ...]) -> None:
        if request.method not in methods:
            body = wire.rest_method_not_allowed(request.method, methods)
            raise _Refused(Answer.json(405, body, {"Allow": ", ".join(methods)}))

    # --- query ---------------------------------------------------------------------------

    def _query(self, request: RestRequest, include_deleted: bool, default_batch: int) -> Answer:
        """Run a query and answer its first batch (``SELECT COUNT()``: the count only).

        The records are copied into a cursor when the query runs, as Salesforce snapshots a
        result: later batches show that moment, whatever was written since.
        """
        text = next(iter(parse_qs(request.query).get("q", [])), "")
        if not text.strip():
            raise _error(400, "MALFORMED_QUERY", _NO_QUERY)
        try:
            query = soql.resolve(soql.parse(text), SCHEMA, relationships=True, count=True)
        except soql.SoqlError as error:
            raise _error(400, error.code, error.exception_message) from None
        batch_size = self._batch_size(request, max(1, min(default_batch, MAX_BATCH_SIZE)))
        cursor = paging.run_query(
            query, self.store, self.lookup, include_deleted=include_deleted, batch_size=batch_size
        )
        if query.count:
            return Answer.json(200, wire.rest_query_body([], total_size=len(cursor.records)))
        return self._page(request, self.cursors.first(cursor))

    def _query_more(self, request: RestRequest, locator: str) -> Answer:
        """``GET <v>/query/<locator>`` (or queryAll): the batch that starts at the locator."""
        asked = query_options_batch_size(request.headers.get("sforce-query-options"))
        try:
            page = self.cursors.resume(locator, asked)
        except InvalidQueryLocator:
            raise _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator") from None
        return self._page(request, page)

    @staticmethod
    def _batch_size(request: RestRequest, default: int) -> int:
        given = query_options_batch_size(request.headers.get("sforce-query-options"))
        return default if given is None else given

    @staticmethod
    def _page(request: RestRequest, page: Page) -> Answer:
        cursor = page.cursor
        records = [
            wire.rest_record(cursor.sobject, record, page.select, request.version, cursor.parents)
            for record in page.records
        ]
        # Salesforce's nextRecordsUrl says "query" for a queryAll too (its documentation
        # notes it): the locator alone knows what is being continued.
        next_url = None
        if page.locator is not None:
            next_url = f"/services/data/v{request.version}/query/{page.locator}"
        body = wire.rest_query_body(records, total_size=page.total, next_records_url=next_url)
        return Answer.json(200, body)

    # --- sObjects ------------------------------------------------------------------------

    def _sobjects(self, request: RestRequest, parts: list[str]) -> Answer:
        if not parts:
            self._allow(request, _GET)
            body = wire.rest_describe_global(SCHEMA.values(), self.instance_url, request.version)
            return Answer.json(200, body)
        spec = SCHEMA.get(parts[0].lower())
        if spec is None:
            # Salesforce answers an unknown object as an unknown resource, whatever the method.
            return Answer.json(404, wire.REST_NOT_FOUND)
        if len(parts) == 1:
            self._allow(request, _SOBJECT_METHODS)
            if request.method == "POST":
                return self._create(request, spec)
            body = wire.rest_sobject_info(spec, self.instance_url, request.version)
            return Answer.json(200, body)
        if len(parts) == 2 and parts[1] == "describe":
            self._allow(request, _GET)
            body = wire.rest_describe(spec, self.instance_url, request.version)
            return Answer.json(200, body)
        if len(parts) != 2:
            return Answer.json(404, wire.REST_NOT_FOUND)  # external id paths are not served
        self._allow(request, _RECORD_METHODS)
        record = self._record(spec, parts[1])
        if request.method == "PATCH":
            return self._update(request, spec, record)
        if request.method == "DELETE":
            self.store.delete(str(record["Id"]))
            return Answer(204, b"", "")
        return self._read(request, spec, record)

    def _record(self, spec: SObjectSpec, record_id: str) -> Record:
        """The live record of ``spec`` a path names, or the 404 Salesforce answers.

        A segment that is no Id at all is read as an external id field name (its message
        says so); a deleted record is ENTITY_IS_DELETED; any other Id (unknown, or another
        object's) is NOT_FOUND.
        """
        if _ID.fullmatch(record_id) is None:
            raise _Refused(Answer.json(404, wire.rest_external_id_not_found(record_id)))
        hit = self.store.get(record_id)
        if hit is not None and hit[0] is spec:
            return hit[1]
        if hit is None and self.store.is_deleted(record_id):
            errors = wire.rest_record_errors([("ENTITY_IS_DELETED", "entity is deleted", [])])
            raise _Refused(Answer.json(404, errors))
        raise _Refused(Answer.json(404, wire.REST_NOT_FOUND))

    def _read(self, request: RestRequest, spec: SObjectSpec, record: Record) -> Answer:
        """Every field of the record, or those ``?fields=`` lists (relationship paths too).

        Salesforce runs the field list as a query of that record, so a bad name is the
        query's 400 (INVALID_FIELD with the caret under it); the stand-in does the same.
        """
        listed = ",".join(parse_qs(request.query).get("fields", [])).strip()
        if not listed:
            return Answer.json(
                200, wire.rest_record(spec.name, record, spec.fields, request.version)
            )
        # The text ends in "FROM <Type>", which only a FROM clause can consume: whatever the
        # list holds, a query that parses reads this object, unfiltered, and only this record
        # is rendered with it.
        text = f"SELECT {listed} FROM {spec.name}"  # noqa: S608 - parsed by soql, never run
        try:
            query = soql.resolve(soql.parse(text), SCHEMA, relationships=True)
        except soql.SoqlError as error:
            raise _error(400, error.code, error.exception_message) from None
        parents = paging.parent_snapshot(query.select, [record], self.lookup)
        body = wire.rest_record(spec.name, record, query.select, request.version, parents)
        return Answer.json(200, body)

    def _create(self, request: RestRequest, spec: SObjectSpec) -> Answer:
        given = self._decode(request.body, spec, writable="createable")
        errors = given.errors(creating=True)
        if errors:
            return Answer.json(400, wire.rest_record_errors(errors))
        record = self.store.insert(spec.name, given.values)
        return Answer.json(201, wire.rest_save_result(str(record["Id"])))

    def _update(self, request: RestRequest, spec: SObjectSpec, record: Record) -> Answer:
        given = self._decode(request.body, spec, writable="updateable")
        errors = given.errors(creating=False)
        if errors:
            return Answer.json(400, wire.rest_record_errors(errors))
        self.store.update(spec, record, given.values)
        return Answer(204, b"", "")

    @staticmethod
    def _decode(body: bytes, spec: SObjectSpec, *, writable: str) -> SObjectInput:
        """A JSON record body decoded as the partner API's create and update decode theirs.

        As in Salesforce, a body that is no JSON object, an unknown field or an ``Id`` fail
        the request at once (400, no ``fields``); a field that exists but may not be written
        is the record's error, reported by :meth:`SObjectInput.errors` like the SOAP API's.
        An ``attributes`` object (what a GET answers) is accepted and ignored, so a record
        read can be written back.
        """
        if not body.strip():
            raise _error(400, "JSON_PARSER_ERROR", _NO_BODY)
        try:
            data = json.loads(body)
        except UnicodeDecodeError:
            raise _error(400, "JSON_PARSER_ERROR", "Invalid UTF-8 in the request body") from None
        except json.JSONDecodeError as error:
            raise _error(400, "JSON_PARSER_ERROR", _json_error_message(error)) from None
        if not isinstance(data, dict):
            raise _error(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of {spec.name} from {_json_token(data)} value "
                "or request may be missing a required field at [line:1, column:1]",
            )
        values: dict[str, Value] = {}
        read_only: list[str] = []
        for name, raw in data.items():
            if name == "attributes" and isinstance(raw, dict):
                continue
            if name.lower() == "id":
                raise _error(400, "INVALID_FIELD", _ID_GIVEN)
            target = spec.field(name)
            if target is None:
                raise _error(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}"
                )
            if not getattr(target, writable):
                read_only.append(target.name)
                continue
            values[target.name] = _field_value(target.type, raw)
        return SObjectInput(spec, values, None, read_only)


def _field_value(field_type: str, raw: object) -> Value:
    """A JSON value as the field stores it (text, a checkbox, or null).

    A number or boolean sent for a text field keeps its JSON text (``42``, ``true``), leniently,
    as Salesforce's parser does with numbers; an object or array is a JSON_PARSER_ERROR.
    """
    if raw is None:
        return None
    if field_type == "boolean":
        if isinstance(raw, bool):
            return raw
    elif isinstance(raw, str):
        return raw
    elif isinstance(raw, bool | int | float):
        return json.dumps(raw)  # true, 42, 1.5: the text the JSON had
    kind = "boolean" if field_type == "boolean" else "string"
    raise _error(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {_json_token(raw)} value "
        "or request may be missing a required field",
    )


def _json_token(value: object) -> str:
    """The name Salesforce's JSON parser gives the token that starts ``value``."""
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    return "VALUE_NUMBER_FLOAT"


def _json_error_message(error: json.JSONDecodeError) -> str:
    """A syntax error worded like Salesforce's (Jackson's) parser words it."""
    where = f"at [line:{error.lineno}, column:{error.colno}]"
    if error.pos >= len(error.doc):
        return f"Unexpected end-of-input {where}"
    char = error.doc[error.pos]
    return (
        f"Unexpected character ('{char}' (code {ord(char)})): expected a valid value "
        f"(number, String, array, object, 'true', 'false' or 'null') {where}"
    )
