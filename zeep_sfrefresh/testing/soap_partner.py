"""The partner API's operations (``/services/Soap/u``), over the org's records.

``login``, ``query``/``queryAll``/``queryMore``, ``retrieve``, ``search`` (the SOSL subset of
:mod:`zeep_sfrefresh.testing.sosl`), ``create``, ``update``, ``upsert``, ``delete``,
``undelete``, ``describeGlobal``, ``describeSObject(s)``, ``getUserInfo`` and
``getServerTimestamp``, each a handler of :mod:`zeep_sfrefresh.testing.soap`'s dispatch
table, answered in Salesforce's shapes (:mod:`zeep_sfrefresh.testing.wire`). The enterprise
and tooling APIs reuse a few of them (timestamps, user info, the create rules).

Handlers are called with the org's lock held and raise
:class:`~zeep_sfrefresh.testing.soap_call.SoapFault` for API faults.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from lxml import etree

from zeep_sfrefresh.testing import paging, soql, sosl, wire
from zeep_sfrefresh.testing.data import SCHEMA, Record, RecordError, SObjectInput, Value, id15
from zeep_sfrefresh.testing.paging import Page
from zeep_sfrefresh.testing.server import Answer
from zeep_sfrefresh.testing.soap_call import (
    SoapCall,
    SoapFault,
    all_or_none,
    batch_size,
    child_text,
    children,
    is_nil,
    local_name,
    page_answer,
    resolve_soql,
    respond,
    resume_query,
    sobject_spec,
    soql_fault,
)
from zeep_sfrefresh.testing.state import OrgState

__all__ = [
    "create",
    "create_records",
    "delete",
    "describe_global",
    "describe_sobject",
    "describe_sobjects",
    "get_server_timestamp",
    "get_user_info",
    "login",
    "query",
    "query_more",
    "retrieve",
    "search",
    "undelete",
    "update",
    "upsert",
]

_SEARCH_LIMIT = 2000
"""The most records one search answers (SOSL's own cap when the search sets no LIMIT)."""

_ROLLED_BACK: RecordError = (
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
    [],
)
_INVALID_REFERENCE: RecordError = ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])


# --- session and org -------------------------------------------------------------------------


def login(org: OrgState, call: SoapCall) -> Answer:
    username = child_text(call.payload, "username") or ""
    password = child_text(call.payload, "password") or ""
    user = org.user_named(username)
    if user is None or not user.password_is(password):
        # Real capture: INVALID_LOGIN comes without the sf: prefix, with a LoginFault.
        raise SoapFault(
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
            prefix="",
        )
    session_id = org.new_session(user.user_id)
    body = wire.login_result_xml(
        server_url=org.instance_url + org.soap_path("u", call.version),
        metadata_server_url=org.instance_url + org.soap_path("m", call.version),
        session_id=session_id,
        info=org.user_info(user.user_id),
    )
    return Answer(200, wire.soap_response(call.flavour, body))


def get_server_timestamp(org: OrgState, call: SoapCall) -> Answer:
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return respond(org, call, wire.server_timestamp_xml(stamp))


def get_user_info(org: OrgState, call: SoapCall) -> Answer:
    assert call.session is not None
    info = wire.user_info_xml(org.user_info(call.session.user_id))
    return respond(org, call, f"<getUserInfoResponse><result>{info}</result></getUserInfoResponse>")


def describe_sobject(org: OrgState, call: SoapCall) -> Answer:
    spec = sobject_spec(child_text(call.payload, "sObjectType") or "")
    return respond(org, call, wire.describe_sobject_xml(spec, org.url))


def describe_sobjects(org: OrgState, call: SoapCall) -> Answer:
    """Each named object's describe, in the order asked; an unknown one faults the call."""
    specs = [
        sobject_spec((element.text or "").strip())
        for element in children(call.payload, "sObjectType")
    ]
    return respond(org, call, wire.describe_sobjects_xml(specs, org.url))


def describe_global(org: OrgState, call: SoapCall) -> Answer:
    return respond(org, call, wire.describe_global_xml(SCHEMA.values(), org.url))


# --- reading ---------------------------------------------------------------------------------


def query(org: OrgState, call: SoapCall) -> Answer:
    """query and queryAll (the recycle bin too), relationship fields and COUNT() included."""
    resolved = resolve_soql(call, SCHEMA, relationships=True, count=True)
    cursor = paging.run_query(
        resolved,
        org.records,
        org.parent_record,
        include_deleted=call.operation == "queryAll",
        batch_size=batch_size(call, org.knobs.query_batch_size),
    )
    if resolved.count:
        # SELECT COUNT(): no records and no cursor, the count as the size.
        size = len(cursor.records)
        body = wire.query_result_xml(call.operation, [], done=True, locator=None, size=size)
        return respond(org, call, body, sobjects=True)
    return page_answer(org, call, org.cursors.first(cursor), _partner_record)


def query_more(org: OrgState, call: SoapCall) -> Answer:
    return page_answer(org, call, resume_query(org, call), _partner_record)


def _partner_record(page: Page, record: Record) -> str:
    """A record of a batch as the partner API writes it (relationships as nested records)."""
    cursor = page.cursor
    return wire.sobject_xml("records", cursor.sobject, record, page.select, cursor.parents)


def retrieve(org: OrgState, call: SoapCall) -> Answer:
    spec = sobject_spec(child_text(call.payload, "sObjectType") or "")
    field_list = child_text(call.payload, "fieldList") or ""
    fields = []
    for name in (part.strip() for part in field_list.split(",")):
        found = spec.field(name) if name else None
        if found is None:
            raise SoapFault("INVALID_FIELD", f"No such column '{name}' on entity '{spec.name}'.")
        fields.append(found)
    results = []
    for element in children(call.payload, "ids"):
        hit = org.records.get((element.text or "").strip())
        if hit is None or hit[0] is not spec:
            results.append('<result xsi:nil="true"/>')
        else:
            results.append(wire.sobject_xml("result", spec.name, hit[1], fields))
    return respond(
        org, call, f"<retrieveResponse>{''.join(results)}</retrieveResponse>", sobjects=True
    )


def search(org: OrgState, call: SoapCall) -> Answer:
    """The SOSL subset of :mod:`zeep_sfrefresh.testing.sosl` over the live records."""
    text = child_text(call.payload, "searchString") or ""
    try:
        found_search = sosl.resolve(sosl.parse(text), SCHEMA)
    except soql.SoqlError as error:
        raise soql_fault(error) from None
    limit = _SEARCH_LIMIT if found_search.limit is None else min(found_search.limit, _SEARCH_LIMIT)
    found: list[str] = []
    for target in found_search.targets:
        for record in org.records.scan(target.sobject.name):
            if len(found) >= limit:
                break
            if sosl.matches(found_search, target.sobject, record):
                found.append(wire.search_record_xml(target.sobject.name, record, target.fields))
    body = wire.search_result_xml(str(uuid.uuid4()), found)
    return respond(org, call, body, sobjects=True)


# --- writing ---------------------------------------------------------------------------------


def create(org: OrgState, call: SoapCall) -> Answer:
    results = create_records(org, children(call.payload, "sObjects"))
    return respond(org, call, f"<createResponse>{results}</createResponse>")


def create_records(org: OrgState, elements: list[etree._Element]) -> str:
    """Insert partner-style sObject elements; their SaveResults, joined (any API's create)."""
    results = []
    for element in elements:
        given = _read_sobject(element, writable="createable")
        errors = given.errors(creating=True)
        if errors:
            results.append(wire.save_result_xml(None, errors))
            continue
        record = org.records.insert(given.spec.name, given.values)
        results.append(wire.save_result_xml(str(record["Id"]), []))
    return "".join(results)


def update(org: OrgState, call: SoapCall) -> Answer:
    results = []
    for element in children(call.payload, "sObjects"):
        given = _read_sobject(element, writable="updateable")
        error = _missing_record(org, given.record_id, "Id not specified in an update call")
        hit = org.records.get(given.record_id) if error is None and given.record_id else None
        if error is None and (hit is None or hit[0] is not given.spec):
            error = _INVALID_REFERENCE
        errors = [error] if error is not None else given.errors(creating=False)
        if errors or hit is None:
            results.append(wire.save_result_xml(None, errors))
            continue
        org.records.update(given.spec, hit[1], given.values)
        results.append(wire.save_result_xml(str(hit[1]["Id"]), []))
    return respond(org, call, f"<updateResponse>{''.join(results)}</updateResponse>")


@dataclass
class _UpsertPlan:
    """What upsert does with one sObject: its errors, or the record to update (None: create)."""

    given: SObjectInput
    errors: list[RecordError]
    target: Record | None = None
    key: tuple[str, str, str] | None = None
    """(object, field, lower-case value) of a non-Id external id, to find repeats in a call."""
    key_text: str = ""
    """The external id value as sent (for the DUPLICATE_EXTERNAL_ID message)."""


def upsert(org: OrgState, call: SoapCall) -> Answer:
    """Update the record each sObject's external id matches, or create one.

    Every sObject is checked before anything is written (a fault leaves the data as it
    was). The rules are in :func:`_plan_upsert`; with ``AllOrNoneHeader`` on, one failed
    record fails them all (the others with ALL_OR_NONE_OPERATION_ROLLED_BACK).
    """
    field_name = (child_text(call.payload, "externalIDFieldName") or "").strip()
    plans = [
        _plan_upsert(org, element, field_name) for element in children(call.payload, "sObjects")
    ]
    keys = collections.Counter(plan.key for plan in plans if plan.key is not None)
    for plan in plans:
        if plan.key is not None and keys[plan.key] > 1:
            message = f"Duplicate external id specified: {plan.key_text}"
            plan.errors = [("DUPLICATE_EXTERNAL_ID", message, [])]
    roll_back = all_or_none(call) and any(plan.errors for plan in plans)
    results = []
    for plan in plans:
        if plan.errors or roll_back:
            errors = plan.errors or [_ROLLED_BACK]
            results.append(wire.upsert_result_xml(None, errors, created=False))
        elif plan.target is None:
            record = org.records.insert(plan.given.spec.name, plan.given.values)
            results.append(wire.upsert_result_xml(str(record["Id"]), [], created=True))
        else:
            org.records.update(plan.given.spec, plan.target, plan.given.values)
            results.append(wire.upsert_result_xml(str(plan.target["Id"]), [], created=False))
    return respond(org, call, f"<upsertResponse>{''.join(results)}</upsertResponse>")


def _plan_upsert(org: OrgState, element: etree._Element, field_name: str) -> _UpsertPlan:
    """What upsert will do with one sObject (nothing written yet).

    The external id field must be one describe marks ``idLookup`` (the Id, Contact.Email),
    else the call faults INVALID_FIELD, as Salesforce's does for a field that is neither an
    external id nor an idLookup field. With ``Id``: no Id creates, a live record's Id
    updates it (a deleted one is ENTITY_IS_DELETED, an unknown one
    INVALID_CROSS_REFERENCE_KEY). With another field: no value is MISSING_ARGUMENT, no live
    record with that value (compared ignoring case) creates, one updates it, several are
    DUPLICATE_EXTERNAL_ID, and so is a value two sObjects of the call share.
    """
    given = _read_sobject(element, writable="createable")
    spec = given.spec
    key_field = spec.field(field_name) if field_name else None
    if key_field is None or not key_field.id_lookup:
        raise SoapFault(
            "INVALID_FIELD",
            f"Field name provided, {field_name} is not an External ID or indexed field for "
            f"{spec.name}",
        )
    if key_field.name == "Id":
        if given.record_id is None:
            return _UpsertPlan(given, given.errors(creating=True))
        error = _missing_record(org, given.record_id, "Id not specified")
        hit = org.records.get(given.record_id) if error is None else None
        if error is None and (hit is None or hit[0] is not spec):
            error = _INVALID_REFERENCE
        if error is not None or hit is None:
            return _UpsertPlan(given, [error] if error else [])
        return _upsert_update(element, hit[1])
    value = given.values.get(key_field.name)
    if not isinstance(value, str) or not value.strip():
        return _UpsertPlan(given, [("MISSING_ARGUMENT", f"{key_field.name} not specified", [])])
    matched = [
        record
        for record in org.records.scan(spec.name)
        if str(record.get(key_field.name) or "").lower() == value.lower()
    ]
    if len(matched) > 1:
        ids = ", ".join(str(record["Id"]) for record in matched)
        message = f"more than one record found for external id field: [{ids}]"
        plan = _UpsertPlan(given, [("DUPLICATE_EXTERNAL_ID", message, [])])
    elif matched:
        plan = _upsert_update(element, matched[0])
    else:
        plan = _UpsertPlan(given, given.errors(creating=True))
    plan.key = (spec.name, key_field.name, value.lower())
    plan.key_text = value
    return plan


def _upsert_update(element: etree._Element, target: Record) -> _UpsertPlan:
    given = _read_sobject(element, writable="updateable")
    return _UpsertPlan(given, given.errors(creating=False), target=target)


def _missing_record(
    org: OrgState, record_id: str | None, absent_message: str
) -> RecordError | None:
    if not record_id:
        return ("MISSING_ARGUMENT", absent_message, [])
    if len(record_id) not in (15, 18) or not record_id.isalnum():
        return ("MALFORMED_ID", f"Id in update/delete is not a valid ID: {record_id}", [])
    if org.records.is_deleted(record_id):
        return ("ENTITY_IS_DELETED", "entity is deleted", [])
    return None


def delete(org: OrgState, call: SoapCall) -> Answer:
    results = []
    for element in children(call.payload, "ids"):
        record_id = (element.text or "").strip()
        error = _missing_record(org, record_id, "Id not specified in a delete call")
        deleted = org.records.delete(record_id) if error is None else None
        if error is None and deleted is None:
            error = _INVALID_REFERENCE
        if error is not None or deleted is None:
            results.append(wire.delete_result_xml(None, [error] if error else []))
        else:
            results.append(wire.delete_result_xml(str(deleted["Id"]), []))
    return respond(org, call, f"<deleteResponse>{''.join(results)}</deleteResponse>")


def undelete(org: OrgState, call: SoapCall) -> Answer:
    """Bring records back from the recycle bin (the records ``delete`` moved there).

    A live record is UNDELETE_FAILED ("Entity is not in the recycle bin", as Salesforce
    answers), an Id no record ever had INVALID_CROSS_REFERENCE_KEY, a malformed one
    MALFORMED_ID. With ``AllOrNoneHeader`` on, one failure fails them all.
    """
    planned: list[tuple[str, RecordError | None]] = []
    restoring: set[str] = set()
    for element in children(call.payload, "ids"):
        record_id = (element.text or "").strip()
        error: RecordError | None = None
        if not record_id:
            error = ("MISSING_ARGUMENT", "Id not specified in an undelete call", [])
        elif len(record_id) not in (15, 18) or not record_id.isalnum():
            error = ("MALFORMED_ID", f"Id in undelete is not a valid ID: {record_id}", [])
        elif org.records.get(record_id) is not None or id15(record_id) in restoring:
            error = ("UNDELETE_FAILED", "Entity is not in the recycle bin", [])
        elif not org.records.is_deleted(record_id):
            error = _INVALID_REFERENCE
        else:
            restoring.add(id15(record_id))
        planned.append((record_id, error))
    roll_back = all_or_none(call) and any(error for _, error in planned)
    results = []
    for record_id, error in planned:
        restored = None if error or roll_back else org.records.undelete(record_id)
        if restored is None:
            errors = [error or _ROLLED_BACK]
            results.append(wire.undelete_result_xml(None, errors))
        else:
            results.append(wire.undelete_result_xml(str(restored["Id"]), []))
    return respond(org, call, f"<undeleteResponse>{''.join(results)}</undeleteResponse>")


def _read_sobject(element: etree._Element, *, writable: str) -> SObjectInput:
    """Decode one ``<sObjects>`` of a create (``writable="createable"``) or update call.

    An unknown object or field is a fault for the whole call, as in Salesforce; a field that
    exists but may not be written is an error of that record only.
    """
    spec = sobject_spec(child_text(element, "type") or "")
    values: dict[str, Value] = {}
    read_only: list[str] = []
    record_id: str | None = None
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = local_name(child)
        if name == "type":
            continue
        if name == "fieldsToNull":
            target = spec.field((child.text or "").strip())
            if target is None:
                raise SoapFault(
                    "INVALID_FIELD", f"No such column '{child.text}' on entity '{spec.name}'."
                )
            values[target.name] = None
            continue
        if name == "Id":
            record_id = None if is_nil(child) else (child.text or "").strip() or None
            continue
        target = spec.field(name)
        if target is None:
            raise SoapFault("INVALID_FIELD", f"No such column '{name}' on entity '{spec.name}'.")
        if not getattr(target, writable):
            read_only.append(target.name)
            continue
        values[target.name] = None if is_nil(child) else (child.text or "")
    return SObjectInput(spec, values, record_id, read_only)
