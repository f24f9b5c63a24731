"""FileTokenStore on a real filesystem, with real processes holding and dying on its lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import held_in_another_thread
from disk import file_size_limit

from zeep_sfrefresh import (
    FileTokenStore,
    MemoryTokenStore,
    TokenStoreConflictError,
    TokenStoreError,
)
from zeep_sfrefresh._stores import RefreshIntent, StoredToken, _Flock, _locked, _PortableLock

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}
NEWER = {**TOKEN, "access_token": "00DSECRETACCESS2", "refresh_token": "5AepSECRETREFRESH2"}


def _plant(path: Path, content: bytes | str | dict[str, Any]) -> None:
    """Write ``content`` (a dict as JSON) at ``path``, mode 0600: a file as another program,
    an earlier release or a power loss left it."""
    data = json.dumps(content) if isinstance(content, dict) else content
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


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
    _plant(path, content)
    store = FileTokenStore(path)
    with pytest.raises(TokenStoreError, match="left as is"):
        store.load()
    with store.lock(), pytest.raises(TokenStoreError):
        store.save(TOKEN, replaces=None)
    assert path.read_bytes() == content


def test_unreadable_path_is_a_clear_error(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    # A folder where the file should be, made after the store: unreadable, even for root.
    (tmp_path / "token.json").mkdir()
    with pytest.raises(TokenStoreError, match="cannot read"):
        store.load()


def test_errors_and_repr_hold_no_token(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _plant(path, '{"version": 1, "token": {"access_token": "00DSECRETACCESS", "instance_url": 5}')
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
    store = FileTokenStore(path, lock_wait=0.3)
    child = _hold_lock_in_child(path)
    try:
        with pytest.raises(TokenStoreError, match=r"could not lock .* within 0\.3 s"), store.lock():
            pass
        with store.try_lock(1) as held:
            assert not held
    finally:
        child.kill()
        child.wait()
    with store.lock():  # giving up left nothing of this process's held
        store.save(TOKEN, replaces=None)


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


def _seeded(path: Path, **options: Any) -> FileTokenStore:
    store = FileTokenStore(path, **options)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


def test_try_lock_takes_a_free_lock_only_on_the_expected_version(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store, other = _seeded(path), FileTokenStore(path)  # two workers
    intent = RefreshIntent("fp", "unanswered", 1, "host/1/1", 1.7e9)
    with store.lock():
        store.write_intent(intent, version=1)
    with store.try_lock(1) as held:
        # What it read under the lock: the token and its intent (no second read needed).
        assert held == store.load() == StoredToken(TOKEN, 1, intent)
        with other.try_lock(1) as busy:
            assert not busy  # at once: it never waits
    with store.try_lock(2) as held:
        # Another version than this worker would refresh: what the file holds, not locked.
        assert held == StoredToken(TOKEN, 1, intent)
        with other.try_lock(1) as free:
            assert free  # and the lock was not left held
    with store.lock():
        store.save(NEWER, replaces=1)
    with store.try_lock(1) as held:
        assert held == StoredToken(NEWER, 2)  # the token moved past the one it would refresh
        with other.try_lock(2) as free:
            assert free
    with FileTokenStore(tmp_path / "empty.json").try_lock(1) as held:
        assert held is False


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


@pytest.mark.parametrize("name", ["", ".", "..", "/", "folder", "folder/", "link", "missing/.."])
def test_a_path_that_is_no_file_name_is_refused_when_the_store_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Not at the first read, with an error about a file that is not regular.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    with pytest.raises(ValueError, match=f"path must name the token file, not a folder: {name!r}"):
        FileTokenStore(name)
    FileTokenStore("folder/token.json")  # a file in a folder that exists
    FileTokenStore("missing/token.json")  # or not yet: made with the first write


@pytest.mark.parametrize(
    "options", [{"poll_interval": 0}, {"poll_interval": -1}, {"lock_wait": 0}, {"lock_wait": -1}]
)
def test_waits_must_be_positive(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        FileTokenStore(tmp_path / "token.json", **options)


# --- failures a real filesystem produces ----------------------------------------------------------


@pytest.mark.parametrize("write_kind", ["save", "write_intent"])
def test_a_failed_write_raises_and_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, write_kind: str
) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    before = path.read_bytes()
    intent = RefreshIntent("sha256:0123abcd", "sending", 1, "here/1/x", 1.0)
    written = path if write_kind == "save" else store.intent_path
    failed = f"cannot write {written}: File too large"

    def write() -> None:
        if write_kind == "save":
            store.save({**TOKEN, "access_token": "NEW"}, replaces=1)
        else:
            store.write_intent(intent, version=1)

    with store.lock(), file_size_limit(16), pytest.raises(TokenStoreError, match=failed):
        write()
    assert path.read_bytes() == before  # the old token, whole
    assert {p.name for p in tmp_path.iterdir()} == {"token.json", "token.json.lock"}
    with store.lock():  # the disk has room again: the same write goes through
        write()
    loaded = store.load()
    assert loaded is not None
    assert (loaded.version, loaded.intent) == ((2, None) if write_kind == "save" else (1, intent))


def test_a_folder_removed_under_a_worker_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    store = FileTokenStore(folder / "token.json")
    with store.lock():
        shutil.rmtree(folder)  # a cleaner swept it away
        with pytest.raises(TokenStoreError, match=f"cannot write in {folder}"):
            store.save(TOKEN, replaces=None)
    assert not folder.exists()


@pytest.mark.parametrize("blocked", ["folder-is-a-file", "lock-is-a-folder"])
def test_a_lock_that_cannot_be_made_is_a_clear_error_and_holds_nothing(
    tmp_path: Path, blocked: str
) -> None:
    folder = tmp_path / "tokens"
    store = FileTokenStore(folder / "token.json", lock_wait=1)
    if blocked == "folder-is-a-file":
        folder.write_text("")
    else:
        (folder / "token.json.lock").mkdir(parents=True)
    for _ in range(2):  # the second attempt fails the same way, not on a lock left held
        with (
            pytest.raises(TokenStoreError, match=r"could not lock .*: (File exists|Is a dir)"),
            store.lock(),
        ):
            pass
        with pytest.raises(TokenStoreError), store.try_lock(1):
            pass
    if blocked == "folder-is-a-file":
        folder.unlink()
    else:
        (folder / "token.json.lock").rmdir()
    with store.lock():
        store.save(TOKEN, replaces=None)


def test_threads_of_one_process_share_the_lock_of_one_store(tmp_path: Path) -> None:
    store = _seeded(tmp_path / "token.json", lock_wait=0.3)
    with held_in_another_thread(store.lock()):
        with pytest.raises(TokenStoreError, match="could not lock"), store.lock():
            pass
        with store.try_lock(1) as held:
            assert not held
    with store.try_lock(1) as held:
        assert held


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_reads_and_writes_leave_no_file_descriptor_open(tmp_path: Path) -> None:
    store = _seeded(tmp_path / "token.json")
    open_before = len(os.listdir("/proc/self/fd"))
    for version in range(1, 21):
        with store.lock():
            store.write_intent(
                RefreshIntent("sha256:0123abcd", "sending", 1, "x", 1.0), version=version
            )
            store.save(TOKEN, replaces=version)
        store.load()
        store.wait_for_change(version, timeout=0.001)
    assert len(os.listdir("/proc/self/fd")) <= open_before


@pytest.mark.timeout(60)
def test_waiting_on_an_emptied_store_returns_for_the_caller_to_find_out(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    path.unlink()
    store.wait_for_change(1, timeout=600)  # would sleep the whole timeout if it waited
    assert store.load() is None


# --- what is refused, as ssh refuses a private key ----------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda path: (path.unlink(), path.symlink_to(path.with_name("target.json"))),
            "is a symbolic link",
        ),
        (lambda path: path.chmod(0o640), r"open to group or others \(mode 0640\)"),
        (lambda path: path.chmod(0o604), "chmod 600"),
        (lambda path: path.chmod(0o601), r"\(mode 0601\)"),
        (lambda path: (path.unlink(), path.mkdir()), "not a regular file"),
    ],
    ids=["symlink", "group", "others", "others-x", "folder"],
)
def test_a_token_file_that_is_not_safely_ours_is_refused(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    _seeded(tmp_path / "target.json")
    path = tmp_path / "token.json"
    store = _seeded(path)
    make(path)
    with pytest.raises(TokenStoreError, match=message):
        store.load()
    with store.lock(), pytest.raises(TokenStoreError, match=message):
        store.save(TOKEN, replaces=1)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_token_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    os.chown(path, 65534, -1)
    with pytest.raises(TokenStoreError, match="owned by uid 65534"):
        store.load()


_INTENT = {
    "refresh_token": "sha256:0123abcd",
    "state": "unanswered",
    "attempts": 1,
    "holder": "host/1/x",
    "since": 1700000000.5,
    "reason": "",
}


@pytest.mark.parametrize(
    "intent",
    [
        "sending",
        {k: v for k, v in _INTENT.items() if k != "holder"},
        {**_INTENT, "extra": 1},
        {**_INTENT, "state": "paused"},
        {**_INTENT, "refresh_token": 5},
        {**_INTENT, "attempts": "1"},
        {**_INTENT, "holder": None},
        {**_INTENT, "since": "yesterday"},
        {**_INTENT, "reason": 0},
    ],
    ids=[
        "not-an-object",
        "field-missing",
        "field-unknown",
        "state",
        "refresh_token",
        "attempts",
        "holder",
        "since",
        "reason",
    ],
)
def test_a_file_with_an_intent_it_did_not_write_is_refused_and_kept(
    tmp_path: Path, intent: object
) -> None:
    path = tmp_path / "token.json"
    _plant(path, {"version": 1, "token": TOKEN, "intent": intent})
    before = path.read_bytes()
    store = FileTokenStore(path)
    with pytest.raises(TokenStoreError, match="not a token file written by zeep-sfrefresh"):
        store.load()
    with store.lock(), pytest.raises(TokenStoreError):
        store.save(TOKEN, replaces=1)
    assert path.read_bytes() == before


def test_intents_and_settings_round_trip_and_a_token_write_clears_only_the_intent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token.json"
    store = FileTokenStore(path)
    settings = {"grant": "refresh_token", "client_id": "3MVG9standin"}
    with store.lock(), pytest.raises(TokenStoreConflictError, match="holds version None, not 1"):
        store.write_intent(None, version=1)  # nothing to record an intent on
    intent = RefreshIntent(**{**_INTENT, "since": 1700000000})  # type: ignore[arg-type]
    with store.lock():
        assert store.load_settings() is None
        store.save(TOKEN, replaces=None, settings=settings)
        store.write_intent(intent, version=1)
        loaded = store.load()
        assert loaded is not None
        assert (loaded.version, loaded.intent, store.load_settings()) == (1, intent, settings)
        shown = repr(loaded)
        assert "intent=unanswered" in shown
        assert "version=1" in shown
        assert TOKEN["access_token"] not in shown
        assert store.save(TOKEN, replaces=1) == 2  # a refresh: the settings stay
        loaded = store.load()
        assert loaded is not None
        assert (loaded.intent, store.load_settings()) == (None, settings)
        assert "intent" not in repr(loaded)
        store.write_intent(intent, version=2)
        store.write_intent(None, version=2)
        with pytest.raises(TokenStoreConflictError, match="holds version 2, not 1"):
            store.write_intent(intent, version=1)
        assert store.save(TOKEN, replaces=2, settings={"grant": "jwt"}) == 3
    loaded = store.load()
    assert loaded is not None
    assert (loaded.intent, store.load_settings()) == (None, {"grant": "jwt"})


def test_settings_that_are_not_strings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _plant(path, {"version": 1, "token": TOKEN, "settings": {"timeout": 30}})
    with pytest.raises(TokenStoreError, match="settings that are not strings"):
        FileTokenStore(path).load_settings()


def test_a_token_path_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("")
    with pytest.raises(TokenStoreError, match=r"cannot read .*: Not a directory"):
        FileTokenStore(tmp_path / "tokens" / "token.json").load()


def test_a_token_larger_than_one_read_is_read_whole(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    large = {**TOKEN, "id_token": "x" * 200_000}  # an OpenID Connect id_token, say
    with store.lock():
        store.save(large, replaces=None)
    loaded = store.load()
    assert loaded is not None
    assert loaded.token == large


def _lock_in_child_until_told(path: Path) -> subprocess.Popen[str]:
    code = textwrap.dedent(
        f"""
        import sys
        from zeep_sfrefresh import FileTokenStore
        store = FileTokenStore({str(path)!r})
        with store.lock():
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
        sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"
    return child


def test_try_lock_answers_from_one_look_not_a_wait(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    child = _lock_in_child_until_told(path)
    to_child, from_child = child.stdin, child.stdout
    assert to_child is not None
    assert from_child is not None
    # The holder lets go half a second from now; one look, now, finds the lock busy.
    release = threading.Timer(0.5, lambda: (to_child.write("go\n"), to_child.flush()))
    release.start()
    try:
        with store.try_lock(1) as held:
            assert not held
        release.join()
        assert from_child.readline().strip() == "released"
        with store.try_lock(1) as held:
            assert held
    finally:
        release.cancel()
        child.kill()
        child.wait()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_a_thread_holds_the_lock_gets_a_lock_of_its_own(
    tmp_path: Path,
) -> None:
    # gunicorn --preload or a multiprocessing fork while a refresh holds the lock: the child
    # has no copy of that thread, so a lock state copied from it would never be released.
    store = _seeded(tmp_path / "token.json", lock_wait=10)
    go_read, go_write = os.pipe()
    with held_in_another_thread(store.lock()):
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                os.close(go_write)
                os.read(go_read, 1)  # until the parent's thread has let go
                with store.lock():
                    code = 0
            finally:
                os._exit(code)
        os.close(go_read)
    os.write(go_write, b"x")
    os.close(go_write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_a_file_the_disk_fails_to_read_is_a_clear_error() -> None:
    # /proc/self/mem is a regular file of ours, mode 0600, whose first page reads fail with
    # EIO: what a failing disk gives, with no disk to break.
    with pytest.raises(TokenStoreError, match="cannot read /proc/self/mem: Input/output error"):
        FileTokenStore("/proc/self/mem").load()


class _TimeLimitExceeded(Exception):
    """What a task runner's signal handler raises in a task that ran too long (Celery's
    SoftTimeLimitExceeded, say)."""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer (POSIX)")
def test_a_lock_wait_cut_short_by_a_signal_leaves_the_store_usable(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = FileTokenStore(path, lock_wait=2)
    child = _hold_lock_in_child(path)

    def time_limit(signum: int, frame: object) -> None:
        raise _TimeLimitExceeded

    previous = signal.signal(signal.SIGALRM, time_limit)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(_TimeLimitExceeded), store.lock():
            pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        child.kill()
        child.wait()
    with store.lock():  # the next task of this worker
        store.save(TOKEN, replaces=None)


# --- the lock: flock, as filelock takes it, across forks -----------------------------------


def _hold_lock_and_fork(path: Path, child_lives: bool) -> tuple[subprocess.Popen[str], int]:
    """A process that holds the store's lock and forks a child (which leaves the store
    alone, as a forked web worker would); returns it and the child's pid once both run."""
    code = textwrap.dedent(
        f"""
        import os, time
        from zeep_sfrefresh import FileTokenStore
        store = FileTokenStore({str(path)!r})
        with store.lock():
            pid = os.fork()
            if pid == 0:
                if {child_lives!r}:
                    time.sleep(600)
                os._exit(0)
            if not {child_lives!r}:
                os.waitpid(pid, 0)
            print(pid, flush=True)
            time.sleep(600)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    return holder, int(holder.stdout.readline())


def test_a_child_forked_by_the_lock_holder_neither_frees_nor_keeps_its_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path, lock_wait=5)
    holder, _ = _hold_lock_and_fork(path, child_lives=False)
    try:
        with store.try_lock(1) as held:
            assert not held  # the child's exit did not free the parent's lock
    finally:
        holder.kill()
        holder.wait()
    holder, child = _hold_lock_and_fork(path, child_lives=True)
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with store.lock():  # the holder died: its child, still running, holds nothing
            os.kill(child, 0)  # (still running)
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_lock_file_unlinked_before_the_flock_is_not_taken(tmp_path: Path) -> None:
    # Another program removed <path>.lock between this worker's open and its flock: the
    # unlinked file is no lock any more (the next worker makes a new one).
    lock_file = tmp_path / "token.json.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    lock_file.unlink()
    assert not _locked(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # closed


@pytest.mark.skipif(not hasattr(os, "O_PATH"), reason="needs O_PATH (Linux)")
def test_a_lock_failure_other_than_a_busy_lock_is_raised(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_PATH)  # flock refuses such a descriptor: EBADF
    with pytest.raises(OSError, match="Bad file descriptor"):
        _locked(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # closed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX: where there is flock")
def test_where_there_is_flock_the_store_takes_it_itself(tmp_path: Path) -> None:
    # Not through filelock, whose machinery costs some 30 times an open and a flock, once
    # per worker meeting an expiry; filelock is only for platforms without flock.
    assert isinstance(FileTokenStore(tmp_path / "token.json")._file_lock, _Flock)


def test_this_store_and_filelock_exclude_each_other(tmp_path: Path) -> None:
    # filelock takes the same flock on POSIX: workers of an earlier release (which locked
    # through filelock) and of this one never refresh at once.
    path = str(tmp_path / "token.json.lock")
    ours, theirs = _Flock(path), _PortableLock(path)
    assert ours.try_acquire()
    assert not theirs.try_acquire()
    ours.release()
    assert theirs.try_acquire()
    assert not ours.try_acquire()
    theirs.release()
    assert ours.try_acquire()
    ours.release()


# --- intents beside the token file ---------------------------------------------------------


def test_an_intent_goes_beside_the_token_file_which_stays_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    before, identity = path.read_bytes(), os.stat(path)
    with store.lock():
        store.write_intent(RefreshIntent(**_INTENT), version=1)  # type: ignore[arg-type]
    after = os.stat(path)
    assert path.read_bytes() == before
    assert (after.st_ino, after.st_mtime_ns) == (identity.st_ino, identity.st_mtime_ns)
    assert stat.S_IMODE(os.stat(store.intent_path).st_mode) == 0o600
    assert store.intent_path == tmp_path / "token.json.intent"
    loaded = store.load()
    assert loaded is not None
    assert (loaded.version, loaded.intent) == (1, RefreshIntent(**_INTENT))  # type: ignore[arg-type]
    with store.lock():
        store.save({**TOKEN, "access_token": "NEW"}, replaces=1)
    assert not store.intent_path.exists()  # a token write clears it


def test_wait_for_change_is_not_ended_by_an_intent(tmp_path: Path) -> None:
    # The refreshing worker records its intent, then its token: the others wake for the
    # token only, both for an intent beside the file and one an earlier release wrote in it.
    path = tmp_path / "token.json"
    store, writer = _seeded(path, poll_interval=0.001), FileTokenStore(path)
    intent = RefreshIntent(**_INTENT)  # type: ignore[arg-type]

    def refresh_later() -> None:
        with writer.lock():
            time.sleep(0.05)
            writer.write_intent(intent, version=1)
            time.sleep(0.05)
            temp = tmp_path / "legacy.json"
            _plant(temp, {"version": 1, "token": TOKEN, "intent": intent.to_json()})
            os.replace(temp, path)  # the whole file rewritten, on the same version
            time.sleep(0.3)
            writer.save({**TOKEN, "access_token": "NEW"}, replaces=1)

    thread = threading.Thread(target=refresh_later)
    thread.start()
    try:
        store.wait_for_change(1, timeout=20)
        loaded = store.load()
    finally:
        thread.join()
    assert loaded is not None
    assert (loaded.version, loaded.token["access_token"]) == (2, "NEW")


def test_an_intent_written_in_the_token_file_by_an_earlier_release_is_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token.json"
    intent = RefreshIntent(**_INTENT)  # type: ignore[arg-type]
    _plant(path, {"version": 1, "token": TOKEN, "intent": intent.to_json()})
    store = FileTokenStore(path)
    loaded = store.load()
    assert loaded is not None
    assert loaded.intent == intent
    with store.lock():
        store.write_intent(None, version=1)  # the newer record for version 1 wins
    loaded = store.load()
    assert loaded is not None
    assert loaded.intent is None
    spent = RefreshIntent(**{**_INTENT, "state": "spent", "reason": "refused"})  # type: ignore[arg-type]
    with store.lock():
        store.write_intent(spent, version=1)
    loaded = store.load()
    assert loaded is not None
    assert loaded.intent == spent


def test_an_intent_recorded_for_another_version_is_not_this_tokens(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    with store.lock():
        store.save({**TOKEN, "access_token": "NEW"}, replaces=1)
    for version in (1, 3):  # one a crash left before a token write removed it; one ahead
        _plant(store.intent_path, {"version": version, "intent": _INTENT})
        loaded = store.load()
        assert loaded is not None
        assert (loaded.version, loaded.intent) == (2, None)


@pytest.mark.parametrize(
    "content",
    [b"", b"\0" * 64, b'{"version": 1, "intent": {"state": "sending"}}', b"[1]", b'{"v": 1}'],
    ids=["empty", "zeros", "not-an-intent", "not-an-object", "no-version"],
)
def test_an_intent_file_a_power_loss_left_unreadable_reads_as_none(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # Intents are not synced: after a power loss the file may be empty or zeros. The token is
    # never at risk, and no intent only means the refresh token may be sent once more.
    path = tmp_path / "token.json"
    store = _seeded(path)
    _plant(store.intent_path, content)
    loaded = store.load()
    assert loaded is not None
    assert (loaded.version, loaded.intent) == (1, None)
    assert f"{store.intent_path} does not hold an intent; read as none" in caplog.text
    with store.lock():
        store.write_intent(RefreshIntent(**_INTENT), version=1)  # type: ignore[arg-type]
    loaded = store.load()
    assert loaded is not None
    assert loaded.intent == RefreshIntent(**_INTENT)  # type: ignore[arg-type]


def test_an_intent_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _seeded(path)
    (tmp_path / "elsewhere").write_text("{}")
    store.intent_path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TokenStoreError, match=r"token\.json\.intent is a symbolic link"):
        store.load()


def test_a_child_forked_before_the_store_was_ever_locked_takes_its_lock_quietly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token.json"
    code = textwrap.dedent(
        f"""
        import logging, os
        from zeep_sfrefresh import FileTokenStore
        logging.basicConfig()  # a failure in the fork hook is logged, not raised
        store = FileTokenStore({str(path)!r})
        pid = os.fork()
        if pid == 0:
            with store.lock():
                store.save({{"access_token": "00DCHILD"}}, replaces=None)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert (done.stdout.strip(), done.stderr) == ("0", "")  # no error in the fork hook
    loaded = FileTokenStore(path).load()
    assert loaded is not None
    assert loaded.token == {"access_token": "00DCHILD"}


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "token.json.lock").symlink_to(tmp_path / "elsewhere")
    store = FileTokenStore(path, lock_wait=1)
    with pytest.raises(TokenStoreError, match=r"could not lock .*symbolic links"), store.lock():
        pass


def test_a_released_lock_is_free_whatever_copies_of_its_descriptor_remain(
    tmp_path: Path,
) -> None:
    # A copy of the descriptor (in a child the fork hooks never reached, say) must not keep
    # the lock held once its holder lets go.
    path = str(tmp_path / "token.json.lock")
    holder, other = _Flock(path), _Flock(path)
    assert holder.try_acquire()
    assert holder._fd is not None
    copy = os.dup(holder._fd)
    try:
        holder.release()
        assert other.try_acquire()
        other.release()
    finally:
        os.close(copy)


def test_the_portable_lock_makes_a_private_lock_file_and_never_waits(tmp_path: Path) -> None:
    path = tmp_path / "token.json.lock"
    first, second = _PortableLock(str(path)), _PortableLock(str(path))
    assert first.try_acquire()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    started = time.monotonic()
    assert not second.try_acquire()
    assert time.monotonic() - started < 0.5  # one try, not a wait
    first.release()
