"""Shared fixtures: a stand-in org over real sockets and a zeep client wired to it."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import requests
import zeep
from lxml import etree
from requests_oauthlib import OAuth2Session
from zeep.proxy import AsyncServiceProxy

from zeep_sfrefresh import (
    PARTNER_WSDL,
    FileTokenStore,
    MemoryTokenStore,
    RedisTokenStore,
    SalesforceTransport,
)
from zeep_sfrefresh._async_transport import AsyncSalesforceTransport
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.redis_server import REDIS_SERVER, RedisClusterServer, RedisServer

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

T = TypeVar("T")

SOQL = "select id from contact limit 10"
SOBJECT_NS = "urn:sobject.partner.soap.sforce.com"


def sobject(client: zeep.Client, type_name: str, **fields: str) -> Any:
    """A partner sObject: its fields travel as xsd:any elements in the sobject namespace."""
    elements = []
    for name, value in fields.items():
        element = etree.Element(f"{{{SOBJECT_NS}}}{name}")
        element.text = value
        elements.append(element)
    return client.get_type(f"{{{SOBJECT_NS}}}sObject")(type=type_name, _value_1=elements)


def field_values(record: Any) -> dict[str, str | None]:
    """The xsd:any fields of a zeep sObject as {local name: text}."""
    return {etree.QName(element).localname: element.text for element in record["_value_1"] or []}


class LoopThread:
    """An event loop in a background thread, so one test body can drive async clients too."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop from any thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class BlockingService:
    """Calls an AsyncServiceProxy's operations as if they were synchronous."""

    def __init__(self, proxy: Any, loop: LoopThread) -> None:
        self._proxy = proxy
        self._loop = loop

    def __getattr__(self, operation: str) -> Any:
        method = getattr(self._proxy, operation)
        if operation.startswith("_"):
            return method
        return lambda *args, **kwargs: self._loop.run(method(*args, **kwargs))


class BlockingAsyncClient:
    """The parts of ``zeep.Client`` the tests use, over a ``zeep.AsyncClient``."""

    def __init__(self, client: zeep.AsyncClient, loop: LoopThread) -> None:
        self.async_client = client
        self.wsdl = client.wsdl
        self.get_type = client.get_type
        self._loop = loop
        self.service = BlockingService(client.service, loop)

    def create_service(self, binding_name: str, address: str) -> BlockingService:
        # zeep's AsyncClient.create_service returns a synchronous proxy; build the async one.
        binding = self.async_client.wsdl.bindings[binding_name]
        return BlockingService(
            AsyncServiceProxy(self.async_client, binding, address=address), self._loop
        )


@dataclass
class Harness:
    """One user's setup: an OAuth2Session on the org, the transport, a zeep client.

    ``mode`` is "sync" (SalesforceTransport, zeep.Client) or "async"
    (AsyncSalesforceTransport, zeep.AsyncClient driven on a loop thread); test bodies are
    the same for both.
    """

    org: StandInOrg
    oauth: OAuth2Session
    transport: Any
    client: Any
    saved: list[dict[str, Any]]
    """Every token dict ``token_updater`` received, in order."""
    issued: dict[str, Any]
    """The token the session started with."""
    mode: str = "sync"

    @property
    def secrets(self) -> list[str]:
        """Every token and secret this setup has seen: none may reach a log, repr or error."""
        values = [self.issued["access_token"], self.issued["refresh_token"], self.org.client_secret]
        for token in self.saved:
            values += [token["access_token"], token.get("refresh_token") or ""]
        return [value for value in values if value]

    def assert_no_secrets(self, text: str) -> None:
        for secret in self.secrets:
            assert secret not in text

    def contact(self, last_name: str) -> Any:
        """A partner Contact sObject for create calls."""
        return sobject(self.client, "Contact", LastName=last_name)

    @property
    def timeout_error(self) -> type[Exception]:
        return requests.Timeout if self.mode == "sync" else httpx.TimeoutException

    @property
    def connection_error(self) -> type[Exception]:
        return requests.ConnectionError if self.mode == "sync" else httpx.TransportError


def make_oauth(
    org: StandInOrg,
    token: dict[str, Any],
    saved: list[dict[str, Any]],
    *,
    scope: list[str] | None = None,
    auto_refresh_kwargs: dict[str, Any] | None = None,
    token_url: str | None = None,
) -> OAuth2Session:
    return OAuth2Session(
        org.client_id,
        token=token,
        scope=scope,
        auto_refresh_url=token_url or org.token_url,
        auto_refresh_kwargs=(
            {"client_id": org.client_id, "client_secret": org.client_secret}
            if auto_refresh_kwargs is None
            else auto_refresh_kwargs
        ),
        token_updater=saved.append,
    )


@pytest.fixture(params=["sync", "async"])
def harness(sf_org: StandInOrg, request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """Build a Harness; keyword arguments go to make_oauth and the transport.

    Parametrized: every test that uses it runs with the sync and with the async transport.
    """
    mode: str = request.param
    loops: list[tuple[LoopThread, Any]] = []

    def build(
        *,
        scope: list[str] | None = None,
        auto_refresh_kwargs: dict[str, Any] | None = None,
        token_url: str | None = None,
        token: dict[str, Any] | None = None,
        wsdl: str = PARTNER_WSDL,
        **transport_kwargs: Any,
    ) -> Harness:
        issued = token if token is not None else sf_org.issue_token()
        saved: list[dict[str, Any]] = []
        oauth = make_oauth(
            sf_org,
            dict(issued),
            saved,
            scope=scope,
            auto_refresh_kwargs=auto_refresh_kwargs,
            token_url=token_url,
        )
        settings = zeep.Settings(forbid_dtd=True)
        if mode == "sync":
            transport: Any = SalesforceTransport(oauth, **transport_kwargs)
            client: Any = zeep.Client(wsdl, transport=transport, settings=settings)
        else:
            transport = AsyncSalesforceTransport(oauth, **transport_kwargs)
            loop = LoopThread()
            loops.append((loop, transport))
            async_client = zeep.AsyncClient(wsdl, transport=transport, settings=settings)
            client = BlockingAsyncClient(async_client, loop)
        return Harness(sf_org, oauth, transport, client, saved, dict(issued), mode)

    yield build
    for loop, transport in loops:
        loop.run(transport.aclose())
        transport.wsdl_client.close()
        loop.close()


def need_redis_server() -> None:
    """Skip the test when redis-server is not installed, except in CI (.ci/run installs it
    and sets ZEEP_SFREFRESH_REQUIRE_REDIS=1), where its absence is a failure."""
    if REDIS_SERVER is None:
        reason = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get("ZEEP_SFREFRESH_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, killed after the test (see
    :func:`need_redis_server` for when it is skipped)."""
    need_redis_server()
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    need_redis_server()
    with RedisClusterServer(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(_shared_redis_cluster: RedisClusterServer) -> RedisClusterServer:
    """A real Redis cluster of three nodes on loopback, emptied for the test. One cluster
    serves the whole run (starting one takes two seconds): a test must not stop its nodes
    (start a :class:`RedisClusterServer` of its own for that). Skipped as
    :func:`redis_server`."""
    _shared_redis_cluster.flush()
    return _shared_redis_cluster


@pytest.fixture
def tls_org(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInOrg]:
    """An https org. requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override a Session's
    ``verify`` (only a per-request ``verify=`` beats them), so they are unset here: the
    sessions trust the org the way an application's would, through ``verify``."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with StandInOrg(tls=True) as org:
        yield org


@pytest.fixture
def another_org() -> Iterator[StandInOrg]:
    with StandInOrg() as org:
        yield org


class InBackground:
    """A call running in a thread of its own: its result or the exception it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self._call = call
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._call()
        except Exception as exc:  # noqa: BLE001 - kept for the test to assert on
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 30.0) -> InBackground:
        """Wait for the call to end; fail the test (not hang) if it does not in time."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail("a call in the background did not end in time")
        return self


@contextmanager
def held_in_another_thread(held: AbstractContextManager[object]) -> Iterator[None]:
    """Hold ``held`` (a store's ``lock()``, a bare lock) in another thread for the block, as
    another worker's refresh would; it is let go when the block ends. Around a fork the
    windows are microseconds wide in real use; a test holds them open with this."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with held:
            taken.set()
            done.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10), "the other thread never got hold of it"
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``condition`` holds; fail the test (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)


@pytest.fixture
def watches_end() -> Iterator[None]:
    """Stores left in reference cycles are collected after the test, which closes their
    Redis watches' connections: a watch left open would hold a connection to the Redis of
    a test already over (one still being made is closed once made, its failure not
    logged). For test modules that make Redis stores
    with the watch on (``pytestmark = pytest.mark.usefixtures("watches_end")``)."""
    yield
    gc.collect()


def store_maker(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **options: Any
) -> Callable[[], FileTokenStore | MemoryTokenStore | RedisTokenStore]:
    """Make a store object per worker, all on one token: ``kind`` is file, memory (one
    object, as the transports of one session share), redis or redis-cluster."""
    if kind == "file":
        return lambda: FileTokenStore(tmp_path / "token.json", **options)
    if kind == "memory":
        shared = MemoryTokenStore()
        return lambda: shared
    server: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_cluster" if kind == "redis-cluster" else "redis_server"
    )
    return lambda: RedisTokenStore(server.client(), "{sf:token}", **options)


def workers_on_one_store(
    harness: Callable[..., Harness], make: Callable[[], Any], **b_options: Any
) -> tuple[Harness, Harness, Any]:
    """Two workers, a and b, each with its own store object on one token (``make``): b has
    made a call (a Redis store's watch is on), rotation is on and every session expired.
    Returns a, b and b's store; ``b_options`` go to b's transport."""
    a = harness(store=make())
    b_store = make()
    b = harness(store=b_store, **b_options)
    b.client.service.getServerTimestamp()
    a.org.rotation = True
    a.org.expire_all_sessions()
    return a, b, b_store
