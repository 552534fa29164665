"""The FastAPI application of ``switchboard serve``: channels, admin API, probes, metrics.

Start-up never blocks on the model or the database: ``/healthz`` answers at once, and
``/readyz`` turns 200 once every bot's model is loaded and the store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bots.artifact import resolve_artifact
from bots.errors import (
    Busy,
    ConfigError,
    Conflict,
    ConversationNotFound,
    InvalidChange,
    NotDelivered,
    StoreUnavailable,
    SwitchboardError,
)
from bots.handoff import HandoffGauges
from bots.metrics import Metrics
from bots.runtime import ModelLoader, Runtime, UnknownBot, load_onnx_model
from bots.settings import Settings
from bots.store.base import ConversationStore
from connectors.admin import admin_router
from connectors.base import Channel, ChannelFactory, Inbox, Streaming
from connectors.docs import docs_router
from connectors.limits import BodySizeLimit, ClientRateLimit, RateLimiter
from connectors.review.ui import ReviewUI
from connectors.web import WebChannel

log = logging.getLogger("switchboard.app")

# Status codes of the errors that carry a reason for the client as they are (see switchboard_error).
_STATUS: dict[type[SwitchboardError], int] = {ConversationNotFound: 404, InvalidChange: 422, NotDelivered: 502,
                                              Conflict: 409}


def _default_store(settings: Settings) -> ConversationStore:
    from bots.store.factory import open_store

    # Each bot's retention (bot.yml retention_days) is set when its model loads.
    return open_store(uri=settings.mongodb_uri, data_dir=settings.data_dir)


def _channels(inbox: Inbox, settings: Settings, given: Sequence[ChannelFactory]) -> list[Channel]:
    """The ``given`` channels, then the configured ones of other names: web, plus Slack and Telegram
    when configured (their libraries are imported only then)."""
    found: list[Channel | None] = [make(inbox) for make in given]
    names = {c.name for c in found if c is not None}
    if WebChannel.name not in names:
        found.append(WebChannel.from_settings(inbox, settings))
    if "slack" not in names and (settings.slack_signing_secret or settings.slack_bot_token or settings.slack_tokens):
        from connectors.slack import SlackChannel

        found.append(SlackChannel.from_settings(inbox, settings))
    if "telegram" not in names and (settings.telegram_token or settings.telegram_tokens):
        from connectors.telegram import TelegramChannel

        found.append(TelegramChannel.from_settings(inbox, settings))
    return [c for c in found if c is not None]


def create_app(
    settings: Settings,
    bot_dirs: Sequence[Path],
    *,
    store: ConversationStore | None = None,
    channels: Sequence[ChannelFactory] = (),
    model_loader: ModelLoader = load_onnx_model,
    freeze_after_load: bool = False,
) -> FastAPI:
    """The app of `switchboard serve`. ``channels``: built (with the runtime as their ``Inbox``)
    instead of the configured channels of the same names (tests: fake API servers, quick retries).
    ``freeze_after_load`` (the server process, not tests that build many apps in one process): move
    what the first model load built out of the garbage collector's sight (``gc.freeze``)."""
    if not bot_dirs:
        raise ConfigError("no bot folder given: `switchboard serve BOT_DIR [BOT_DIR ...]`")
    bot_dirs = [Path(p) for p in bot_dirs]
    if settings.mongodb_uri and not settings.web_secret:
        log.warning("SWITCHBOARD_WEB_SECRET is not set: widget conversation tokens are signed with a key kept in "
                    "this replica's data folder, so replicas with their own folders refuse each other's tokens; "
                    "set the same SWITCHBOARD_WEB_SECRET on every replica")
    metrics = Metrics()
    runtime = Runtime(settings, store or _default_store(settings), metrics, model_loader=model_loader)
    # Every bot is validated whole now (bot.yml, dialogue, actions, pii), so a broken one stops start-up
    # with file:line reasons; only the models load in the background.
    specs = runtime.validate(bot_dirs)
    expected = {spec.name for spec in specs}
    channel_list = _channels(runtime, settings, channels)
    for channel in channel_list:  # channels that can show a generated answer as it is written
        if isinstance(channel, Streaming):
            runtime.partial_sinks[channel.name] = channel.partial
        runtime.senders[channel.name] = channel.send  # where a reminder's answer goes
    review = ReviewUI(runtime, {c.name: c for c in channel_list})
    # Customers waiting for an agent, read from the shared store: the same on every replica.
    handoff_gauges = HandoffGauges(runtime.store, metrics, lambda: runtime.bots)
    loading: dict[str, str] = {}

    served: dict[Path, str] = {}  # bot folder -> artifact folder name being served

    async def load(bot_dir: Path) -> None:
        try:
            artifact = await asyncio.to_thread(resolve_artifact, bot_dir)
            if served.get(bot_dir) == artifact.name:
                return
            await runtime.load_bot(bot_dir)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log; the old model stays
            loading[str(bot_dir)] = str(exc)
            log.error("bot failed to load", extra={"bot_dir": str(bot_dir), "error": str(exc)})
        else:
            served[bot_dir] = artifact.name
            loading.pop(str(bot_dir), None)

    async def load_all() -> None:
        await asyncio.gather(*(load(d) for d in bot_dirs))
        if freeze_after_load:
            # What loading built (models, tokenizers, answer indexes, bot specs) lives as long as the
            # process: out of the collector's sight, so full collections stay short under load.
            gc.collect()
            gc.freeze()
        # A newer artifact (e.g. `switchboard train` while serving) is loaded in the background
        # and swapped in with one assignment: requests in flight finish on the old model.
        while settings.model_poll_s > 0:
            await asyncio.sleep(settings.model_poll_s)
            for bot_dir in bot_dirs:
                await load(bot_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.store.start()
        for channel in channel_list:
            await channel.start()
        loader = asyncio.create_task(load_all())
        app.state.loader = loader
        runtime.reminders.start()  # fires the due reminders of the bots loaded (stopped by drain)
        gauges = asyncio.create_task(handoff_gauges.run())
        try:
            yield
        finally:
            for task in (loader, gauges):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finished = await runtime.drain(settings.drain_timeout_s)
            log.info("drained", extra={"complete": finished})
            for channel in channel_list:
                await channel.aclose()
            await runtime.aclose()
            await review.aclose()

    # /docs from packaged files, not a CDN; no /redoc (connectors/docs.py).
    app = FastAPI(title="Switchboard", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.channels = {c.name: c for c in channel_list}
    app.state.review = review
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ClientRateLimit, limiter=RateLimiter(settings.rate_per_ip, settings.rate_per_ip_burst),
                       path_pattern=r"^/bots/[^/]+/webhooks/web")

    @app.exception_handler(SwitchboardError)
    async def switchboard_error(request: Request, exc: SwitchboardError) -> JSONResponse:
        """The one translation of the runtime's and the domain's errors (bots/errors.py) into HTTP."""
        if isinstance(exc, UnknownBot):
            if request.path_params.get("bot") in expected:  # served here, model still loading: retry
                return JSONResponse({"detail": "the bot is starting, retry shortly"}, status_code=503,
                                    headers={"Retry-After": "1"})
            return JSONResponse({"detail": str(exc)}, status_code=404)
        if isinstance(exc, Busy):
            return JSONResponse({"detail": "the bot is busy, retry shortly"}, status_code=503,
                                headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})
        if isinstance(exc, StoreUnavailable):
            return JSONResponse({"detail": "conversation store unavailable, retry shortly"}, status_code=503,
                                headers={"Retry-After": "2"})
        status = next((_STATUS[t] for t in type(exc).__mro__ if t in _STATUS), None)
        if status is None:
            raise exc  # not meant for a client (a bug or a broken deployment): a plain 500, logged
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            reasons.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return JSONResponse({"detail": "; ".join(reasons) or "invalid request"}, status_code=status)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> PlainTextResponse:
        if len(served) < len(bot_dirs):
            problems = "; ".join(f"{k}: {v}" for k, v in loading.items())
            return PlainTextResponse(problems or f"loading models ({len(served)}/{len(bot_dirs)} ready)",
                                     status_code=503)
        ok, reason = await runtime.ready()
        return PlainTextResponse(reason, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        await handoff_gauges.refresh()  # bounded; on a store failure the last values are exported
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        names = sorted(runtime.bots) or [p.name for p in bot_dirs]
        return RedirectResponse(f"/bots/{names[0]}/chat")

    for channel in channel_list:
        app.include_router(channel.router())
    app.include_router(admin_router(runtime))
    app.include_router(docs_router(app.title, app.openapi_url or "/openapi.json"))
    app.include_router(review.router())
    return app
