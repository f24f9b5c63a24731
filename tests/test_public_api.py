"""The public surface has an edge: one ``__all__`` at the root, private modules behind it,
and no import cycle anywhere (each module imports alone in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zeep_sfrefresh

PACKAGE = Path(zeep_sfrefresh.__file__).parent

PUBLIC = [
    "APEX_WSDL",
    "ENTERPRISE_WSDL",
    "METADATA_WSDL",
    "PARTNER_WSDL",
    "SALESFORCE_DOMAINS",
    "SOAP_APIS",
    "TOOLING_WSDL",
    "AsyncRestAuth",
    "AsyncRestClient",
    "AsyncSalesforceTransport",
    "CircuitBreaker",
    "ClientCredentials",
    "DeviceLogin",
    "FileTokenStore",
    "Grant",
    "JwtAccessTokenError",
    "JwtBearer",
    "LoginError",
    "MemoryTokenStore",
    "ReauthorizationRequiredError",
    "RedactingFilter",
    "RedisTokenStore",
    "RefreshEvent",
    "RefreshInProgressError",
    "RefreshIntent",
    "RefreshListener",
    "RestAuth",
    "RestOutcome",
    "RestSession",
    "SalesforceOptions",
    "SalesforceTransport",
    "SessionGrant",
    "SessionNotRefreshableError",
    "SfRefreshError",
    "SfdxAuthUrl",
    "SoapApi",
    "StoredToken",
    "Token",
    "TokenDestinationError",
    "TokenFileSettings",
    "TokenRefreshError",
    "TokenStore",
    "TokenStoreConflictError",
    "TokenStoreError",
    "UsernamePassword",
    "__version__",
    "connect",
    "connect_async",
    "fields",
    "fingerprint",
    "finish_device_login",
    "install_log_redaction",
    "keep_field_names",
    "parse_sfdx_auth_url",
    "redeem_refresh_token",
    "remove_log_redaction",
    "rest_outcome",
    "sobject",
    "start_device_login",
    "web_login",
]

PUBLIC_MODULES = {"__init__", "__main__", "partner", "typed"}
"""Besides the package and ``zeep_sfrefresh.testing``: the typed partner calls and the
run-time half every generated stub imports."""


def test_the_root_exports_exactly_the_public_api() -> None:
    assert zeep_sfrefresh.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(zeep_sfrefresh, name) is not None


def test_every_other_module_is_private() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert {m for m in modules if not m.startswith("_")} <= PUBLIC_MODULES
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name[0] not in "_."} == {
        "testing",
        "wsdl",
    }


def _modules() -> list[str]:
    names = [f"zeep_sfrefresh.{path.stem}" for path in PACKAGE.glob("*.py")]
    names += [f"zeep_sfrefresh.testing.{path.stem}" for path in (PACKAGE / "testing").glob("*.py")]
    return sorted(name.removesuffix(".__init__") for name in names if not name.endswith("__main__"))


def test_every_module_imports_alone() -> None:
    """A cycle shows up as an ImportError (a partly initialised module) when the module in
    the middle of it is the first one imported; so each one is imported first, alone."""
    script = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    run = subprocess.run([sys.executable, '-c', f'import {name}'],"
        " capture_output=True, text=True)\n"
        "    if run.returncode: failed.append(name + ': ' + run.stderr.strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *_modules()],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert result.stdout.strip() == ""
