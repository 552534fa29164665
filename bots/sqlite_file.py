"""One SQLite file used from async code, shared by the embedded conversation store and the
staff accounts store: the connection is opened on first use, operations run one at a time behind
an asyncio lock, and writes are ``BEGIN IMMEDIATE`` transactions, so several processes may share
the file too.

Where an operation runs: by default in a worker thread (SQLite blocks). The small, indexed
operations of a customer's message (``inline=True``: store it, take the lease, read the new turns,
store the reply) take a fraction of a millisecond, less than handing them to a thread and back
costs under load; they run on the event loop on a second connection that never waits for a lock
(busy timeout 0). If another process holds the file's write lock, the operation is rolled back and
run in the worker thread instead, which waits for it as usual. Inline writes made in the same turn of the
event loop (the answers to the messages of one NLU batch) commit together, in one transaction with a
savepoint for each (``write``, ``_commit_groups``): each caller still returns only once its write has
committed, and a write that fails is undone alone.

A file that cannot be written (the disk is full: SQLITE_FULL; an I/O error: SQLITE_IOERR; told
apart by SQLite's error code, as busy and locked are) is an outage, not a bug: the operation raises
``StoreUnavailable`` (channels answer 503 with Retry-After, senders redeliver; nothing half-written
stays, each write being one transaction), and ``failure`` says why until a write succeeds again,
which readiness probes (``/readyz`` stays false meanwhile).

Checkpoints (copying the WAL back into the database file, with an ``fdatasync`` of each) never run
on the event loop: the inline connection's automatic checkpoint is off, and every
``CHECKPOINT_EVERY`` inline writes a passive checkpoint runs in the worker thread, in turn with the
other operations (so no write appends to the WAL meanwhile and the next one starts it over). Under
load SQLite's own checkpoint, run by the commit that crossed 1,000 WAL pages, blocked every request
for its two ``fdatasync`` (21% of the busy samples of a py-spy profile of the server at 300 msg/s:
bench/RESULTS.md, "Load")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bots.errors import StoreUnavailable
from bots.files import private_file

T = TypeVar("T")

log = logging.getLogger("switchboard.sqlite")

_Write = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]  # an inline write and its caller's future

CHECKPOINT_EVERY = 300  # inline write transactions between two checkpoints (about 4,000 WAL pages, 16 MB, on the
# example bot: about one a second at 300 msg/s; each holds the store for its two fdatasync, about 10-15 ms here)


class SQLiteFile:
    """``upgrade`` runs after the schema script on every new connection: it brings a file created by an
    older version up to date (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it was). It
    must be idempotent and safe when several processes open the file at once."""

    def __init__(self, path: Path, schema: str, *, pragmas: tuple[str, ...] = ("journal_mode=WAL",),
                 upgrade: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = path
        self._schema = schema
        self._upgrade = upgrade
        self._pragmas = pragmas
        self._conn: sqlite3.Connection | None = None
        self._inline: sqlite3.Connection | None = None  # the event loop's own, busy timeout 0
        self._inline_writes = 0  # inline write transactions since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # inline writes waiting for their group's transaction, and the task that commits them (write)
        self._group: list[_Write] = []
        self._committer: asyncio.Task[None] | None = None
        # Why the file could not be written (disk full, I/O error), until a write succeeds again.
        self.failure: str | None = None

    def _connect(self, timeout: float = 30.0, *, schema: bool = True) -> sqlite3.Connection:
        private_file(self.path)  # 0600 in a 0700 folder (bots/files.py); -wal and -shm take its mode
        conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # Processes opening a new file at once both read it and then want it exclusively (to switch
        # it to WAL, to create the schema): SQLite answers one of them "locked" at once, without
        # its busy timeout, to break the deadlock. That one retries until the timeout is spent.
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                for pragma in self._pragmas:
                    conn.execute(f"PRAGMA {pragma}")
                if schema:
                    conn.executescript(self._schema)
                    if self._upgrade is not None:
                        self._upgrade(conn)
                return conn
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    conn.close()
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                time.sleep(pause)
                pause = min(pause * 2, 0.2)

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """``fn`` on the connection; raises ``StoreUnavailable`` when the file cannot be written or read."""
        try:
            return await self._run(fn, inline=inline)
        except sqlite3.Error as exc:
            raise self._outage(exc) from exc

    def _outage(self, exc: BaseException) -> BaseException:
        """What a caller gets for ``exc``: ``StoreUnavailable`` when the file cannot be written or read (and
        ``failure`` says why until a write succeeds again), else ``exc`` itself."""
        if not isinstance(exc, sqlite3.Error) or not _unavailable(exc):
            return exc
        if self.failure is None:
            log.error("the SQLite file cannot be written; answering 503 and not ready until a write succeeds",
                      extra={"path": str(self.path), "error": str(exc)})
        self.failure = str(exc)
        unavailable = StoreUnavailable(f"{self.path.name}: {exc}. The request can be retried later.")
        unavailable.__cause__ = exc
        return unavailable

    async def _open(self) -> None:
        """Both connections, on first use (under the lock)."""
        if self._conn is None:
            self._conn = await asyncio.to_thread(self._connect)
            with contextlib.suppress(sqlite3.OperationalError):  # busy right now: everything in the thread
                self._inline = await asyncio.to_thread(self._connect, 0.0, schema=False)
                self._inline.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: _checkpoint_soon

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool) -> T:
        async with self._lock:
            await self._open()
            if inline and self._inline is not None:
                try:
                    return fn(self._inline)
                except sqlite3.OperationalError as exc:
                    if not _busy(exc):
                        raise
                    if self._inline.in_transaction:
                        self._inline.execute("ROLLBACK")
                    # another process is writing: wait for it in the worker thread
            assert self._conn is not None
            return await asyncio.to_thread(fn, self._conn)

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """``fn`` in a write transaction of its own, or (``inline``) in the transaction of the group of inline
        writes made in the same turn of the event loop (``_commit_groups``). Either way it has committed when this
        returns, and a write that raises leaves nothing written."""
        if inline:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._group.append((fn, future))
            if self._committer is None or self._committer.done():
                self._committer = asyncio.get_running_loop().create_task(self._commit_groups())
            result = await future
        else:
            result = await self.run(_transaction(fn))
        if self.failure is not None:
            log.warning("the SQLite file can be written again", extra={"path": str(self.path)})
            self.failure = None
        return result

    async def _commit_groups(self) -> None:
        """Group commit: the inline writes made while this task waited for its first turn of the event loop (the
        messages an NLU batch hands back at once write their answers one after the other, with no await between
        them) commit in one transaction, each in a savepoint of its own: the pages they share (the conversations'
        indexes) are written to the WAL once per group, not once per write, and the group costs one ``BEGIN`` and
        one ``COMMIT``. A write that raises is rolled back to its savepoint alone and its caller gets the error; a
        failed ``COMMIT`` (or a transaction SQLite rolled back itself) fails every write of the group, none of
        which is then written. Writes made meanwhile form the next group. A write whose caller was cancelled
        before its group began is not made."""
        while self._group:
            group, self._group = self._group, []
            live = [(fn, future) for fn, future in group if not future.cancelled()]
            if live:
                await self._commit(live)

    async def _commit(self, group: list[_Write]) -> None:
        try:
            async with self._lock:
                await self._commit_locked(group)
        except Exception as exc:  # noqa: BLE001 - handed to the writes' callers, who wait for their outcome
            _settle_all(group, self._outage(exc))
        except BaseException:  # cancelled (shutdown): so are the writes not yet settled
            for _, future in group:
                future.cancel()
            raise

    async def _commit_locked(self, group: list[_Write]) -> None:
        await self._open()
        if self._inline is not None:
            try:
                outcomes = _in_savepoints(self._inline, group)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                # another process is writing: each write waits for it in the worker thread (below)
            else:
                for future, error, result in outcomes:
                    _settle(future, None if error is None else self._outage(error), result)
                self._checkpoint_soon(len(group))
                return
        assert self._conn is not None
        for fn, future in group:  # one transaction each, in the order they were made
            if future.done():
                continue
            try:
                result = await asyncio.to_thread(_transaction(fn), self._conn)
            except Exception as exc:  # noqa: BLE001 - handed to the write's caller
                _settle(future, self._outage(exc), None)
            else:
                _settle(future, None, result)

    def _checkpoint_soon(self, writes: int) -> None:
        """Count inline writes; every ``CHECKPOINT_EVERY`` of them, a passive checkpoint in the worker thread."""
        self._inline_writes += writes
        if self._inline_writes < CHECKPOINT_EVERY or (self._checkpoint is not None and not self._checkpoint.done()):
            return
        self._inline_writes = 0
        self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            async with self._lock:
                if self._conn is not None:
                    conn = self._conn
                    await asyncio.to_thread(lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        except sqlite3.Error as exc:  # the next one tries again; the WAL only grows meanwhile
            log.warning("SQLite checkpoint failed", extra={"path": str(self.path), "error": str(exc)})

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer  # the writes already made commit (their callers wait for them)
            self._committer = None
        if self._checkpoint is not None:
            await self._checkpoint  # short: one checkpoint, never cancelled half-way
            self._checkpoint = None
        async with self._lock:
            for conn in (self._conn, self._inline):
                if conn is not None:
                    conn.close()
            self._conn = self._inline = None


def _transaction(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` in a write transaction of its own."""
    def tx(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled it back itself (e.g. on SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    conn.execute("ROLLBACK")
            raise
        return result

    return tx


def _in_savepoints(conn: sqlite3.Connection, group: list[_Write],
                   ) -> list[tuple[asyncio.Future[Any], Exception | None, Any]]:
    """The group's writes in one transaction, each in a savepoint: (future, its error or None, its result) for
    each, once committed. Raises (nothing written) when ``BEGIN``, ``COMMIT`` or the transaction itself fails."""
    conn.execute("BEGIN IMMEDIATE")  # busy: raised before anything is done
    outcomes: list[tuple[asyncio.Future[Any], Exception | None, Any]] = []
    try:
        for fn, future in group:
            conn.execute("SAVEPOINT write")
            try:
                result = fn(conn)
            except Exception as exc:
                if not conn.in_transaction:  # SQLite rolled the whole transaction back (SQLITE_FULL, I/O error)
                    raise
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                outcomes.append((future, exc, None))
            else:
                conn.execute("RELEASE write")
                outcomes.append((future, None, result))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                conn.execute("ROLLBACK")
        raise
    return outcomes


def _settle(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(group: list[_Write], error: BaseException) -> None:
    for _, future in group:
        _settle(future, error, None)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED, with any extended code)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _unavailable(exc: sqlite3.Error) -> bool:
    """The file cannot be written or read: the disk (or the database's size limit) is full, or an
    I/O error (SQLITE_FULL or SQLITE_IOERR, with any extended code)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
