"""One SQLite file used from async code, shared by the embedded conversation store and the
staff accounts store: the connection is opened on first use, every operation runs in a worker
thread (SQLite blocks) one at a time behind an asyncio lock, and writes are ``BEGIN IMMEDIATE``
transactions, so several processes may share the file too."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SQLiteFile:
    def __init__(self, path: Path, schema: str, *, pragmas: tuple[str, ...] = ("journal_mode=WAL",)) -> None:
        self.path = path
        self._schema = schema
        self._pragmas = pragmas
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in self._pragmas:
            conn.execute(f"PRAGMA {pragma}")
        conn.executescript(self._schema)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            if self._conn is None:
                self._conn = await asyncio.to_thread(self._connect)
            return await asyncio.to_thread(fn, self._conn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.run(tx)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
