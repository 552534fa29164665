"""The review UI wired together: staff accounts, pages, JSON API and live takeover.

``create_app`` builds one ``ReviewUI`` and includes ``ReviewUI.router()``. Staff accounts
live in MongoDB when ``SWITCHBOARD_MONGODB_URI`` is set, else in ``<data_dir>/staff.db``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fastapi import APIRouter

from bots.staff.accounts import Accounts, open_staff_store
from bots.staff.base import StaffStore
from connectors.review.api import api_router
from connectors.review.auth import Auth
from connectors.review.canned import canned_router
from connectors.review.exports import exports_router
from connectors.review.live import live_router
from connectors.review.pages import pages_router

if TYPE_CHECKING:
    from bots.runtime import Runtime
    from connectors.base import Channel


class ReviewUI:
    def __init__(self, runtime: Runtime, channels: Mapping[str, Channel], *,
                 staff_store: StaffStore | None = None) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.channels = channels
        self.accounts = Accounts(staff_store or open_staff_store(uri=settings.mongodb_uri,
                                                                 data_dir=settings.data_dir))
        self.auth = Auth(self.accounts, settings)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.include_router(pages_router(self.runtime, self.auth))
        router.include_router(exports_router(self.runtime, self.auth))
        router.include_router(api_router(self.runtime, self.auth))
        router.include_router(live_router(self.runtime, self.auth, self.channels))
        router.include_router(canned_router(self.runtime, self.auth))
        return router

    async def aclose(self) -> None:
        await self.accounts.store.aclose()
