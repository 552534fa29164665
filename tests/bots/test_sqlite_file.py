"""SQLite plumbing: a message's small operations run inline on the event loop, and fall back to the
worker thread (which waits for the lock) when another process is writing to the file; checkpoints
run in the worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bots import sqlite_file
from bots.sqlite_file import SQLiteFile

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER);"


async def test_inline_operations_run_on_the_event_loop(tmp_path: Path) -> None:
    db = SQLiteFile(tmp_path / "x.db", SCHEMA)
    seen: list[str] = []

    def write(conn: sqlite3.Connection) -> int:
        seen.append(threading.current_thread().name)
        conn.execute("INSERT INTO t VALUES ('a', 1)")
        return 1

    assert await db.write(write, inline=True) == 1
    assert await db.write(lambda c: c.execute("UPDATE t SET v = 2").rowcount) == 1  # in the thread
    assert seen == [threading.main_thread().name]
    rows = await db.run(lambda c: c.execute("SELECT v FROM t").fetchall(), inline=True)
    assert [r[0] for r in rows] == [2]
    await db.close()


async def test_an_inline_write_waits_in_the_thread_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = SQLiteFile(path, SCHEMA)
    await db.run(lambda c: None)  # created
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    other.execute("INSERT INTO t VALUES ('other', 1)")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    threads: list[str] = []

    def write(conn: sqlite3.Connection) -> int:
        threads.append(threading.current_thread().name)
        conn.execute("INSERT INTO t VALUES ('mine', 2)")
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    started = time.monotonic()
    assert await db.write(write, inline=True) == 2  # saw the other writer's row: it ran after its commit
    assert time.monotonic() - started >= 0.25
    assert threads[-1] != threading.main_thread().name  # done in the worker thread
    # the event loop was never blocked meanwhile
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    pending = asyncio.ensure_future(db.write(lambda c: c.execute("UPDATE t SET v = 3").rowcount, inline=True))
    for _ in range(5):
        await asyncio.sleep(0.02)
        await tick()
    assert ticks == 5 and not pending.done()
    assert await pending == 2
    other.close()
    await db.close()


_OPEN = """
import sys, time
from pathlib import Path
from bots.sqlite_file import SQLiteFile
from bots.store.sqlite import _SCHEMA
start = float(sys.argv[2])
while time.time() < start:  # every process opens the new file at the same moment
    pass
SQLiteFile(Path(sys.argv[1]), _SCHEMA, pragmas=("journal_mode=WAL", "synchronous=NORMAL"))._connect()
"""


PADDED = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, pad TEXT NOT NULL);"


async def _inline_inserts(db: SQLiteFile, n: int) -> None:
    """``n`` inline writes of a 5,000-byte row each (two WAL pages), the event loop going on in between
    as it does between messages."""
    for i in range(n):
        def insert(conn: sqlite3.Connection, i: int = i) -> None:
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 5000))

        await db.write(insert, inline=True)
        await asyncio.sleep(0)


def _wal_pages(path: Path) -> int:
    return (path.parent / (path.name + "-wal")).stat().st_size // 4096


async def test_inline_writes_never_checkpoint_on_the_event_loop(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's automatic checkpoint (at 1,000 WAL pages, two fdatasync in the committing call) is off on
    the inline connection: with no scheduled checkpoint the WAL passes 1,000 pages."""
    monkeypatch.setattr(sqlite_file, "CHECKPOINT_EVERY", 10_000)
    path = tmp_path / "x.db"
    db = SQLiteFile(path, PADDED)
    await _inline_inserts(db, 700)
    assert _wal_pages(path) > 1_300
    await db.close()


async def test_a_checkpoint_runs_in_the_worker_thread_every_n_inline_writes(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_file, "CHECKPOINT_EVERY", 50)
    path = tmp_path / "x.db"
    db = SQLiteFile(path, PADDED)
    await db.run(lambda c: None)  # open
    checkpoints: list[str] = []
    assert db._conn is not None

    def trace(sql: str) -> None:
        if "wal_checkpoint" in sql:
            checkpoints.append(threading.current_thread().name)

    db._conn.set_trace_callback(trace)
    await _inline_inserts(db, 700)
    assert _wal_pages(path) < 300  # started over after each checkpoint: about 50 writes of 2 pages
    await db.close()
    assert len(checkpoints) >= 700 // 50 - 1
    assert threading.main_thread().name not in checkpoints
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 700
    conn.close()


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Two replicas starting on a new file both ask for it exclusively (WAL switch, schema); SQLite
    refuses one at once, without the busy timeout. Without a retry this failed about 1 time in 4
    (and once in CI); each round here starts three processes at the same instant."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    for round_ in range(8):
        start = time.time() + 0.8  # after every interpreter has started
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(tmp_path / f"{round_}.db"), str(start)],
                                  cwd=root, stderr=subprocess.PIPE) for _ in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()[-1500:]


async def test_data_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """Conversations and staff accounts (password hashes) are created 0600 in 0700 folders, even
    under the usual umask 022 that would make them world-readable."""
    import os

    from bots.staff.accounts import Accounts, open_staff_store
    from bots.store.factory import open_store

    data = tmp_path / "var" / "switchboard"
    old = os.umask(0o022)
    try:
        store = open_store(uri=None, data_dir=data)
        await store.start()
        assert await store.ping()
        accounts = Accounts(open_staff_store(uri=None, data_dir=data))
        await accounts.add_user("ann", "a long enough password", "agent")
        files = sorted(p.name for p in data.iterdir())
        modes = {name: (data / name).stat().st_mode & 0o777 for name in files}
        await accounts.store.aclose()
        await store.aclose()
    finally:
        os.umask(old)
    assert {"conversations.db", "conversations.db-wal", "conversations.db-shm", "staff.db"} <= set(files)
    assert modes == dict.fromkeys(files, 0o600)
    assert [(p.stat().st_mode & 0o777) for p in (data, data.parent)] == [0o700, 0o700]


def _commits(db: SQLiteFile) -> list[str]:
    """The COMMIT statements the inline connection runs from now on."""
    assert db._inline is not None
    seen: list[str] = []
    db._inline.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def _insert(key: str, *, fail: bool = False) -> Callable[[sqlite3.Connection], str]:
    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES (?, 1)", (key,))
        if fail:
            raise ValueError(f"{key} refused after its insert")
        return key

    return write


async def _keys(db: SQLiteFile) -> list[str]:
    return [r[0] for r in await db.run(lambda c: c.execute("SELECT k FROM t ORDER BY k").fetchall())]


async def test_inline_writes_made_in_one_turn_of_the_loop_commit_in_one_transaction(tmp_path: Path) -> None:
    db = SQLiteFile(tmp_path / "x.db", SCHEMA)
    await db.write(_insert("first"), inline=True)  # opened
    commits = _commits(db)
    assert await asyncio.gather(*(db.write(_insert(k), inline=True) for k in "abcde")) == list("abcde")
    assert commits == ["COMMIT"]  # one transaction for the five
    await db.write(_insert("f"), inline=True)  # made alone: a group of its own
    assert commits == ["COMMIT", "COMMIT"]
    assert await _keys(db) == ["a", "b", "c", "d", "e", "f", "first"]
    await db.close()


async def test_a_write_that_raises_in_a_group_is_undone_alone(tmp_path: Path) -> None:
    db = SQLiteFile(tmp_path / "x.db", SCHEMA)
    await db.write(_insert("first"), inline=True)
    outcomes = await asyncio.gather(db.write(_insert("a"), inline=True), db.write(_insert("b", fail=True), inline=True),
                                    db.write(_insert("c"), inline=True), return_exceptions=True)
    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], ValueError)
    assert await _keys(db) == ["a", "c", "first"]  # b's insert was rolled back with it, the others committed
    await db.close()


async def test_a_commit_that_fails_fails_every_write_of_its_group_and_writes_none(tmp_path: Path) -> None:
    schema = ("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER);"
              "CREATE TABLE IF NOT EXISTS child (k TEXT REFERENCES t(k) DEFERRABLE INITIALLY DEFERRED);")
    db = SQLiteFile(tmp_path / "x.db", schema, pragmas=("journal_mode=WAL", "foreign_keys=ON"))
    await db.write(_insert("first"), inline=True)

    def orphan(conn: sqlite3.Connection) -> str:  # checked at COMMIT: the whole group's commit fails
        conn.execute("INSERT INTO child VALUES ('nobody')")
        return "orphan"

    outcomes = await asyncio.gather(db.write(_insert("a"), inline=True), db.write(orphan, inline=True),
                                    return_exceptions=True)
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert await _keys(db) == ["first"]  # a, told it failed, is not written either
    assert await db.write(_insert("b"), inline=True) == "b"  # the next group starts clean
    await db.close()


async def test_a_write_cancelled_before_its_group_began_is_not_made(tmp_path: Path) -> None:
    db = SQLiteFile(tmp_path / "x.db", SCHEMA)
    await db.write(_insert("first"), inline=True)
    kept = asyncio.ensure_future(db.write(_insert("kept"), inline=True))
    dropped = asyncio.ensure_future(db.write(_insert("dropped"), inline=True))
    await asyncio.sleep(0)  # both have joined the group; the group's commit has not begun
    dropped.cancel()
    assert await kept == "kept"
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await _keys(db) == ["first", "kept"]
    await db.close()
