"""The stand-in org's data: object schema, record store, and Salesforce-style record IDs.

Kept apart from the HTTP server and from the wire format so that both can be read (and changed)
without the other: the server decides *when* to touch data, this module decides *what* the data
is, and :mod:`zeep_sfrefresh.testing.wire` decides how it looks on the wire. Nothing here locks;
the org holds its lock around every call.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "SCHEMA",
    "TRAP_DESCRIPTION",
    "FieldSpec",
    "Record",
    "RecordError",
    "RecordStore",
    "SObjectInput",
    "SObjectSpec",
    "Value",
    "contact_name",
    "id15",
    "random_id",
    "same_id",
    "sequential_id",
    "to_18",
]

Value = str | bool | None
"""A field value as the stand-in stores it: text, a checkbox, or null."""

Record = dict[str, Value]
"""One record, keyed by canonical field name (``Id``, ``FirstName``...)."""

RecordError = tuple[str, str, list[str]]
"""A per-record error as the APIs report it: (statusCode, message, fields)."""

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX_CHARS = string.ascii_uppercase + "012345"


def to_18(id15: str) -> str:
    """Return the 18-character, case-safe form of a 15-character Salesforce ID.

    Salesforce appends three characters that encode which letters of the three 5-character
    chunks are upper case; the stand-in computes them the same way so IDs look and compare
    like real ones (clients often normalise 15 to 18).
    """
    if len(id15) != 15:
        raise ValueError("a 15-character ID is required")
    suffix = ""
    for start in range(0, 15, 5):
        chunk = id15[start : start + 5]
        flags = sum(1 << bit for bit, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _SUFFIX_CHARS[flags]
    return id15 + suffix


def id15(value: str) -> str:
    """The 15-character form of an ID given in either length (IDs compare on these)."""
    return value[:15]


def same_id(left: str, right: str) -> bool:
    """Whether two IDs (15 or 18 characters) name the same record, as Salesforce compares them."""
    return len(left) in (15, 18) and len(right) in (15, 18) and id15(left) == id15(right)


def random_id(prefix: str) -> str:
    """An 18-character ID with the given 3-character key prefix and random body.

    Used for the org and user IDs, so two stand-in orgs in one test never share an ID.
    """
    body = "".join(secrets.choice(_BASE62) for _ in range(12))
    return to_18(prefix + body)


def sequential_id(prefix: str, number: int) -> str:
    """An 18-character ID shaped like a real one (``0035g00000...``) for the n-th record."""
    digits = ""
    for _ in range(5):
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return to_18(prefix + "5g00000" + digits)


@dataclass(frozen=True)
class FieldSpec:
    """What describeSObject says about one field, and what create/update may do with it."""

    name: str
    label: str
    type: str
    """The describe ``fieldType`` (``id``, ``string``, ``email``, ``textarea``...)."""
    soap_type: str
    """The describe ``soapType`` (``tns:ID``, ``xsd:string``, ``xsd:boolean``)."""
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    name_field: bool = False
    reference_to: str | None = None
    relationship_name: str | None = None
    defaulted_on_create: bool = False

    @property
    def required_on_create(self) -> bool:
        """Salesforce's rule: a createable field that cannot be null and has no default."""
        return self.createable and not self.nillable and not self.defaulted_on_create

    @property
    def id_lookup(self) -> bool:
        """describe's ``idLookup``: the field can identify a record (the Id, and Email as on
        Salesforce's standard objects). ``upsert`` matches on such fields, like Salesforce on
        standard objects; an Email is not unique, so it can match several records."""
        return self.type in ("id", "email")


@dataclass(frozen=True)
class SObjectSpec:
    """One object type the stand-in knows (its describe data and its fields)."""

    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        """Look a field up the way SOQL does: case-insensitively."""
        wanted = name.lower()
        for spec in self.fields:
            if spec.name.lower() == wanted:
                return spec
        return None


@dataclass
class SObjectInput:
    """One record as a create or update call sent it, decoded (SOAP ``<sObjects>`` or REST JSON).

    Both APIs decode into this and ask :meth:`errors`, so a record the SOAP API refuses is
    refused by REST too, with the same status code, message and fields, as one org does.
    """

    spec: SObjectSpec
    values: dict[str, Value]
    record_id: str | None
    read_only: list[str]
    """Fields the call may not write (a per-record INVALID_FIELD_FOR_INSERT_UPDATE)."""

    def errors(self, *, creating: bool) -> list[RecordError]:
        """The per-record errors Salesforce reports for this record, if any."""
        if self.read_only:
            message = (
                f"Unable to create/update fields: {', '.join(self.read_only)}. Please check the "
                "security settings of this field and verify that it is read/write for your "
                "profile or permission set."
            )
            return [("INVALID_FIELD_FOR_INSERT_UPDATE", message, self.read_only)]
        fields = self.spec.fields
        if creating:
            missing = [f.name for f in fields if f.required_on_create and not self._given(f.name)]
        else:
            missing = [f.name for f in fields if not f.nillable and self._blanked(f.name)]
        if missing:
            message = f"Required fields are missing: [{', '.join(missing)}]"
            return [("REQUIRED_FIELD_MISSING", message, missing)]
        return []

    def _given(self, name: str) -> bool:
        return self.values.get(name) not in (None, "")

    def _blanked(self, name: str) -> bool:
        return name in self.values and not self._given(name)


def _id_field() -> FieldSpec:
    return FieldSpec(
        "Id",
        "Record ID",
        "id",
        "tns:ID",
        length=18,
        createable=False,
        updateable=False,
        nillable=False,
        defaulted_on_create=True,
    )


def _deleted_field() -> FieldSpec:
    return FieldSpec(
        "IsDeleted",
        "Deleted",
        "boolean",
        "xsd:boolean",
        createable=False,
        updateable=False,
        nillable=False,
        defaulted_on_create=True,
    )


SCHEMA: dict[str, SObjectSpec] = {
    spec.name.lower(): spec
    for spec in (
        SObjectSpec(
            "Account",
            "Account",
            "Accounts",
            "001",
            (
                _id_field(),
                _deleted_field(),
                FieldSpec("Name", "Account Name", "string", "xsd:string", 255, nillable=False),
                FieldSpec("Industry", "Industry", "string", "xsd:string", 255),
                FieldSpec("Description", "Account Description", "textarea", "xsd:string", 32000),
            ),
        ),
        SObjectSpec(
            "Contact",
            "Contact",
            "Contacts",
            "003",
            (
                _id_field(),
                _deleted_field(),
                FieldSpec(
                    "AccountId",
                    "Account ID",
                    "reference",
                    "tns:ID",
                    18,
                    reference_to="Account",
                    relationship_name="Account",
                ),
                FieldSpec("LastName", "Last Name", "string", "xsd:string", 80, nillable=False),
                FieldSpec("FirstName", "First Name", "string", "xsd:string", 40),
                FieldSpec(
                    "Name",
                    "Full Name",
                    "string",
                    "xsd:string",
                    121,
                    createable=False,
                    updateable=False,
                    nillable=False,
                    name_field=True,
                    defaulted_on_create=True,
                ),
                FieldSpec("Email", "Email", "email", "xsd:string", 80),
                FieldSpec("Description", "Contact Description", "textarea", "xsd:string", 32000),
            ),
        ),
    )
}
"""Known objects keyed by lower-case name (SOQL and the API ignore the case of object names)."""

_ACCOUNTS = (
    ("Acme Corporation", "Manufacturing"),
    ("Globex Inc.", "Energy"),
    ("Initech", "Technology"),
)

_PEOPLE = (
    ("Ada", "Lovelace"),
    ("Alan", "Turing"),
    ("Grace", "Hopper"),
    ("Edsger", "Dijkstra"),
    ("Barbara", "Liskov"),
    ("Donald", "Knuth"),
    ("Margaret", "Hamilton"),
    ("Ken", "Thompson"),
    ("Dennis", "Ritchie"),
    ("Frances", "Allen"),
    ("John", "McCarthy"),
    ("Radia", "Perlman"),
    ("Tony", "Hoare"),
    ("Katherine", "Johnson"),
    ("Niklaus", "Wirth"),
    ("Shafi", "Goldwasser"),
    ("Leslie", "Lamport"),
    ("Hedy", "Lamarr"),
    ("Claude", "Shannon"),
    ("Annie", "Easley"),
    ("Linus", "Torvalds"),
    ("Sophie", "Wilson"),
    ("Guido", "van Rossum"),
    ("Mary", "Kenneth Keller"),
    ("Bjarne", "Stroustrup"),
)

TRAP_DESCRIPTION = (
    "Owns the runbook for INVALID_SESSION_ID errors; this text must never trigger a refresh."
)
"""Description of one seeded Contact: a 200 answer that merely *contains* the fault code."""


def contact_name(record: Mapping[str, Value]) -> str:
    """Contact.Name as Salesforce computes it from FirstName and LastName."""
    parts = [record.get("FirstName"), record.get("LastName")]
    return " ".join(str(part) for part in parts if part)


@dataclass
class RecordStore:
    """In-memory records per object, plus the deleted ones that ``queryAll`` still sees.

    The deleted ones are the org's recycle bin: ``undelete`` brings them back (nothing empties
    it, so a deleted record stays undeletable for the life of the store).

    Not thread-safe by itself: the org calls it with its lock held.
    """

    live: dict[str, dict[str, Record]] = field(default_factory=dict)
    """Object name -> 15-character ID -> record (insertion order is query order)."""
    deleted: dict[str, dict[str, Record]] = field(default_factory=dict)
    _next_number: int = 1

    @classmethod
    def seeded(cls) -> RecordStore:
        """The dataset every stand-in org starts with: 3 Accounts and 25 Contacts.

        One Contact's Description holds the literal text INVALID_SESSION_ID (see
        :data:`TRAP_DESCRIPTION`), so tests can prove that a successful answer carrying that
        text is not mistaken for an expired session.
        """
        store = cls()
        account_ids = []
        for name, industry in _ACCOUNTS:
            account = store.insert(
                "Account", {"Name": name, "Industry": industry, "Description": None}
            )
            account_ids.append(account["Id"])
        for index, (first, last) in enumerate(_PEOPLE):
            email = f"{first}.{last.replace(' ', '')}@example.com".lower()
            description = TRAP_DESCRIPTION if index == 7 else f"Seed contact #{index + 1}."
            store.insert(
                "Contact",
                {
                    "AccountId": account_ids[index % len(account_ids)],
                    "FirstName": first,
                    "LastName": last,
                    "Email": email,
                    "Description": description,
                },
            )
        return store

    def new_id(self, spec: SObjectSpec) -> str:
        """Allocate the next record ID for an object (unique within this store)."""
        number = self._next_number
        self._next_number += 1
        return sequential_id(spec.key_prefix, number)

    def insert(self, sobject: str, values: Mapping[str, Value]) -> Record:
        """Add a record (values keyed by canonical field name) and return it with its Id."""
        spec = SCHEMA[sobject.lower()]
        record: Record = {item.name: None for item in spec.fields}
        record.update(values)
        record["Id"] = self.new_id(spec)
        record["IsDeleted"] = False
        self._recompute(spec, record)
        self.live.setdefault(spec.name, {})[id15(str(record["Id"]))] = record
        return record

    def get(self, record_id: str) -> tuple[SObjectSpec, Record] | None:
        """Find a live record by ID (15 or 18 characters) in any object."""
        for name, records in self.live.items():
            record = records.get(id15(record_id))
            if record is not None:
                return SCHEMA[name.lower()], record
        return None

    def is_deleted(self, record_id: str) -> bool:
        """Whether the ID belonged to a record that has since been deleted."""
        return any(id15(record_id) in records for records in self.deleted.values())

    def update(self, spec: SObjectSpec, record: Record, values: Mapping[str, Value]) -> None:
        """Apply changed values to a live record, keeping computed fields right."""
        record.update(values)
        self._recompute(spec, record)

    def delete(self, record_id: str) -> Record | None:
        """Move a live record to the deleted set and return it (None: no such live record)."""
        for name, records in self.live.items():
            record = records.pop(id15(record_id), None)
            if record is not None:
                record["IsDeleted"] = True
                self.deleted.setdefault(name, {})[id15(record_id)] = record
                return record
        return None

    def undelete(self, record_id: str) -> Record | None:
        """Move a deleted record back to the live ones and return it (None: not in the bin).

        It goes back at the end of its object's records, so queries list it last.
        """
        for name, records in self.deleted.items():
            record = records.pop(id15(record_id), None)
            if record is not None:
                record["IsDeleted"] = False
                self.live.setdefault(name, {})[id15(record_id)] = record
                return record
        return None

    def scan(self, sobject: str, *, include_deleted: bool = False) -> Iterator[Record]:
        """Records of one object in a stable order (live first, then deleted for queryAll)."""
        spec = SCHEMA[sobject.lower()]
        yield from self.live.get(spec.name, {}).values()
        if include_deleted:
            yield from self.deleted.get(spec.name, {}).values()

    @staticmethod
    def _recompute(spec: SObjectSpec, record: Record) -> None:
        if spec.name == "Contact":
            record["Name"] = contact_name(record)
