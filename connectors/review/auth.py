"""Who is asking: staff sign-in sessions (cookie), API tokens (bearer), roles and CSRF checks.

* The session cookie is HttpOnly, SameSite=Strict, limited to ``/review``, and Secure whenever
  the request came over https (directly or through a proxy saying ``X-Forwarded-Proto: https``).
* Every state-changing request signed in by cookie must carry the session's CSRF token in the
  ``X-CSRF-Token`` header (or a ``csrf_token`` form field) and, when the browser sends one, an
  ``Origin`` equal to this server's. Requests with an API token (``Authorization: Bearer sbt_...``,
  or the ``SWITCHBOARD_ADMIN_TOKEN``) carry no ambient credentials and need no CSRF token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from fastapi import HTTPException, Request, Response

from bots.settings import Settings
from bots.staff.accounts import Accounts
from bots.staff.base import AuditEntry, Role, StaffUser, role_allows
from bots.staff.throttle import LoginThrottle

SESSION_COOKIE = "sb_session"
LOGIN_CSRF_COOKIE = "sb_login_csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/review"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Principal:
    user: StaffUser
    via: Literal["session", "token"]
    csrf_token: str = ""
    label: str = ""

    @property
    def actor(self) -> str:
        return self.user.username if self.via == "session" else f"{self.user.username} (token {self.label})"

    @property
    def role(self) -> Role:
        return self.user.role


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme in ("https", "wss") or forwarded == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=is_https(request))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def same_origin(request: Request) -> bool:
    """True when the request has no Origin (not a browser) or one naming this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


class Auth:
    def __init__(self, accounts: Accounts, settings: Settings) -> None:
        self.accounts = accounts
        self.settings = settings
        # failed sign-ins, in the staff store shared by every replica (bots/staff/throttle.py)
        self.throttle = LoginThrottle(accounts.store)

    async def principal(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            return await self._token_principal(token.strip())
        key = request.cookies.get(SESSION_COOKIE, "")
        found = await self.accounts.session(key) if key else None
        if found is None:
            return None
        session, user = found
        return Principal(user, "session", csrf_token=session.csrf_token)

    async def _token_principal(self, token: str) -> Principal | None:
        admin = self.settings.admin_token
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return Principal(StaffUser("admin-token", "admin", "", 0.0), "token", label="SWITCHBOARD_ADMIN_TOKEN")
        found = await self.accounts.token_user(token)
        if found is None:
            return None
        api_token, user = found
        return Principal(user, "token", label=api_token.label)

    def require(self, role: Role, *, page: bool = False) -> Callable[[Request], Awaitable[Principal]]:
        """A dependency: the signed-in principal with at least ``role`` (403 otherwise); pages send
        the signed-out to the sign-in page, the API answers 401."""

        async def dependency(request: Request) -> Principal:
            principal = await self.principal(request)
            if principal is None:
                if page:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    raise HTTPException(303, "sign in first",
                                        headers={"Location": f"/review/login?next={quote(target)}"})
                raise HTTPException(401, "sign in to the review UI, or send 'Authorization: Bearer <API token>' "
                                         "(create one with `switchboard tokens create USER`)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not role_allows(principal.role, role):
                raise HTTPException(403, f"your role {principal.role!r} cannot do this; it needs {role!r} "
                                         "(an admin can change roles with `switchboard users`)")
            if request.method not in _SAFE_METHODS and principal.via == "session":
                await self.check_csrf(request, principal.csrf_token)
            request.state.principal = principal
            return principal

        return dependency

    async def check_csrf(self, request: Request, expected: str, *, form_value: str | None = None) -> None:
        if not same_origin(request):
            raise HTTPException(403, "cross-site request refused: the Origin is not this server")
        sent = form_value if form_value is not None else request.headers.get(CSRF_HEADER, "")
        if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")

    async def audit(self, request: Request, principal: Principal | str, action: str, *, bot: str = "",
                    conversation_id: str = "", detail: str = "") -> None:
        actor = principal if isinstance(principal, str) else principal.actor
        await self.accounts.record(AuditEntry(actor, action, bot, conversation_id, detail[:500],
                                              client_ip(request)))
