"""FileWatch: a waiter's sleep that a write of the token file ends (inotify on Linux), and
the store's waits that use it, on a real filesystem with real writes."""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeep_sfrefresh import FileTokenStore, _filewatch
from zeep_sfrefresh._filewatch import FileWatch, names_file
from zeep_sfrefresh._stores import RefreshIntent

linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="inotify is Linux's; elsewhere a wait sleeps"
)

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}

IN_OPEN, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x20, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_Q_OVERFLOW, IN_IGNORED = (
    0x100,
    0x200,
    0x400,
    0x4000,
    0x8000,
)


def _event(mask: int, name: bytes = b"", *, padded: int = 16) -> bytes:
    """One ``struct inotify_event`` as the kernel writes it (the name NUL-padded)."""
    field = name.ljust(padded, b"\0") if name else b""
    return struct.pack("iIII", 1, mask, 0, len(field)) + field


@pytest.mark.parametrize("mask", [IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE])
def test_a_write_replace_or_removal_of_the_file_is_named(mask: int) -> None:
    assert names_file(_event(mask, b"token.json"), b"token.json")
    assert names_file(_event(mask | 0x40000000, b"token.json", padded=32), b"token.json")


@pytest.mark.parametrize("mask", [IN_DELETE_SELF, IN_Q_OVERFLOW, IN_IGNORED])
def test_an_event_on_the_folder_or_the_watch_wakes_the_waiter(mask: int) -> None:
    # The folder gone or moved, events lost, the watch removed: the next look says what
    # became of the file.
    assert names_file(_event(mask), b"token.json")


def test_other_names_and_other_events_are_not_the_file() -> None:
    name = b"token.json"
    assert not names_file(b"", name)
    assert not names_file(_event(IN_MOVED_TO, b"token.json.intent"), name)
    assert not names_file(_event(IN_MOVED_TO, b".token.json.x8k2"), name)  # a write's temp file
    assert not names_file(_event(IN_MOVED_TO, b"token.jso"), name)
    assert not names_file(_event(IN_OPEN, name), name)  # a reader: nothing changed
    assert not names_file(_event(IN_CLOSE_WRITE, name)[:-1], name)  # cut short: not an event


def test_the_file_is_found_among_other_events() -> None:
    events = _event(IN_CREATE, b".token.json.x8k2") + _event(IN_OPEN, b"token.json")
    assert not names_file(events, b"token.json")
    assert names_file(events + _event(IN_MOVED_TO, b"token.json", padded=48), b"token.json")


def _replace(path: Path, text: str) -> None:
    """Write ``path`` the way the store does: a temp file renamed onto it."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _sleeping(watch: FileWatch, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=watch.sleep, args=(seconds,), daemon=True)
    thread.start()
    return thread


@linux
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda path: _replace(path, "new"), id="renamed-onto"),
        pytest.param(lambda path: path.write_text("in place"), id="written-in-place"),
        pytest.param(lambda path: path.unlink(), id="removed"),
    ],
)
def test_a_sleep_ends_when_the_file_is_written(tmp_path: Path, write: object) -> None:
    path = tmp_path / "token.json"
    path.write_text("old")
    with FileWatch(path) as watch:
        assert watch.watching
        sleeper = _sleeping(watch, 60)
        time.sleep(0.05)
        assert sleeper.is_alive()
        write(path)  # type: ignore[operator]
        sleeper.join(10)
        assert not sleeper.is_alive()


@linux
def test_a_sleep_ends_when_the_folder_goes(tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    folder.mkdir()
    with FileWatch(folder / "token.json") as watch:
        sleeper = _sleeping(watch, 60)
        folder.rmdir()
        sleeper.join(10)
        assert not sleeper.is_alive()


@linux
def test_writes_of_other_files_in_the_folder_do_not_end_a_sleep(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("old")
    with FileWatch(path) as watch:
        # Queued before the sleep starts, so the sleep reads them all.
        _replace(tmp_path / "token.json.intent", "intent")
        (tmp_path / "token.json.lock").write_text("")
        path.read_text()
        started = time.monotonic()
        watch.sleep(0.2)
        assert time.monotonic() - started >= 0.2


@linux
def test_a_watch_closes_its_descriptor(tmp_path: Path) -> None:
    watch = FileWatch(tmp_path / "token.json")
    fd = watch._fd
    os.fstat(fd)
    with watch:
        pass
    assert not watch.watching
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    watch.close()  # again: nothing to close


@pytest.fixture(autouse=True)
def _said_afresh() -> Iterator[None]:
    """Each test sees the once-per-process debug line anew, and leaves it unsaid."""
    _filewatch._unwatched.cache_clear()
    yield
    _filewatch._unwatched.cache_clear()


def _no_inotify(monkeypatch: pytest.MonkeyPatch, calls: object) -> None:
    monkeypatch.setattr(_filewatch, "_inotify", lambda: calls)


def test_without_inotify_a_sleep_sleeps_it_all_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token.json"
    _no_inotify(monkeypatch, None)
    caplog.set_level(logging.DEBUG, logger="zeep_sfrefresh._filewatch")
    for _ in range(2):
        with FileWatch(path) as watch:
            assert not watch.watching
            started = time.monotonic()
            watch.sleep(0.1)
            assert time.monotonic() - started >= 0.1
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for token files by their schedule alone: no inotify on this system"
    ]


@linux
def test_a_refused_watch_sleeps_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The folder does not exist yet (a store before its first write): the kernel refuses the
    # watch, the descriptor is closed, and the wait is the schedule's.
    init, add = _filewatch._inotify() or pytest.fail("inotify missing on Linux")
    made: list[int] = []

    def counted_init(flags: int) -> int:
        made.append(init(flags))
        return made[-1]

    _no_inotify(monkeypatch, (counted_init, add))
    caplog.set_level(logging.DEBUG, logger="zeep_sfrefresh._filewatch")
    with FileWatch(tmp_path / "missing" / "token.json") as watch:
        assert not watch.watching
    assert len(made) == 1
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(made[0])
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for token files by their schedule alone: No such file or directory"
    ]


@linux
def test_a_store_waiter_wakes_on_the_write_not_at_its_next_look(tmp_path: Path) -> None:
    # Looks 30 s apart: only the kernel's report can end the wait within the join below.
    # An intent written meanwhile does not end it.
    path = tmp_path / "token.json"
    waiter, writer = FileTokenStore(path, poll_interval=30), FileTokenStore(path)
    with writer.lock():
        writer.save(TOKEN, replaces=None)
    found: list[object] = []
    thread = threading.Thread(target=lambda: found.append(waiter.wait_for_change(1, 60)))
    thread.start()
    time.sleep(0.05)
    intent = RefreshIntent("sha256:0123abcd", "sending", 0, "host/1/x", time.time())
    with writer.lock():
        writer.write_intent(intent, version=1)
        time.sleep(0.1)
        assert thread.is_alive()
        writer.save({**TOKEN, "access_token": "NEW"}, replaces=1)
    thread.join(10)
    assert not thread.is_alive()
    [stored] = found
    assert getattr(stored, "version", None) == 2


def test_a_store_waiter_without_inotify_sees_the_write_at_its_next_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_inotify(monkeypatch, None)
    path = tmp_path / "token.json"
    waiter, writer = FileTokenStore(path, poll_interval=0.01), FileTokenStore(path)
    with writer.lock():
        writer.save(TOKEN, replaces=None)
    found: list[object] = []
    thread = threading.Thread(target=lambda: found.append(waiter.wait_for_change(1, 60)))
    thread.start()
    time.sleep(0.05)
    with writer.lock():
        writer.save({**TOKEN, "access_token": "NEW"}, replaces=1)
    thread.join(10)
    assert not thread.is_alive()
    [stored] = found
    assert getattr(stored, "version", None) == 2
