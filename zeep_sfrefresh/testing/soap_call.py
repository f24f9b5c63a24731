"""One SOAP call as an operation handler sees it, and what every handler shares.

:mod:`zeep_sfrefresh.testing.soap` parses a post into a :class:`SoapCall`, checks its session
and hands it to the operation's handler (:mod:`~zeep_sfrefresh.testing.soap_partner`,
:mod:`~zeep_sfrefresh.testing.soap_typed`), which reads the payload with the helpers here,
raises :class:`SoapFault` for an API fault and answers with :func:`respond`. Query handlers
page through :mod:`zeep_sfrefresh.testing.paging` with :func:`batch_size`,
:func:`resume_query` and :func:`page_answer`, whatever API they serve.

Handlers are called with the org's lock held (:class:`~zeep_sfrefresh.testing.state.OrgState`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lxml import etree

from zeep_sfrefresh.testing import apis, soql, wire
from zeep_sfrefresh.testing.data import SCHEMA, Record, SObjectSpec
from zeep_sfrefresh.testing.paging import InvalidQueryLocator, Page
from zeep_sfrefresh.testing.server import Answer
from zeep_sfrefresh.testing.state import API_LIMIT, OrgState, Session

__all__ = [
    "Handler",
    "SoapCall",
    "SoapFault",
    "all_or_none",
    "batch_size",
    "child_text",
    "children",
    "is_nil",
    "local_name",
    "page_answer",
    "resolve_soql",
    "respond",
    "resume_query",
    "sobject_spec",
    "soql_fault",
]

_MAX_BATCH = 2000

_SOBJECT_NS = {
    "u": wire.SOBJECT_NS,
    "c": apis.ENTERPRISE_SOBJECT_NS,
    "T": apis.TOOLING_SOBJECT_NS,
}
"""Where each API puts its records' fields (the ``sf`` prefix of answers that carry some)."""


@dataclass
class SoapCall:
    """A parsed SOAP request on its way to an operation handler."""

    flavour: wire.SoapFlavour
    version: str
    operation: str
    payload: etree._Element
    header: etree._Element | None
    session: Session | None = None
    """The caller's session (None only for operations that need none: ``login``)."""


class SoapFault(Exception):
    """Raised by operation handlers to answer with an API fault (HTTP 500)."""

    def __init__(
        self, code: str, message: str, *, row: int = -1, column: int = -1, prefix: str = "sf"
    ) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.row = row
        self.column = column
        self.prefix = prefix


Handler = Callable[[OrgState, SoapCall], Answer]
"""An operation handler: called with the lock held, raises :class:`SoapFault` for API faults."""


# --- reading the request ---------------------------------------------------------------------


def local_name(element: etree._Element) -> str:
    return etree.QName(element).localname


def children(parent: etree._Element | None, name: str) -> list[etree._Element]:
    """Children with the given local name (namespace-lenient, as a forgiving server is)."""
    if parent is None:
        return []
    return [child for child in parent if isinstance(child.tag, str) and local_name(child) == name]


def child_text(parent: etree._Element | None, name: str) -> str | None:
    found = children(parent, name)
    return (found[0].text or "") if found else None


def is_nil(element: etree._Element) -> bool:
    return element.get(f"{{{wire.XSI_NS}}}nil") in ("true", "1")


def sobject_spec(name: str) -> SObjectSpec:
    """The object a call names; INVALID_TYPE when the org has none such."""
    spec = SCHEMA.get(name.lower())
    if spec is None:
        raise SoapFault("INVALID_TYPE", f"sObject type '{name}' is not supported.")
    return spec


def all_or_none(call: SoapCall) -> bool:
    """Whether the call carries ``AllOrNoneHeader`` with ``allOrNone`` true."""
    headers = children(call.header, "AllOrNoneHeader")
    value = child_text(headers[0], "allOrNone") if headers else None
    return (value or "").strip() in ("true", "1")


# --- queries ---------------------------------------------------------------------------------


def soql_fault(error: soql.SoqlError) -> SoapFault:
    """The API fault of a query (or search) Salesforce would refuse, with its position."""
    return SoapFault(error.code, error.exception_message, row=error.row, column=error.column)


def resolve_soql(
    call: SoapCall,
    schema: Mapping[str, SObjectSpec],
    *,
    relationships: bool = False,
    count: bool = False,
) -> soql.ResolvedQuery:
    """The call's ``queryString``, parsed and resolved (see :func:`soql.resolve`)."""
    text = child_text(call.payload, "queryString") or ""
    try:
        return soql.resolve(soql.parse(text), schema, relationships=relationships, count=count)
    except soql.SoqlError as error:
        raise soql_fault(error) from None


def _requested_batch_size(call: SoapCall) -> int | None:
    """QueryOptions/batchSize clamped to 1..2000; None when the call sets none.

    Salesforce treats values under 200 as 200; the stand-in honours small values so tests
    can exercise queryMore with a handful of records.
    """
    options = children(call.header, "QueryOptions")
    text = child_text(options[0], "batchSize") if options else None
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    return max(1, min(int(text), _MAX_BATCH))


def batch_size(call: SoapCall, default: int) -> int:
    """The batch size the call asks for, else ``default``."""
    requested = _requested_batch_size(call)
    return default if requested is None else requested


def resume_query(org: OrgState, call: SoapCall) -> Page:
    """queryMore: the batch the call's ``queryLocator`` starts, opened by any API's query."""
    locator = child_text(call.payload, "queryLocator") or ""
    try:
        return org.cursors.resume(locator, _requested_batch_size(call))
    except InvalidQueryLocator:
        raise SoapFault("INVALID_QUERY_LOCATOR", "invalid query locator") from None


def page_answer(
    org: OrgState, call: SoapCall, page: Page, render: Callable[[Page, Record], str]
) -> Answer:
    """The QueryResult of one batch, each record written by ``render`` (the API's way)."""
    body = wire.query_result_xml(
        call.operation,
        [render(page, record) for record in page.records],
        done=page.done,
        locator=page.locator,
        size=page.total,
    )
    return respond(org, call, body, sobjects=True)


# --- answering -------------------------------------------------------------------------------


def respond(
    org: OrgState, call: SoapCall, body: str, *, headers: str = "", sobjects: bool = False
) -> Answer:
    """HTTP 200 with ``body`` (and ``headers``, the inside of ``soapenv:Header``).

    The LimitInfoHeader is added for APIs whose WSDL declares it; ``sobjects`` binds the
    ``sf`` prefix to the API's record namespace.
    """
    if call.flavour.limit_info:
        limit = wire.LimitInfo(org.counters.api_requests, API_LIMIT)
        headers = wire.limit_info_xml(limit) + headers
    sobject_ns = _SOBJECT_NS.get(call.flavour.code) if sobjects else None
    return Answer(200, wire.soap_answer(call.flavour, body, headers=headers, sobject_ns=sobject_ns))
