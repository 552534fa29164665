"""A full disk (SQLITE_FULL) or an I/O error (SQLITE_IOERR) is an outage of the embedded store:
``StoreUnavailable`` (503 + Retry-After at the channels), not a 500; readiness is false until a
write succeeds again, and nothing is half-written. The full database is real: SQLite's
``max_page_count`` on the store's connections makes the next write that needs a page fail with
SQLITE_FULL, as a full filesystem does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bots.errors import StoreUnavailable
from bots.events import USER, Event
from bots.sqlite_file import SQLiteFile
from bots.store.sqlite import SQLiteStore

UNLIMITED = 1_073_741_823


async def limit_pages(store: SQLiteStore, pages: int) -> None:
    """``PRAGMA max_page_count`` on both of the store's connections (the worker thread's and the
    event loop's); below the file's size it stops at the size: the file is full."""
    for inline in (False, True):
        await store._run(lambda conn: conn.execute(f"PRAGMA max_page_count={pages}").fetchone(), inline=inline)


def message(i: int) -> Event:
    return Event(USER, {"text": f"message {i} " + "lorem ipsum dolor sit amet " * 120})


async def test_a_full_database_is_unavailable_and_not_ready_until_a_write_succeeds(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "conversations.db")
    await store.start()
    try:
        assert await store.ping()
        await store.enqueue("shop", "c0", "web", "u1", {}, "before", Event(USER, {"text": "hello"}))
        await limit_pages(store, 1)
        stored = ["before"]
        with pytest.raises(StoreUnavailable, match="full") as refused:
            for i in range(100):
                await store.enqueue("shop", "c0", "web", "u1", {}, f"m{i}", message(i))
                stored.append(f"m{i}")
        assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
        assert refused.value.__cause__.sqlite_errorcode == sqlite3.SQLITE_FULL
        failed = f"m{len(stored) - 1}"
        assert not await store.ping()  # reads still work, but writes do not: not ready
        assert not await store.ping()
        loaded = await store.load("shop", "c0")
        assert loaded is not None and loaded.turns[0].message_id == "before"

        await limit_pages(store, UNLIMITED)  # space returns
        assert await store.ping()  # ready again by itself: the probe's write succeeded
        i = len(stored) - 1
        result = await store.enqueue("shop", "c0", "web", "u1", {}, failed, message(i))
        assert result.created  # the refused message was not stored, half or whole: stored now, once
        loaded = await store.load("shop", "c0")
        assert loaded is not None
        assert [t.message_id for t in loaded.turns] == [*stored, failed]  # nothing lost or doubled
        assert [t.seq for t in loaded.turns] == list(range(1, len(stored) + 2))  # the refused one took no seq
    finally:
        await store.aclose()


@pytest.mark.parametrize("code", [sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_IOERR_WRITE,
                                  sqlite3.SQLITE_IOERR_FSYNC])
async def test_disk_errors_are_recognised_by_their_code(tmp_path: Path, code: int) -> None:
    db = SQLiteFile(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (x)")

    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        exc = sqlite3.OperationalError("the message text does not matter")
        exc.sqlite_errorcode = code
        raise exc

    try:
        with pytest.raises(StoreUnavailable):
            await db.write(fail)
        assert db.failure == "the message text does not matter"
        assert await db.run(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 0  # rolled back
        await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
        assert db.failure is None  # a write succeeded
    finally:
        await db.close()


async def test_other_sqlite_errors_stay_errors(tmp_path: Path) -> None:
    """A bug (here: SQL that does not parse) is not an outage to retry: it is not StoreUnavailable."""
    db = SQLiteFile(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (x)")
    try:
        with pytest.raises(sqlite3.OperationalError, match="syntax"):
            await db.write(lambda conn: conn.execute("INSERT INTO t VALUE (1)"))
        assert db.failure is None
    finally:
        await db.close()
