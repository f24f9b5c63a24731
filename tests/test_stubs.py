"""Typed calls: ``zeep-sfrefresh stubs`` output, checked by mypy, pyright and real calls.

The generator is checked three ways: its output type-checks (every compact WSDL, and
Salesforce's real ones when ``../shared/reference`` is present); a user's mistakes are
rejected by mypy with the expected messages; and on the stand-in org every operation it
serves runs across an expiry and returns exactly the shape the stub declares.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib
import io
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zeep
from conftest import Harness, make_oauth, sobject
from lxml import etree
from reference import REFERENCE_DIR, requires_reference

from zeep_sfrefresh import (
    APEX_WSDL,
    ENTERPRISE_WSDL,
    METADATA_WSDL,
    PARTNER_WSDL,
    TOOLING_WSDL,
    SalesforceTransport,
    __version__,
    partner,
)
from zeep_sfrefresh._cli import main, stub_for, write_stub
from zeep_sfrefresh._stubgen import FORMAT_VERSION, MAX_STATEMENTS, Stub
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.typed import _type_qnames

Build = Callable[..., Harness]

COMPACT = {
    "partner": PARTNER_WSDL,
    "enterprise": ENTERPRISE_WSDL,
    "tooling": TOOLING_WSDL,
    "metadata": METADATA_WSDL,
    "apex": APEX_WSDL,
}
REAL = [
    "partner-v66.0",
    "partner-v58.0",
    "enterprise-v64.0",
    "enterprise-v60.0",
    "tooling-v61.0",
    "metadata-v66.0",
    "apex-v66.0",
]
needs_reference = requires_reference
REAL_WSDLS = REFERENCE_DIR / "wsdl"
MYPY_CONFIG = """\
[mypy]
strict = True
python_version = 3.10
untyped_calls_exclude = zeep
"""


def _generate(wsdl: str) -> Stub:
    return stub_for(wsdl)


def _write(folder: Path, name: str, wsdl: str) -> Stub:
    stub = stub_for(wsdl)
    write_stub(stub, folder / f"{name}.py")
    return stub


def _mypy(folder: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    (folder / "mypy.ini").write_text(MYPY_CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental", *targets],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def compact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """The five compact WSDLs' generated modules, importable as ``compact_<api>``."""
    folder = tmp_path_factory.mktemp("compact")
    for api, wsdl in COMPACT.items():
        _write(folder, f"compact_{api}", wsdl)
    sys.path.insert(0, str(folder))
    try:
        yield {api: importlib.import_module(f"compact_{api}") for api in COMPACT}
    finally:
        sys.path.remove(str(folder))
        for api in COMPACT:
            sys.modules.pop(f"compact_{api}", None)


# --- the files ------------------------------------------------------------------------------


def test_the_shipped_partner_module_is_a_fresh_generation_of_the_shipped_wsdl(
    tmp_path: Path,
) -> None:
    shipped = Path(partner.__file__)
    _write(tmp_path, "partner", PARTNER_WSDL)
    for suffix in (".py", ".pyi"):
        fresh = (tmp_path / f"partner{suffix}").read_text()
        assert shipped.with_suffix(suffix).read_text() == fresh, (
            f"zeep_sfrefresh/partner{suffix} is stale: run "
            "zeep-sfrefresh stubs zeep_sfrefresh/wsdl/partner.wsdl -o zeep_sfrefresh/partner.py"
        )


def test_output_is_deterministic_and_names_its_source(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    said = io.StringIO()
    assert main(["stubs", ENTERPRISE_WSDL, "-o", str(first / "api.py")], out=said) == 0
    assert said.getvalue().startswith(f"wrote {first / 'api.py'}, {first / 'api.pyi'}: ")
    _write(second, "api", ENTERPRISE_WSDL)  # a second run, through the functions behind it
    for suffix in (".py", ".pyi"):
        assert (first / f"api{suffix}").read_bytes() == (second / f"api{suffix}").read_bytes()
    header = (first / "api.pyi").read_text().splitlines()[1]
    digest = hashlib.sha256(Path(ENTERPRISE_WSDL).read_bytes()).hexdigest()
    assert header == (
        f"# zeep-sfrefresh {__version__} (stub format {FORMAT_VERSION}); WSDL sha256 {digest}"
    )


def test_the_wsdl_may_be_a_url(tmp_path: Path) -> None:
    folder = str(Path(PARTNER_WSDL).parent)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/partner.wsdl"
            _write(tmp_path, "remote", url)
        finally:
            server.shutdown()
    assert (tmp_path / "remote.pyi").read_text() == _generate(PARTNER_WSDL).stubs[""]


def test_the_command_refuses_to_overwrite_a_file_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine.pyi"
    mine.write_text("# my own stub\n")
    assert main(["stubs", PARTNER_WSDL, "-o", str(tmp_path / "mine.py")], out=io.StringIO()) == 1
    assert mine.read_text() == "# my own stub\n"
    assert (
        main(["stubs", PARTNER_WSDL, "-o", str(tmp_path / "not-a-name.py")], out=io.StringIO()) == 1
    )


@needs_reference
def test_a_stub_too_big_for_one_file_is_split_for_pyright(tmp_path: Path) -> None:
    stub = _write(tmp_path, "enterprise", str(REAL_WSDLS / "enterprise-v64.0.wsdl"))
    assert "" not in stub.stubs
    package = tmp_path / "enterprise"
    assert {p.name for p in package.iterdir()} == {
        "__init__.py",
        *(f"{name}.pyi" for name in stub.stubs),
    }
    for path in package.glob("*.pyi"):
        assert len(path.read_text().splitlines()) < MAX_STATEMENTS + 2_000
    assert not (tmp_path / "enterprise.py").exists()


# --- mypy and pyright -----------------------------------------------------------------------


def test_every_compact_stub_passes_mypy_strict(tmp_path: Path) -> None:
    for api, wsdl in COMPACT.items():
        _write(tmp_path, f"compact_{api}", wsdl)
    run = _mypy(tmp_path, *(f"compact_{api}.pyi" for api in COMPACT))
    assert run.returncode == 0, run.stdout + run.stderr


@needs_reference
@pytest.mark.timeout(900)
def test_every_real_salesforce_wsdl_stub_passes_mypy_strict(tmp_path: Path) -> None:
    targets = []
    for name in REAL:
        module = re.sub(r"\W", "_", name)
        stub = _write(tmp_path, module, str(REAL_WSDLS / f"{name}.wsdl"))
        targets.append(f"{module}.pyi" if "" in stub.stubs else module)
    run = _mypy(tmp_path, *targets)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr


@needs_reference
@pytest.mark.timeout(900)
def test_pyright_reports_no_error_on_the_enterprise_stub(tmp_path: Path) -> None:
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent))
    assert pyright is not None, "pyright is a test dependency (pip install -e '.[test]')"
    _write(tmp_path, "enterprise", str(REAL_WSDLS / "enterprise-v64.0.wsdl"))
    (tmp_path / "use.py").write_text(USER_ENTERPRISE)
    (tmp_path / "pyrightconfig.json").write_text(
        '{"pythonVersion": "3.10", "typeCheckingMode": "strict", '
        f'"venvPath": "{Path(sys.prefix).parent}", "venv": "{Path(sys.prefix).name}", '
        '"reportMissingTypeStubs": false, "reportUnknownMemberType": false}'
    )
    run = subprocess.run(
        [pyright, "enterprise", "use.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr
    assert "0 errors" in run.stdout


USER_ENTERPRISE = """\
import zeep
import enterprise

client = zeep.Client("enterprise.wsdl")
service = enterprise.service(client)
types = enterprise.Types(client)
contact = types.Contact(LastName="Hopper", Email="grace@example.com")
created = service.create([contact])
for saved in created.body.result:
    print(saved.id, saved.success)
records = service.query("SELECT Id, LastName FROM Contact").body.result.records
first = enterprise.narrow(records[0], enterprise.Contact)
name: str | None = first.LastName
"""

USER_PARTNER_V66 = """\
import datetime
import zeep
import partner66

client = zeep.Client("partner.wsdl")
service = partner66.service(client)
answer = service.query(
    "SELECT Id FROM Contact", _soapheaders={"QueryOptions": {"batchSize": 200, "scope": "Mine"}}
)
size: int = answer.body.result.size
describe = service.describeSObject("Contact").body.result
if describe is not None:
    prefix = describe.keyPrefix
    if prefix is not None:
        print(prefix.upper())
    for field in describe.fields:
        kind: partner66.fieldType = field.type
login = service.login("user", "password")
print(login.sessionId, login.serverUrl)
stamp: datetime.datetime = service.getServerTimestamp().body.result.timestamp
"""

# Each mistake, the line that makes it, and what mypy must say about it.
MISTAKES = {
    "wrong_argument_type": (
        "partner66.service(client).query(42)",
        'Argument 1 to "query" of "SoapService" has incompatible type "int"; expected "str"',
    ),
    "misspelt_header": (
        'partner66.service(client).query("q", _soapheaders={"SesionHeader": {"sessionId": "x"}})',
        'Extra key "SesionHeader" for TypedDict "query_Headers"',
    ),
    "query_options_without_scope": (
        'partner66.service(client).query("q", _soapheaders={"QueryOptions": {"batchSize": 200}})',
        'Missing key "scope" for TypedDict "QueryOptionsDict"',
    ),
    "misspelt_result_attribute": (
        'partner66.service(client).query("q").body.result.sise',
        '"QueryResult" has no attribute "sise"',
    ),
    "body_on_login": (
        'partner66.service(client).login("u", "p").body',
        '"LoginResult" has no attribute "body"',
    ),
    "unchecked_optional": (
        'partner66.service(client).describeSObject("Contact").body.result.keyPrefix',
        'Item "None" of "DescribeSObjectResult | None" has no attribute "keyPrefix"',
    ),
    "invalid_literal": (
        'scope: partner66.queryOptionsScope = "Everything"',
        "Incompatible types in assignment (expression has type \"Literal['Everything']\"",
    ),
    "enterprise_create_with_a_dict": (
        'enterprise.service(client).create([{"LastName": "Hopper"}])',
        'List item 0 has incompatible type "dict[str, str]"; expected "sObject"',
    ),
    "unknown_types_field": (
        'enterprise.Types(client).Contact(LastNam="Hopper")',
        'Unexpected keyword argument "LastNam" for "Contact" of "Types"',
    ),
    "a_string_for_a_date": (
        'enterprise.Types(client).Contact(Birthdate="1906-12-09")',
        'Argument "Birthdate" to "Contact" of "Types" has incompatible type "str"; '
        'expected "date | None"',
    ),
}


@needs_reference
@pytest.mark.timeout(900)
def test_mypy_accepts_typed_use_and_rejects_each_mistake(tmp_path: Path) -> None:
    _write(tmp_path, "partner66", str(REAL_WSDLS / "partner-v66.0.wsdl"))
    _write(tmp_path, "enterprise", str(REAL_WSDLS / "enterprise-v64.0.wsdl"))
    (tmp_path / "use_partner.py").write_text(USER_PARTNER_V66)
    (tmp_path / "use_enterprise.py").write_text(USER_ENTERPRISE)
    prelude = "import zeep\nimport enterprise\nimport partner66\n\nclient = zeep.Client('x')\n"
    for name, (line, _) in MISTAKES.items():
        (tmp_path / f"mistake_{name}.py").write_text(prelude + line + "\n")
    run = _mypy(
        tmp_path, "use_partner.py", "use_enterprise.py", *(f"mistake_{n}.py" for n in MISTAKES)
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    clean = [e for e in errors if e.startswith(("use_partner.py", "use_enterprise.py"))]
    assert clean == [], "\n".join(clean)
    wrong = {}
    for name, (_, message) in MISTAKES.items():
        found = [e for e in errors if e.startswith(f"mistake_{name}.py:")]
        if not any(message in e for e in found):
            wrong[name] = found or "accepted"
    assert wrong == {}


# --- names ----------------------------------------------------------------------------------

NAMES_WSDL = """\
<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="urn:names.example" xmlns:other="urn:other.example"
    targetNamespace="urn:names.example">
  <types>
    <xsd:schema elementFormDefault="qualified" targetNamespace="urn:other.example">
      <xsd:complexType name="Account"><xsd:sequence>
        <xsd:element name="Name" type="xsd:string"/>
      </xsd:sequence></xsd:complexType>
    </xsd:schema>
    <xsd:schema elementFormDefault="qualified" targetNamespace="urn:names.example">
      <xsd:complexType name="Account"><xsd:sequence>
        <xsd:element name="Name" type="xsd:string"/>
        <xsd:element name="Parent" type="tns:Account" minOccurs="0"/>
        <xsd:element name="Children" type="tns:Account" minOccurs="0" maxOccurs="unbounded"/>
      </xsd:sequence></xsd:complexType>
      <xsd:complexType name="Contact"><xsd:sequence>
        <xsd:element name="Account" type="tns:Account" nillable="true"/>
        <xsd:element name="Other" type="other:Account" minOccurs="0"/>
        <xsd:element name="from" type="xsd:string"/>
        <xsd:element name="global" type="xsd:int" minOccurs="0"/>
        <xsd:element name="str" type="xsd:string"/>
        <xsd:element name="Level">
          <xsd:simpleType><xsd:restriction base="xsd:string">
            <xsd:enumeration value="High"/><xsd:enumeration value="Low"/>
          </xsd:restriction></xsd:simpleType>
        </xsd:element>
      </xsd:sequence></xsd:complexType>
      <xsd:complexType name="class"><xsd:sequence>
        <xsd:element name="if" type="xsd:boolean"/>
      </xsd:sequence></xsd:complexType>
      <xsd:element name="find"><xsd:complexType><xsd:sequence>
        <xsd:element name="key" type="xsd:string"/>
      </xsd:sequence></xsd:complexType></xsd:element>
      <xsd:element name="findResponse"><xsd:complexType><xsd:sequence>
        <xsd:element name="result" type="tns:Contact" maxOccurs="unbounded"/>
      </xsd:sequence></xsd:complexType></xsd:element>
    </xsd:schema>
  </types>
  <message name="findRequest"><part name="parameters" element="tns:find"/></message>
  <message name="findResponse"><part name="parameters" element="tns:findResponse"/></message>
  <portType name="Contact"><operation name="find">
    <input message="tns:findRequest"/><output message="tns:findResponse"/>
  </operation></portType>
  <binding name="ContactBinding" type="tns:Contact">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="find"><soap:operation soapAction=""/>
      <input><soap:body use="literal"/></input><output><soap:body use="literal"/></output>
    </operation>
  </binding>
  <service name="Account"><port binding="tns:ContactBinding" name="Contact">
    <soap:address location="https://example.my.salesforce.com/services/Soap/x/1.0"/>
  </port></service>
</definitions>
"""

USER_NAMES = """\
import zeep
import names

client = zeep.Client("names.wsdl")
found = names.service(client).find("k")
contact = found[0]
account = contact.Account
parent_name: str | None = account.Parent.Name if account and account.Parent else None
children: list[names.Account] = account.Children if account else []
other: names.other_Account | None = contact.Other
sender: str | None = contact["from"]
level: str = contact.Level
text: str | None = contact.str
flag: bool = names.Types(client).class_(**{"if": True})["if"]
"""


def test_names_that_are_keywords_types_or_taken(tmp_path: Path) -> None:
    wsdl = tmp_path / "names.wsdl"
    wsdl.write_text(NAMES_WSDL)
    stub = _write(tmp_path, "names", str(wsdl))
    assert {"Account", "other_Account", "Contact", "class_"} <= set(stub.shapes)
    assert stub.returns["find"] == "list[Contact]"
    (tmp_path / "use_names.py").write_text(USER_NAMES)
    run = _mypy(tmp_path, "names.pyi", "use_names.py")
    assert run.returncode == 0, run.stdout + run.stderr


# --- run time -------------------------------------------------------------------------------


def test_service_refuses_a_client_whose_wsdl_lacks_operations(sf_org: StandInOrg) -> None:
    client = zeep.Client(ENTERPRISE_WSDL, transport=SalesforceTransport(_oauth(sf_org)))
    with pytest.raises(TypeError, match="lacks operations") as info:
        partner.service(client)
    assert "describeGlobal" in str(info.value)
    assert partner.service(zeep.Client(PARTNER_WSDL)) is not None


def test_stub_names_exist_at_run_time() -> None:
    from zeep_sfrefresh.partner import QueryResult, SoapService, fieldType, sObjectDict

    assert QueryResult.__xsd_qname__ == "{urn:partner.soap.sforce.com}QueryResult"  # type: ignore[attr-defined]
    runtime: list[object] = [sObjectDict, fieldType, SoapService]
    assert runtime == [dict, str, object]
    with pytest.raises(AttributeError):
        partner.NoSuchType  # type: ignore[attr-defined]  # noqa: B018


def _oauth(org: StandInOrg) -> Any:
    return make_oauth(org, org.issue_token(), [])


def _conforms(value: Any, annotation: str, stub: Stub, depth: int = 0) -> bool:
    """Whether ``value`` is what ``annotation`` (from the stub) says zeep returns."""
    annotation = annotation.strip()
    options = _split_union(annotation)
    if len(options) > 1:
        return any(_conforms(value, option, stub, depth) for option in options)
    if annotation == "None":
        return value is None
    if annotation.startswith("list[") and annotation.endswith("]"):
        return isinstance(value, list) and all(
            _conforms(item, annotation[5:-1], stub, depth) for item in value
        )
    simple: dict[str, type | tuple[type, ...]] = {
        "str": str,
        "int": int,
        "float": float,
        "bool": bool,
        "bytes": bytes,
        "_dt.datetime": datetime,
        "_dt.date": date,
        "_dt.time": time,
        "_dec.Decimal": Decimal,
    }
    if annotation in simple:
        return isinstance(value, simple[annotation]) and not (
            annotation == "int" and isinstance(value, bool)
        )
    if annotation == "_t.Any":
        return True
    if annotation.startswith("_te.Literal["):
        return isinstance(value, str) and repr(value) in annotation
    if annotation in stub.aliases:
        return value in stub.aliases[annotation]
    if value is None:
        return False
    qname, fields = stub.shapes[annotation.removeprefix("_T_")]
    if qname and qname not in _type_qnames(value):
        return False
    if depth > 3:
        return True
    return all(_conforms(_field(value, name), out, stub, depth + 1) for name, out in fields)


def _field(value: Any, name: str) -> Any:
    return getattr(value, name) if name.isidentifier() else value[name]


def _split_union(annotation: str) -> list[str]:
    parts, level, current = [], 0, ""
    for char in annotation:
        level += char == "["
        level -= char == "]"
        if char == "|" and level == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current]]


def _contact_id(client: Any) -> str:
    return str(client.service.query("SELECT Id FROM Contact LIMIT 1").body.result.records[0].Id)


def _partner_calls(h: Harness) -> dict[str, Callable[[Any], Any]]:
    service = h.client.service
    contact = _contact_id(h.client)
    locator = service.query(
        "SELECT Id FROM Contact", _soapheaders={"QueryOptions": {"batchSize": 2}}
    ).body.result.queryLocator
    doomed = service.create([h.contact("Doomed")]).body.result[0].id
    service.delete([doomed])
    return {
        "query": lambda s: s.query("SELECT Id, LastName FROM Contact"),
        "queryAll": lambda s: s.queryAll("SELECT Id, LastName, IsDeleted FROM Contact"),
        "queryMore": lambda s: s.queryMore(locator),
        "retrieve": lambda s: s.retrieve("Id, LastName", "Contact", [contact]),
        "create": lambda s: s.create([h.contact("Typed")]),
        "update": lambda s: s.update(
            [sobject(h.client, "Contact", Id=contact, LastName="Retyped")]
        ),
        "upsert": lambda s: s.upsert(
            "Email", [sobject(h.client, "Contact", Email="typed@example.com", LastName="Up")]
        ),
        "delete": lambda s: s.delete([_contact_id(h.client)]),
        "undelete": lambda s: s.undelete([doomed]),
        "search": lambda s: s.search("FIND {Hopper} RETURNING Contact(LastName)"),
        "describeGlobal": lambda s: s.describeGlobal(),
        "describeSObject": lambda s: s.describeSObject("Contact"),
        "describeSObjects": lambda s: s.describeSObjects(["Contact", "Account"]),
        "getUserInfo": lambda s: s.getUserInfo(),
        "getServerTimestamp": lambda s: s.getServerTimestamp(),
    }


def test_every_partner_operation_runs_typed_and_returns_its_declared_shape(
    harness: Build, compact: dict[str, ModuleType]
) -> None:
    h = harness()
    stub = _generate(PARTNER_WSDL)
    calls = _partner_calls(h)
    assert set(calls) | {"login"} == set(stub.operations)
    service = h.client.service
    for name, call in calls.items():
        h.org.reset_counters()
        h.org.expire_all_sessions()
        value = call(service)
        assert h.org.token_requests == 1, name
        assert _conforms(value, stub.returns[name], stub), (name, stub.returns[name], value)
    h.org.add_user("typed@example.com", "typed-password")
    login = service.login("typed@example.com", "typed-password")
    assert _conforms(login, stub.returns["login"], stub)
    assert compact["partner"].service(getattr(h.client, "async_client", h.client)) is not None


def test_every_other_compact_operation_returns_its_declared_shape(
    harness: Build, compact: dict[str, ModuleType]
) -> None:
    cases: dict[str, dict[str, Callable[[Any, Any], Any]]] = {
        "enterprise": {
            "query": lambda s, t: s.query("SELECT Id, LastName FROM Contact"),
            "queryMore": lambda s, t: s.queryMore(
                s.query(
                    "SELECT Id FROM Contact", _soapheaders={"QueryOptions": {"batchSize": 2}}
                ).body.result.queryLocator
            ),
            "create": lambda s, t: s.create([t.Contact(LastName="Typed")]),
            "getUserInfo": lambda s, t: s.getUserInfo(),
            "getServerTimestamp": lambda s, t: s.getServerTimestamp(),
        },
        "tooling": {
            "query": lambda s, t: s.query("SELECT Id, Name FROM ApexClass"),
            "getServerTimestamp": lambda s, t: s.getServerTimestamp(),
            "executeAnonymous": lambda s, t: s.executeAnonymous("System.debug('typed');"),
        },
        "metadata": {
            "describeMetadata": lambda s, t: s.describeMetadata(66.0),
            "listMetadata": lambda s, t: s.listMetadata([{"type": "ApexClass"}], 66.0),
        },
        "apex": {"executeAnonymous": lambda s, t: s.executeAnonymous("Integer i = 1;")},
    }
    for api, calls in cases.items():
        stub = _generate(COMPACT[api])
        module = compact[api]
        other = harness(wsdl=COMPACT[api])
        client = getattr(other.client, "async_client", other.client)
        assert module.service(client) is client.service  # checked, then zeep's own proxy
        service = other.client.service  # in async mode the tests' blocking wrapper around it
        types = module.Types(client)
        for name, call in calls.items():
            other.org.reset_counters()
            other.org.expire_all_sessions()
            value = call(service, types)
            assert other.org.token_requests == 1, (api, name)
            assert _conforms(value, stub.returns[name], stub), (api, name, value)
        assert {*calls} <= set(stub.operations)


def test_narrow_checks_the_xsd_type(harness: Build, compact: dict[str, ModuleType]) -> None:
    enterprise = compact["enterprise"]
    h = harness(wsdl=ENTERPRISE_WSDL)
    records = h.client.service.query("SELECT Id, LastName FROM Contact").body.result.records
    contact = enterprise.narrow(records[0], enterprise.Contact)
    assert contact is records[0]
    assert enterprise.narrow(records[0], enterprise.sObject) is records[0]  # a base type
    with pytest.raises(TypeError, match="Account"):
        enterprise.narrow(records[0], enterprise.Account)
    with pytest.raises(TypeError, match="not a class of a generated stub"):
        enterprise.narrow(records[0], dict)
    built = enterprise.Types(h.client).Contact(LastName="Typed")
    assert enterprise.narrow(built, enterprise.Contact) is built
    assert etree.QName(built._xsd_type.qname).localname == "Contact"


USER_SHIPPED = """\
import datetime
import zeep
from zeep_sfrefresh import PARTNER_WSDL, connect, fields, partner, sobject

async def later(client: zeep.AsyncClient) -> datetime.datetime | None:
    service = partner.async_service(client)
    answer = await service.getServerTimestamp()
    return answer.body.result.timestamp if answer.body.result else None

def work(client: zeep.Client) -> None:
    service = partner.service(client)
    service.create([sobject("Contact", LastName="Hopper")])
    answer = service.query("SELECT Id, LastName FROM Contact")
    for record in answer.body.result.records:
        print(fields(record)["LastName"])
    header = answer.header
    if header is not None and header.LimitInfoHeader is not None:
        print(header.LimitInfoHeader.limitInfo)
"""


def test_the_shipped_partner_module_types_the_records_helpers(tmp_path: Path) -> None:
    (tmp_path / "use_shipped.py").write_text(USER_SHIPPED)
    (tmp_path / "mistake_dict.py").write_text(
        USER_SHIPPED.replace(
            'sobject("Contact", LastName="Hopper")', '{"type": "Contact", "LastName": "Hopper"}'
        )
    )
    run = _mypy(tmp_path, "use_shipped.py", "mistake_dict.py")
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, run.stdout
    assert errors[0].startswith("mistake_dict.py:")
    assert 'expected "sObjectDict | sObject"' in errors[0]  # zeep would drop LastName
