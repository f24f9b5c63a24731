"""A fleet of worker processes sharing one rotating refresh token: one refresh per expiry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.fleet import Fleet, StoreSpec, run_fleet
from zeep_sfrefresh.testing.redis_server import RedisServer

WORKERS = 8
EXPIRIES = 3


def _spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreSpec:
    if kind == "file":
        return StoreSpec("file", str(tmp_path / "token.json"))
    server: RedisServer = request.getfixturevalue("redis_server")
    return StoreSpec("redis", server.url, key="{sf:token:fleet}")


@pytest.mark.parametrize(
    "hold", [True, False], ids=["held-token-endpoint", "prompt-token-endpoint"]
)
@pytest.mark.parametrize("kind", ["file", "redis"])
def test_eight_processes_three_expiries_one_refresh_each(
    sf_org: StandInOrg, tmp_path: Path, request: pytest.FixtureRequest, kind: str, hold: bool
) -> None:
    spec = _spec(kind, tmp_path, request)
    sf_org.rotation = True
    sf_org.reject_overlapping_refreshes = True
    # Holding the token endpoint until all 8 workers have met the expiry makes every round
    # the widest race possible: 8 processes want to refresh the same token at once. With a
    # prompt endpoint, the workers that meet the expiry after the refresh find its token.
    results = run_fleet(sf_org, spec, workers=WORKERS, rounds=EXPIRIES, hold=hold)
    assert [r.errors for r in results] == [()] * EXPIRIES
    assert [r.ok for r in results] == [WORKERS] * EXPIRIES
    assert sf_org.token_requests == EXPIRIES
    assert sf_org.family_revocations == 0
    assert sf_org.overlap_rejections == 0
    assert sf_org.token_failures == 0
    # The store's lock is taken once per expiry, by the worker that refreshes: the other
    # seven adopt its token without queueing on the lock to read it.
    assert [r.locks for r in results] == [1] * EXPIRIES


def test_a_round_of_two_calls_each_posts_twice_per_worker_without_a_refresh(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    # The benchmark's floor for a round after an expiry: each worker's two calls in a row.
    spec = StoreSpec("file", str(tmp_path / "token.json"))
    with Fleet(sf_org, spec, workers=2, rounds=2) as fleet:
        # The workers' process ids, whose CPU time the benchmark reads: live, and not ours.
        assert len(set(fleet.pids)) == 2
        assert os.getpid() not in fleet.pids
        for pid in fleet.pids:
            os.kill(pid, 0)  # raises if there is no such process
        with pytest.raises(ValueError, match="at least one call"):
            fleet.round(expire=False, calls=0)
        before = sf_org.soap_posts
        two = fleet.round(expire=False, calls=2)
        assert (two.ok, two.failed, sf_org.soap_posts - before) == (2, 0, 4)
        one = fleet.round(expire=False)
        assert (one.ok, sf_org.soap_posts - before) == (2, 6)
    assert sf_org.token_requests == 0
