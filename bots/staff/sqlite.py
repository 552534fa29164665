"""Staff accounts in the embedded store: ``<data_dir>/staff.db`` (SQLite, no server)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bots.sqlite_file import SQLiteFile
from bots.staff.base import ApiToken, AuditEntry, Session, StaffError, StaffUser

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS staff_users (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS staff_sessions (
    key_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS staff_sessions_user ON staff_sessions (username);
CREATE TABLE IF NOT EXISTS staff_tokens (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, label TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS staff_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    bot TEXT NOT NULL, conversation_id TEXT NOT NULL, detail TEXT NOT NULL, ip TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS staff_audit_conv ON staff_audit (conversation_id, id);
CREATE INDEX IF NOT EXISTS staff_audit_actor ON staff_audit (actor, id);
CREATE TABLE IF NOT EXISTS staff_login_failures (key TEXT NOT NULL, at REAL NOT NULL, keep_until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS staff_login_failures_key ON staff_login_failures (key, at);
CREATE INDEX IF NOT EXISTS staff_login_failures_expiry ON staff_login_failures (keep_until);
"""

STAFF_FILE = "staff.db"


class SQLiteStaffStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SQLiteFile(path, _SCHEMA)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(fn)

    async def start(self) -> None:
        await self._run(lambda conn: None)

    async def aclose(self) -> None:
        await self._db.close()

    # -- users ----------------------------------------------------------------------
    async def add_user(self, user: StaffUser) -> None:
        def write(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO staff_users VALUES (?,?,?,?)",
                             (user.username, user.role, user.password_hash, user.created_at))
            except sqlite3.IntegrityError:
                raise StaffError(f"a user named {user.username!r} already exists") from None

        await self._run(write)

    async def set_password(self, username: str, password_hash: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE staff_users SET password_hash=? WHERE username=?", (password_hash, username))
            return cur.rowcount == 1

        return await self._run(write)

    async def get_user(self, username: str) -> StaffUser | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT * FROM staff_users WHERE username=?", (username,)).fetchone())
        return None if row is None else StaffUser(row["username"], row["role"], row["password_hash"],
                                                  row["created_at"])

    async def list_users(self) -> list[StaffUser]:
        rows = await self._run(lambda conn: conn.execute("SELECT * FROM staff_users ORDER BY username").fetchall())
        return [StaffUser(r["username"], r["role"], r["password_hash"], r["created_at"]) for r in rows]

    async def remove_user(self, username: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                removed = conn.execute("DELETE FROM staff_users WHERE username=?", (username,)).rowcount == 1
                conn.execute("DELETE FROM staff_sessions WHERE username=?", (username,))
                conn.execute("DELETE FROM staff_tokens WHERE username=?", (username,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return removed

        return await self._run(write)

    # -- sessions and tokens --------------------------------------------------------
    async def add_session(self, key_hash: str, session: Session) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO staff_sessions VALUES (?,?,?,?,?)",
            (key_hash, session.username, session.csrf_token, session.created_at, session.expires_at)))

    async def get_session(self, key_hash: str) -> Session | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT * FROM staff_sessions WHERE key_hash=? AND expires_at > ?", (key_hash, time.time())).fetchone())
        return None if row is None else Session(row["username"], row["csrf_token"], row["created_at"],
                                                row["expires_at"])

    async def delete_session(self, key_hash: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM staff_sessions WHERE key_hash=? OR expires_at < ?", (key_hash, time.time()))

        await self._run(write)

    async def add_token(self, token_hash: str, token: ApiToken) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO staff_tokens VALUES (?,?,?,?)", (token_hash, token.username, token.label, token.created_at)))

    async def get_token(self, token_hash: str) -> ApiToken | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT * FROM staff_tokens WHERE token_hash=?", (token_hash,)).fetchone())
        return None if row is None else ApiToken(row["username"], row["label"], row["created_at"])

    # -- failed sign-ins -------------------------------------------------------------
    async def add_login_failure(self, keys: Sequence[str], *, at: float, keep_until: float) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM staff_login_failures WHERE keep_until < ?", (at,))
            conn.executemany("INSERT INTO staff_login_failures (key, at, keep_until) VALUES (?,?,?)",
                             [(key, at, keep_until) for key in keys])

        await self._db.write(write)

    async def login_failures(self, key: str, *, since: float, limit: int) -> list[float]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT at FROM staff_login_failures WHERE key=? AND at > ? ORDER BY at DESC LIMIT ?",
            (key, since, limit)).fetchall())
        return [float(r["at"]) for r in rows]

    async def clear_login_failures(self, key: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM staff_login_failures WHERE key=?", (key,)))

    # -- audit ----------------------------------------------------------------------
    async def add_audit(self, entry: AuditEntry) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO staff_audit (timestamp, actor, action, bot, conversation_id, detail, ip)"
            " VALUES (?,?,?,?,?,?,?)",
            (entry.timestamp, entry.actor, entry.action, entry.bot, entry.conversation_id, entry.detail, entry.ip)))

    async def audit_log(self, *, offset: int = 0, limit: int = 50, actor: str | None = None,
                        conversation_id: str | None = None) -> tuple[list[AuditEntry], int]:
        where: list[str] = []
        args: list[Any] = []
        if actor is not None:
            where.append("actor = ?")
            args.append(actor)
        if conversation_id is not None:
            where.append("conversation_id = ?")
            args.append(conversation_id)
        clause = ("WHERE " + " AND ".join(where)) if where else ""

        def read(conn: sqlite3.Connection) -> tuple[list[AuditEntry], int]:
            total = conn.execute(f"SELECT COUNT(*) FROM staff_audit {clause}", args).fetchone()[0]  # noqa: S608
            rows = conn.execute(
                f"SELECT * FROM staff_audit {clause} ORDER BY id DESC LIMIT ? OFFSET ?",  # noqa: S608
                (*args, limit, offset)).fetchall()
            return [AuditEntry(r["actor"], r["action"], r["bot"], r["conversation_id"], r["detail"], r["ip"],
                               r["timestamp"]) for r in rows], int(total)

        return await self._run(read)
