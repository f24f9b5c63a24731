"""FileTokenStore on a real filesystem, with real processes holding and dying on its lock."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from zeep_sfrefresh import (
    FileTokenStore,
    MemoryTokenStore,
    TokenStoreConflictError,
    TokenStoreError,
)

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}


def test_round_trip_and_versions(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    assert store.load() is None
    with store.lock():
        assert store.save(TOKEN, replaces=None) == 1
        assert store.save({**TOKEN, "access_token": "NEW"}, replaces=1) == 2
    loaded = store.load()
    assert loaded is not None
    assert (loaded.version, loaded.token["access_token"]) == (2, "NEW")
    assert json.loads((tmp_path / "token.json").read_text())["version"] == 2
    assert {p.name for p in tmp_path.iterdir()} == {"token.json", "token.json.lock"}


@pytest.mark.parametrize(
    "store_factory", [lambda p: FileTokenStore(p / "t.json"), lambda p: MemoryTokenStore()]
)
def test_compare_and_set_refuses_a_stale_writer(tmp_path: Path, store_factory: object) -> None:
    store = store_factory(tmp_path)  # type: ignore[operator]
    with store.lock():
        store.save(TOKEN, replaces=None)
        with pytest.raises(TokenStoreConflictError):
            store.save(TOKEN, replaces=None)
        store.save(TOKEN, replaces=1)
        with pytest.raises(TokenStoreConflictError, match="version 2, not 1"):
            store.save({**TOKEN, "access_token": "OLDER"}, replaces=1)
    assert store.load().token["access_token"] == TOKEN["access_token"]


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_file_is_0600_and_new_folders_0700_even_under_umask_000(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "new" / "dir" / "token.json")
    with store.lock():
        store.save(TOKEN, replaces=None)
        store.save(TOKEN, replaces=1)  # the replacement too
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(store.path) + ".lock").st_mode) == 0o600


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    with store.lock():
        for version in range(5):
            store.save(TOKEN, replaces=version or None)
    assert {p.name for p in tmp_path.iterdir()} == {"token.json", "token.json.lock"}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"version": 1}',
        b'{"version": 0, "token": {"access_token": "a"}}',
        b'{"version": 1, "token": {}}',
    ],
)
def test_corrupt_file_raises_and_is_never_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "token.json"
    path.write_bytes(content)
    path.chmod(0o600)
    store = FileTokenStore(path)
    with pytest.raises(TokenStoreError, match="left as is"):
        store.load()
    with store.lock(), pytest.raises(TokenStoreError):
        store.save(TOKEN, replaces=None)
    assert path.read_bytes() == content


def test_unreadable_path_is_a_clear_error(tmp_path: Path) -> None:
    (
        tmp_path / "token.json"
    ).mkdir()  # a folder where the file should be: unreadable, even for root
    with pytest.raises(TokenStoreError, match="cannot read"):
        FileTokenStore(tmp_path / "token.json").load()


def test_errors_and_repr_hold_no_token(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text(
        '{"version": 1, "token": {"access_token": "00DSECRETACCESS", "instance_url": 5}'
    )
    path.chmod(0o600)
    store = FileTokenStore(path)
    with pytest.raises(TokenStoreError) as info:
        store.load()
    assert "SECRET" not in str(info.value) + repr(info.value) + repr(store)


def _hold_lock_in_child(path: Path) -> subprocess.Popen[str]:
    code = textwrap.dedent(
        f"""
        import sys, time
        from zeep_sfrefresh import FileTokenStore
        store = FileTokenStore({str(path)!r})
        with store.lock():
            print("locked", flush=True)
            time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"
    return child


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    child = _hold_lock_in_child(path)
    try:
        with (
            pytest.raises(TokenStoreError, match="could not lock"),
            FileTokenStore(path, lock_wait=0.3).lock(),
        ):
            pass
    finally:
        child.kill()
        child.wait()


def test_a_lock_holder_killed_by_sigkill_does_not_block_others(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    child = _hold_lock_in_child(path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = FileTokenStore(path, lock_wait=5)
    with store.lock():
        store.save(TOKEN, replaces=None)
    assert store.load() is not None


def test_memory_store_is_shared_per_session() -> None:
    first, second = requests.Session(), requests.Session()
    assert MemoryTokenStore.for_session(first) is MemoryTokenStore.for_session(first)
    assert MemoryTokenStore.for_session(first) is not MemoryTokenStore.for_session(second)


# --- waiting for another worker's token without the lock ------------------------------------


def _seeded(path: Path, **options: float) -> FileTokenStore:
    store = FileTokenStore(path, **options)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


def test_try_lock_takes_a_free_lock_only_on_the_expected_version(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store, other = _seeded(path), FileTokenStore(path)  # two workers
    with store.try_lock(1) as held:
        assert held
        with other.try_lock(1) as busy:
            assert not busy  # at once: it never waits
    with store.try_lock(2) as held:
        assert not held  # the token moved past the version this worker would refresh
        with other.try_lock(1) as free:
            assert free  # and the lock was not left held
    with store.lock():
        store.save(TOKEN, replaces=1)
    with store.try_lock(1) as held:
        assert not held


def test_try_lock_does_not_wait_for_another_process(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path, lock_wait=30)
    child = _hold_lock_in_child(path)
    try:
        started = time.monotonic()
        with store.try_lock(1) as held:
            assert not held
        assert time.monotonic() - started < 5  # not lock_wait
    finally:
        child.kill()
        child.wait()


def test_wait_for_change_ends_when_another_worker_writes(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store, writer = _seeded(path), FileTokenStore(path)

    def write_later() -> None:
        time.sleep(0.2)
        with writer.lock():
            writer.save({**TOKEN, "access_token": "NEW"}, replaces=1)

    thread = threading.Thread(target=write_later)
    thread.start()
    started = time.monotonic()
    store.wait_for_change(1, timeout=20)
    waited = time.monotonic() - started
    thread.join()
    loaded = store.load()
    assert 0.1 < waited < 10
    assert loaded is not None
    assert loaded.version == 2


def test_wait_for_change_is_bounded_and_sees_a_change_already_made(tmp_path: Path) -> None:
    store = _seeded(tmp_path / "token.json", poll_interval=0.001)
    started = time.monotonic()
    store.wait_for_change(1, timeout=0.3)  # nothing changes
    assert 0.3 <= time.monotonic() - started < 5
    started = time.monotonic()
    store.wait_for_change(0, timeout=20)  # version 1 is already not 0
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("options", [{"poll_interval": 0}, {"lock_wait": -1}])
def test_waits_must_be_positive(tmp_path: Path, options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        FileTokenStore(tmp_path / "token.json", **options)
