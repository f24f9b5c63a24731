"""MemoryTokenStore, the store transports share when given none: versions, intents, the lock,
its repr, and what a forked child inherits."""

from __future__ import annotations

import dataclasses
import os

import pytest
from conftest import held_in_another_thread
from forking import Child, Report

from zeep_sfrefresh import (
    MemoryTokenStore,
    RefreshIntent,
    TokenStoreConflictError,
    TokenStoreError,
    _stores,
)
from zeep_sfrefresh._tokens import fingerprint

ACCESS = "00Dxx0000001gPL!AQ4AQSecretAccessTokenValue"
REFRESH = "5Aep861SecretRefreshTokenValue"
TOKEN = {"access_token": ACCESS, "refresh_token": REFRESH, "instance_url": "https://x.test"}


def _intent(state: _stores.IntentState = "sending") -> RefreshIntent:
    return RefreshIntent(fingerprint(REFRESH), state, 1, "host/1/1", 1_700_000_000.0)


def test_save_is_a_compare_and_set_on_the_version() -> None:
    store = MemoryTokenStore()
    assert store.load() is None
    assert store.save(TOKEN, replaces=None) == 1
    with pytest.raises(TokenStoreConflictError, match="holds version 1, not None"):
        store.save(TOKEN, replaces=None)
    with pytest.raises(TokenStoreConflictError, match="holds version 1, not 3"):
        store.save(TOKEN, replaces=3)
    assert store.save({**TOKEN, "access_token": "next"}, replaces=1) == 2
    stored = store.load()
    assert stored is not None
    assert (stored.version, stored.token["access_token"], stored.intent) == (2, "next", None)


def test_an_intent_is_recorded_on_the_version_it_names_and_a_save_clears_it() -> None:
    store = MemoryTokenStore()
    store.save(TOKEN, replaces=None)
    store.write_intent(_intent(), version=1)
    stored = store.load()
    assert stored is not None
    assert (stored.version, dict(stored.token), stored.intent) == (1, TOKEN, _intent())
    store.write_intent(None, version=1)
    assert store.load() == _stores.StoredToken(TOKEN, 1)
    store.write_intent(_intent("unanswered"), version=1)
    store.save(TOKEN, replaces=1)
    assert store.load() == _stores.StoredToken(TOKEN, 2)


def test_an_intent_for_another_version_or_an_empty_store_is_refused() -> None:
    # The last check before a token request: a refresher whose view is stale must not send.
    store = MemoryTokenStore()
    with pytest.raises(TokenStoreConflictError, match="holds version None, not 1"):
        store.write_intent(_intent(), version=1)
    assert store.load() is None
    store.save(TOKEN, replaces=None)
    with pytest.raises(TokenStoreConflictError, match="holds version 1, not 2"):
        store.write_intent(_intent(), version=2)
    assert store.load() == _stores.StoredToken(TOKEN, 1)


def test_what_load_returns_cannot_be_changed_in_place() -> None:
    store = MemoryTokenStore()
    store.save(TOKEN, replaces=None)
    store.write_intent(_intent(), version=1)
    stored = store.load()
    assert stored is not None
    assert stored.intent is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.version = 7  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.intent.state = "spent"  # type: ignore[misc]
    stored.token["access_token"] = "CHANGED"  # type: ignore[index]  # a copy, as any read
    assert store.load() == _stores.StoredToken(TOKEN, 1, _intent())


def test_repr_names_the_token_by_fingerprint_only() -> None:
    store = MemoryTokenStore()
    assert repr(store) == "MemoryTokenStore(None)"
    store.save(TOKEN, replaces=None)
    shown = f"StoredToken(version=1, access_token={fingerprint(ACCESS)})"
    assert repr(store) == f"MemoryTokenStore({shown})"
    store.write_intent(_intent(), version=1)
    assert repr(store.load()) == shown[:-1] + ", intent=sending)"
    assert ACCESS not in repr(store)
    assert REFRESH not in repr(store)


def test_the_documented_lock_wait() -> None:
    assert MemoryTokenStore().lock_wait == 30.0  # as the workers guide says


def test_a_lock_held_longer_than_lock_wait_is_a_clear_error() -> None:
    store = MemoryTokenStore(lock_wait=0.05)
    with (
        held_in_another_thread(store.lock()),
        pytest.raises(TokenStoreError, match=r"within 0\.05 s"),
        store.lock(),
    ):
        pass  # pragma: no cover - the lock is not free
    with store.lock():  # free again once the other thread let go
        pass


@pytest.mark.parametrize("lock_wait", [0.0, -1.0])
def test_lock_wait_must_be_positive(lock_wait: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryTokenStore(lock_wait=lock_wait)


class _Session:
    """Stands for the OAuth2Session transports are built on (a store per session)."""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_child_forked_while_other_threads_hold_the_locks_can_use_the_store() -> None:
    # gunicorn --preload, Celery prefork: the parent's threads do not follow into the child,
    # so a lock one of them held at the fork would stay held there for ever.
    store = MemoryTokenStore(lock_wait=2.0)
    store.save(TOKEN, replaces=None)
    session = _Session()

    def child() -> Report:
        with store.lock():
            version = store.save(TOKEN, replaces=1)
            store.write_intent(_intent(), version=version)
        other = MemoryTokenStore.for_session(session)
        return {"version": version, "shared": MemoryTokenStore.for_session(session) is other}

    with (
        held_in_another_thread(store.lock()),
        held_in_another_thread(store._data_lock),
        held_in_another_thread(_stores._SESSION_STORES_LOCK),
    ):
        forked = Child(child)
    try:
        report, code = forked.result(timeout=10)
    finally:
        forked.kill()
    assert (report, code) == ({"version": 2, "shared": True}, 0)
    assert store.load() == _stores.StoredToken(TOKEN, 1)  # the child's writes are its own
