"""The staff data shapes and the storage contract, shared by the SQLite and MongoDB staff stores.

Secrets are never stored: passwords as argon2 hashes, session keys and API tokens as SHA-256
hashes of high-entropy random strings (see ``bots.staff.accounts``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bots.errors import SwitchboardError

Role = Literal["viewer", "agent", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "agent", "admin")
_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}


def role_allows(role: str, needed: Role) -> bool:
    """True when ``role`` may do what ``needed`` may (admin > agent > viewer)."""
    return _RANK.get(role, -1) >= _RANK[needed]


class StaffError(SwitchboardError):
    """A staff account problem with a message for the person at the keyboard."""


@dataclass(frozen=True)
class StaffUser:
    username: str
    role: Role
    password_hash: str = field(repr=False)
    created_at: float = 0.0


@dataclass(frozen=True)
class Session:
    username: str
    csrf_token: str = field(repr=False)
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class ApiToken:
    username: str
    label: str
    created_at: float


@dataclass(frozen=True)
class AuditEntry:
    actor: str  # a username, or "token:<label> (<username>)"
    action: str  # view_transcript, export_transcript, export_corrections, sign_in, correct, reply, ...
    bot: str = ""
    conversation_id: str = ""
    detail: str = ""
    ip: str = ""
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, object]:
        return {"timestamp": self.timestamp, "actor": self.actor, "action": self.action, "bot": self.bot,
                "conversation_id": self.conversation_id, "detail": self.detail, "ip": self.ip}


class StaffStore(Protocol):
    """Where staff accounts live. Both stores pass one contract suite (tests/connectors/test_review_staff.py)."""

    name: str

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def add_user(self, user: StaffUser) -> None:
        """Raises ``StaffError`` if the username exists."""
        ...

    async def set_password(self, username: str, password_hash: str) -> bool: ...

    async def get_user(self, username: str) -> StaffUser | None: ...

    async def list_users(self) -> list[StaffUser]: ...

    async def remove_user(self, username: str) -> bool:
        """Deletes the user with their sessions and tokens; False if there was no such user."""
        ...

    async def add_session(self, key_hash: str, session: Session) -> None: ...

    async def get_session(self, key_hash: str) -> Session | None:
        """The session, or None when unknown or expired."""
        ...

    async def delete_session(self, key_hash: str) -> None: ...

    async def add_token(self, token_hash: str, token: ApiToken) -> None: ...

    async def get_token(self, token_hash: str) -> ApiToken | None: ...

    async def add_audit(self, entry: AuditEntry) -> None: ...

    # Failed sign-ins (bots/staff/throttle.py), shared by every replica using the store.
    async def add_login_failure(self, keys: Sequence[str], *, at: float, keep_until: float) -> None:
        """Record one failed sign-in at ``at`` under each key; it may be deleted after ``keep_until``
        (and failures kept past their own ``keep_until`` may be deleted now)."""
        ...

    async def login_failures(self, key: str, *, since: float, limit: int) -> list[float]:
        """The times of ``key``'s failures after ``since``, newest first, at most ``limit``."""
        ...

    async def clear_login_failures(self, key: str) -> None: ...

    async def audit_log(self, *, offset: int = 0, limit: int = 50, actor: str | None = None,
                        conversation_id: str | None = None) -> tuple[list[AuditEntry], int]:
        """Newest first, with the total count of matching entries."""
        ...
