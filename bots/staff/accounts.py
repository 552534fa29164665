"""Staff accounts: passwords (argon2), sessions, API tokens and the audit log, over a ``StaffStore``.

Sign-in sessions and API tokens are random 256-bit strings handed out once; the store only
keeps their SHA-256 hashes, so a copy of the database signs nobody in.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bots.staff.base import ROLES, ApiToken, AuditEntry, Role, Session, StaffError, StaffStore, StaffUser

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 10
SESSION_TTL_S = 12 * 3600.0
TOKEN_PREFIX = "sbt_"  # noqa: S105 - a prefix, not a secret
_hasher = PasswordHasher()
# Checked when a username is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise StaffError(f"username {username!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    return username


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise StaffError(f"role {role!r}: use one of {', '.join(ROLES)}")


class Accounts:
    """What the review UI and the CLI do with staff accounts."""

    def __init__(self, store: StaffStore, *, session_ttl_s: float = SESSION_TTL_S) -> None:
        self.store = store
        self.session_ttl_s = session_ttl_s

    # -- users ----------------------------------------------------------------------
    async def add_user(self, username: str, password: str, role: str) -> StaffUser:
        check_username(username)
        checked_role = check_role(role)
        if len(password) < MIN_PASSWORD:
            raise StaffError(f"the password is too short: use at least {MIN_PASSWORD} characters")
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        user = StaffUser(username, checked_role, password_hash, time.time())
        await self.store.add_user(user)
        return user

    async def authenticate(self, username: str, password: str) -> StaffUser | None:
        user = await self.store.get_user(username) if _USERNAME.match(username) else None
        try:
            await asyncio.to_thread(_hasher.verify, user.password_hash if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            await self.store.set_password(username, await asyncio.to_thread(_hasher.hash, password))
        return user

    # -- sessions -------------------------------------------------------------------
    async def open_session(self, user: StaffUser) -> tuple[str, Session]:
        """A new sign-in session: (the cookie value, handed out once; the stored session)."""
        key = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user.username, secrets.token_urlsafe(32), now, now + self.session_ttl_s)
        await self.store.add_session(secret_hash(key), session)
        return key, session

    async def session(self, key: str) -> tuple[Session, StaffUser] | None:
        if not key or len(key) > 200:
            return None
        session = await self.store.get_session(secret_hash(key))
        if session is None:
            return None
        user = await self.store.get_user(session.username)
        return None if user is None else (session, user)

    async def close_session(self, key: str) -> None:
        await self.store.delete_session(secret_hash(key))

    # -- API tokens -----------------------------------------------------------------
    async def create_token(self, username: str, label: str) -> str:
        if await self.store.get_user(username) is None:
            raise StaffError(f"no user named {username!r}: add one with `switchboard users add`")
        if not label or len(label) > 64:
            raise StaffError("the token label must be 1-64 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self.store.add_token(secret_hash(token), ApiToken(username, label, time.time()))
        return token

    async def token_user(self, token: str) -> tuple[ApiToken, StaffUser] | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        found = await self.store.get_token(secret_hash(token))
        if found is None:
            return None
        user = await self.store.get_user(found.username)
        return None if user is None else (found, user)

    # -- audit ----------------------------------------------------------------------
    async def record(self, entry: AuditEntry) -> None:
        await self.store.add_audit(entry)


def open_staff_store(*, uri: str | None, data_dir: Path | str) -> StaffStore:
    """MongoDB when a URI is configured, else ``<data_dir>/staff.db``; nothing connects yet."""
    if uri:
        from bots.staff.mongo import MongoStaffStore

        return MongoStaffStore(uri)
    from bots.staff.sqlite import STAFF_FILE, SQLiteStaffStore

    return SQLiteStaffStore(Path(data_dir) / STAFF_FILE)
