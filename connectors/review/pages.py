"""The review UI's server-rendered pages: sign-in, conversation list, transcript, queue, audit log.

Templates autoescape everything; customer text reaches the browser only as escaped HTML or as
JSON that the page's script inserts with ``textContent``. Every page carries a strict
Content-Security-Policy (no inline script), so even a missed escape would run nothing.
"""

from __future__ import annotations

import datetime as dt
import secrets
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from bots import handoff
from bots.botspec import KNOWN_CHANNELS
from bots.store.base import SORT_FIELDS, load_existing
from connectors.review.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Auth, Principal, client_ip, set_cookie
from connectors.review.filters import PAGE_SIZES, parse_filters
from connectors.review.live import customer_label
from connectors.review.transcripts import transcript_payload

if TYPE_CHECKING:
    from bots.runtime import Runtime

_STATIC = {"review.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_MAX_FORM_BYTES = 4096


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts or 0, tz=dt.UTC).isoformat()


_env = Environment(loader=PackageLoader("connectors.review", "templates"), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["when"] = _when
_env.filters["iso"] = _iso


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status_code, headers=_HEADERS)


def _safe_next(target: str) -> str:
    """Only paths of the review UI: never another site (``//evil``, ``https://...``)."""
    if target.startswith("/review") and not target.startswith("//") and "\\" not in target:
        return target
    return "/review"


def pages_router(runtime: Runtime, auth: Auth) -> APIRouter:
    router = APIRouter(prefix="/review", include_in_schema=False)
    viewer = Depends(auth.require("viewer", page=True))
    agent = Depends(auth.require("agent", page=True))
    admin = Depends(auth.require("admin", page=True))
    store = runtime.store

    def login_page(request: Request, next_url: str, error: str = "", status_code: int = 200) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render("login.html", status_code, csrf_token=token, next_url=_safe_next(next_url), error=error)
        set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return response

    @router.get("/login")
    async def login_form(request: Request, next: str = "/review") -> Response:
        return login_page(request, next)

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, "sign-in form too large")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        username, password = form.get("username", "").strip(), form.get("password", "")
        next_url = form.get("next", "/review")
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, form.get("csrf_token", "")):
            return login_page(request, next_url, "Your sign-in form expired. Please try again.", 403)
        ip = client_ip(request)
        wait = await auth.throttle.retry_after(username, ip)
        if wait > 0:
            seconds = int(wait) + 1
            refused = login_page(request, next_url, f"Too many failed attempts. Try again in {seconds} s.", 429)
            refused.headers["Retry-After"] = str(seconds)
            return refused
        user = await auth.accounts.authenticate(username, password)
        if user is None:
            await auth.throttle.failed(username, ip)
            await auth.audit(request, username[:64] or "?", "sign_in_failed")
            return login_page(request, next_url, "Wrong user name or password.", 401)
        await auth.throttle.succeeded(username, ip)
        key, _ = await auth.accounts.open_session(user)
        response = RedirectResponse(_safe_next(next_url), status_code=303)
        set_cookie(response, request, SESSION_COOKIE, key, max_age=int(auth.accounts.session_ttl_s))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/review")
        await auth.audit(request, user.username, "sign_in")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        key = request.cookies.get(SESSION_COOKIE, "")
        found = await auth.accounts.session(key) if key else None
        if found is not None:
            body = await request.body()
            form = {k: v[0] for k, v in parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", "replace")).items()}
            await auth.check_csrf(request, found[0].csrf_token, form_value=form.get("csrf_token", ""))
            await auth.accounts.close_session(key)
        response = RedirectResponse("/review/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/review")
        return response

    def _intents(bot: str | None) -> list[str]:
        specs = [runtime.bots[bot].spec] if bot in runtime.bots else [b.spec for b in runtime.bots.values()]
        return sorted({name for spec in specs for name in spec.intents})

    @router.get("")
    async def conversations(request: Request, principal: Principal = viewer) -> Response:
        filters = parse_filters(request.query_params)
        if filters.query.bot is not None:
            runtime.bot(filters.query.bot)
        page = await store.search(filters.query)
        current = int(filters.values["page"] or 1)
        base = {k: v for k, v in filters.values.items() if v and k != "page"}
        pages = max(1, -(-page.total // filters.page_size))
        return render(
            "conversations.html", principal=principal, filters=filters.values, page=page, current=current,
            pages=pages, bots=sorted(runtime.bots), intents=_intents(filters.query.bot), channels=KNOWN_CHANNELS,
            sorts=SORT_FIELDS, page_sizes=PAGE_SIZES, nav="conversations",
            prev_url=f"?{urlencode({**base, 'page': current - 1})}" if current > 1 else "",
            next_url=f"?{urlencode({**base, 'page': current + 1})}" if current < pages else "",
        )

    @router.get("/queue")
    async def queue(request: Request, principal: Principal = agent) -> Response:
        found = await handoff.queue(store, limit=200)
        return render("queue.html", principal=principal, found=found, nav="queue", customer=customer_label)

    @router.get("/bots/{bot}/conversations/{conversation_id}")
    async def transcript(request: Request, bot: str, conversation_id: str, principal: Principal = viewer) -> Response:
        spec = runtime.bot(bot).spec
        conversation = await load_existing(store, bot, conversation_id)
        await auth.audit(request, principal, "view_transcript", bot=bot, conversation_id=conversation_id)
        payload = transcript_payload(conversation, spec)
        return render("transcript.html", principal=principal, payload=payload, summary=conversation.summary,
                      nav="conversations")

    @router.get("/canned")
    async def canned_page(request: Request, principal: Principal = admin) -> Response:
        replies = await store.canned_replies({"", *runtime.bots})
        return render("canned.html", principal=principal, replies=replies, bots=sorted(runtime.bots), nav="canned")

    @router.get("/audit")
    async def audit_page(request: Request, page: int = 1, principal: Principal = admin) -> Response:
        page = max(1, min(page, 100_000))
        entries, total = await auth.accounts.store.audit_log(offset=(page - 1) * 100, limit=100)
        return render("audit.html", principal=principal, entries=entries, total=total, current=page,
                      has_next=page * 100 < total, nav="audit")

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        body = resources.files("connectors.review").joinpath("static", name).read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "no-cache",
                                                                  "X-Content-Type-Options": "nosniff"})

    return router
