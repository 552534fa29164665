"""Staff accounts in MongoDB (pymongo's async client), used when ``SWITCHBOARD_MONGODB_URI`` is set.

Collections: ``staff_users`` (``_id`` = username), ``staff_sessions`` and ``staff_tokens``
(``_id`` = SHA-256 of the secret; sessions expire through a TTL index), ``staff_audit``,
``staff_login_failures`` (one document per failed sign-in and key, expiring through a TTL index).
Every query value is matched with ``$eq``: a value is never read as an operator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.uri_parser import parse_uri

from bots.errors import StoreUnavailable
from bots.staff.base import ApiToken, AuditEntry, Session, StaffError, StaffUser

DEFAULT_DATABASE = "switchboard"
P = ParamSpec("P")
R = TypeVar("R")


def _guarded(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """A driver error (MongoDB down, restarted, a pooled connection gone stale) becomes
    StoreUnavailable, which the app answers with 503 and Retry-After, never a 500."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as exc:
            what = method.__name__.replace("_", " ")
            raise StoreUnavailable(f"MongoDB could not {what} (staff accounts): {exc}. "
                                   "The request can be retried later.") from exc

    return call


def _eq(value: Any) -> dict[str, Any]:
    return {"$eq": value}


def _user(doc: dict[str, Any]) -> StaffUser:
    return StaffUser(str(doc["_id"]), doc["role"], str(doc["password_hash"]), float(doc["created_at"]))


class MongoStaffStore:
    name = "mongodb"

    def __init__(self, uri: str, *, database: str | None = None) -> None:
        parsed = parse_uri(uri)
        self.uri = uri
        self.database = database or parsed.get("database") or DEFAULT_DATABASE
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._indexed = False
        self._lock = asyncio.Lock()

    @property
    def _db(self) -> Any:
        if self._client is None:
            self._client = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
        return self._client[self.database]

    async def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        async with self._lock:
            if not self._indexed:
                await self._db["staff_sessions"].create_indexes([
                    IndexModel([("expires", ASCENDING)], name="expiry", expireAfterSeconds=0),
                    IndexModel([("username", ASCENDING)], name="user"),
                ])
                await self._db["staff_tokens"].create_indexes([IndexModel([("username", ASCENDING)], name="user")])
                await self._db["staff_login_failures"].create_indexes([
                    IndexModel([("key", ASCENDING), ("at", DESCENDING)], name="key_newest"),
                    IndexModel([("expires", ASCENDING)], name="expiry", expireAfterSeconds=0),
                ])
                await self._db["staff_audit"].create_indexes([
                    IndexModel([("timestamp", DESCENDING)], name="newest"),
                    IndexModel([("conversation_id", ASCENDING), ("timestamp", DESCENDING)], name="conversation"),
                    IndexModel([("actor", ASCENDING), ("timestamp", DESCENDING)], name="actor"),
                ])
                self._indexed = True

    async def _col(self, name: str) -> Any:
        await self._ensure_indexes()
        return self._db[name]

    @_guarded
    async def start(self) -> None:
        await self._ensure_indexes()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._indexed = False
            await client.close()

    # -- users ----------------------------------------------------------------------
    @_guarded
    async def add_user(self, user: StaffUser) -> None:
        users = await self._col("staff_users")
        try:
            await users.insert_one({"_id": user.username, "role": user.role, "password_hash": user.password_hash,
                                    "created_at": user.created_at})
        except DuplicateKeyError:
            raise StaffError(f"a user named {user.username!r} already exists") from None

    @_guarded
    async def set_password(self, username: str, password_hash: str) -> bool:
        users = await self._col("staff_users")
        result = await users.update_one({"_id": _eq(username)}, {"$set": {"password_hash": password_hash}})
        return bool(result.matched_count)

    @_guarded
    async def get_user(self, username: str) -> StaffUser | None:
        doc = await (await self._col("staff_users")).find_one({"_id": _eq(username)})
        return None if doc is None else _user(doc)

    @_guarded
    async def list_users(self) -> list[StaffUser]:
        cursor = (await self._col("staff_users")).find({}).sort("_id", ASCENDING)
        return [_user(doc) async for doc in cursor]

    @_guarded
    async def remove_user(self, username: str) -> bool:
        result = await (await self._col("staff_users")).delete_one({"_id": _eq(username)})
        await (await self._col("staff_sessions")).delete_many({"username": _eq(username)})
        await (await self._col("staff_tokens")).delete_many({"username": _eq(username)})
        return bool(result.deleted_count)

    # -- sessions and tokens --------------------------------------------------------
    @_guarded
    async def add_session(self, key_hash: str, session: Session) -> None:
        await (await self._col("staff_sessions")).insert_one({
            "_id": key_hash, "username": session.username, "csrf_token": session.csrf_token,
            "created_at": session.created_at, "expires_at": session.expires_at,
            "expires": dt.datetime.fromtimestamp(session.expires_at, tz=dt.UTC),
        })

    @_guarded
    async def get_session(self, key_hash: str) -> Session | None:
        doc = await (await self._col("staff_sessions")).find_one({"_id": _eq(key_hash)})
        if doc is None or float(doc["expires_at"]) <= time.time():
            return None
        return Session(str(doc["username"]), str(doc["csrf_token"]), float(doc["created_at"]),
                       float(doc["expires_at"]))

    @_guarded
    async def delete_session(self, key_hash: str) -> None:
        await (await self._col("staff_sessions")).delete_one({"_id": _eq(key_hash)})

    @_guarded
    async def add_token(self, token_hash: str, token: ApiToken) -> None:
        await (await self._col("staff_tokens")).insert_one({
            "_id": token_hash, "username": token.username, "label": token.label, "created_at": token.created_at})

    @_guarded
    async def get_token(self, token_hash: str) -> ApiToken | None:
        doc = await (await self._col("staff_tokens")).find_one({"_id": _eq(token_hash)})
        return None if doc is None else ApiToken(str(doc["username"]), str(doc["label"]), float(doc["created_at"]))

    # -- failed sign-ins -------------------------------------------------------------
    @_guarded
    async def add_login_failure(self, keys: Sequence[str], *, at: float, keep_until: float) -> None:
        expires = dt.datetime.fromtimestamp(keep_until, tz=dt.UTC)  # the TTL index deletes it after this
        await (await self._col("staff_login_failures")).insert_many(
            [{"key": key, "at": at, "expires": expires} for key in keys])

    @_guarded
    async def login_failures(self, key: str, *, since: float, limit: int) -> list[float]:
        cursor = (await self._col("staff_login_failures")).find(
            {"key": _eq(key), "at": {"$gt": float(since)}}, projection={"_id": 0, "at": 1},
        ).sort("at", DESCENDING).limit(limit)
        return [float(d["at"]) async for d in cursor]

    @_guarded
    async def clear_login_failures(self, key: str) -> None:
        await (await self._col("staff_login_failures")).delete_many({"key": _eq(key)})

    # -- audit ----------------------------------------------------------------------
    @_guarded
    async def add_audit(self, entry: AuditEntry) -> None:
        await (await self._col("staff_audit")).insert_one(dict(entry.to_dict()))

    @_guarded
    async def audit_log(self, *, offset: int = 0, limit: int = 50, actor: str | None = None,
                        conversation_id: str | None = None) -> tuple[list[AuditEntry], int]:
        audit = await self._col("staff_audit")
        query: dict[str, Any] = {}
        if actor is not None:
            query["actor"] = _eq(actor)
        if conversation_id is not None:
            query["conversation_id"] = _eq(conversation_id)
        total = await audit.count_documents(query)
        cursor = audit.find(query).sort([("timestamp", DESCENDING), ("_id", DESCENDING)]).skip(offset).limit(limit)
        entries = [AuditEntry(str(d["actor"]), str(d["action"]), str(d.get("bot", "")),
                              str(d.get("conversation_id", "")), str(d.get("detail", "")), str(d.get("ip", "")),
                              float(d["timestamp"])) async for d in cursor]
        return entries, int(total)
