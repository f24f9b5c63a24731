"""AsyncSalesforceTransport beyond the shared test list: many tasks, a free loop, cancellation.

Every test that uses the ``harness`` fixture already runs against the async transport too;
these need real coroutines in one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
import zeep
from conftest import SOQL, make_oauth

from zeep_sfrefresh import PARTNER_WSDL, AsyncSalesforceTransport, TokenRefreshError
from zeep_sfrefresh.testing import StandInOrg

TASKS = 50


def _client(org: StandInOrg, saved: list[dict[str, Any]], **kwargs: Any) -> zeep.AsyncClient:
    transport = AsyncSalesforceTransport(make_oauth(org, org.issue_token(), saved), **kwargs)
    return zeep.AsyncClient(PARTNER_WSDL, transport=transport)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Await (without blocking the loop) until ``condition`` holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.005)


async def _query(client: zeep.AsyncClient) -> int:
    answer = await client.service.query(SOQL)
    return int(answer.body.result.size)


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_fifty_tasks_meeting_one_expiry_make_one_token_request(sf_org: StandInOrg) -> None:
    saved: list[dict[str, Any]] = []

    async def main() -> None:
        async with _client(sf_org, saved) as client:
            sf_org.expire_all_sessions()
            release = sf_org.hold_token_requests()
            tasks = [asyncio.create_task(_query(client)) for _ in range(TASKS)]
            await _until(lambda: sf_org.soap_posts >= TASKS)
            release.set()
            assert await asyncio.gather(*tasks) == [10] * TASKS

    _run(main)
    assert sf_org.token_requests == 1
    assert len(saved) == 1
    assert sf_org.soap_posts == 2 * TASKS


def test_the_loop_runs_while_the_token_request_is_in_flight(
    sf_org: StandInOrg, another_org: StandInOrg
) -> None:
    # The token endpoint answers only after this coroutine, on the same loop, has seen the
    # request arrive and made a whole SOAP call elsewhere. A refresh that blocked the loop
    # would never let it: the refresh would time out (token_timeout) and the call fail.
    async def main() -> None:
        async with (
            _client(sf_org, [], token_timeout=5) as client,
            _client(another_org, []) as other,
        ):
            sf_org.expire_all_sessions()
            release = sf_org.hold_token_requests()
            call = asyncio.create_task(_query(client))
            await _until(lambda: sf_org.token_requests == 1)
            assert await _query(other) == 10
            assert not call.done()
            release.set()
            assert await call == 10

    _run(main)
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 0)


def test_cancelling_tasks_does_not_break_the_others(sf_org: StandInOrg) -> None:
    async def main() -> None:
        async with _client(sf_org, []) as client:
            sf_org.expire_all_sessions()
            release = sf_org.hold_token_requests()
            tasks = [asyncio.create_task(_query(client)) for _ in range(10)]
            await _until(lambda: sf_org.soap_posts >= 10 and sf_org.token_requests == 1)
            for task in tasks[:-1]:  # the one refreshing is among them
                task.cancel()
            release.set()
            assert await tasks[-1] == 10
            outcomes = await asyncio.gather(*tasks[:-1], return_exceptions=True)
            assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
            # The refresh finished in its thread: the next call needs no token request.
            assert await _query(client) == 10

    _run(main)
    assert sf_org.token_requests == 1


def test_a_failed_refresh_reaches_every_waiting_task(sf_org: StandInOrg) -> None:
    async def main() -> None:
        async with _client(sf_org, []) as client:
            sf_org.expire_all_sessions()
            sf_org.token_failure = "invalid_grant"
            release = sf_org.hold_token_requests()
            tasks = [asyncio.create_task(_query(client)) for _ in range(20)]
            await _until(lambda: sf_org.soap_posts >= 20)
            release.set()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(outcome, TokenRefreshError) for outcome in outcomes)
            assert {
                outcome.error for outcome in outcomes if isinstance(outcome, TokenRefreshError)
            } == {"invalid_grant"}

    _run(main)
    assert (sf_org.token_requests, sf_org.soap_posts) == (1, 20)


def test_zeep_async_transport_arguments_are_accepted(sf_org: StandInOrg) -> None:
    async def main() -> None:
        own = httpx.AsyncClient(timeout=10)
        transport = AsyncSalesforceTransport(
            make_oauth(sf_org, sf_org.issue_token(), []), client=own, verify_ssl=True, timeout=30
        )
        assert transport.client is own
        async with zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client:
            assert await _query(client) == 10
        transport.wsdl_client.close()

    _run(main)
