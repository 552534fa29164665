"""Sign-in lockout (bots/staff/throttle.py) on both staff stores (SQLite, and MongoDB on a real
SecantusDB server): a lock is never forgotten while it lasts, however many other user names are
tried; one address cannot try user names without limit; and the lock holds on every replica
sharing the store, so a second app instance refuses what the first locked."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bots.settings import Settings
from bots.staff.base import StaffStore
from bots.staff.throttle import PER_ACCOUNT, PER_ADDRESS, WINDOW_S, LoginThrottle, address_block
from connectors.app import create_app
from tests.connectors.test_review_api import PASSWORD, login_token
from tests.connectors.test_review_staff import store as store
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

FORM = {"content-type": "application/x-www-form-urlencoded"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_flooding_other_user_names_does_not_unlock_a_locked_account(store: StaffStore) -> None:
    clock = Clock()
    throttle = LoginThrottle(store, clock=clock)
    for _ in range(PER_ACCOUNT):
        await throttle.failed("ann", "198.51.100.7")
    locked_for = await throttle.retry_after("ann", "198.51.100.7")
    assert locked_for == WINDOW_S
    # 10,001 other user names, each from its own address (so no address limit stops the flood): the old
    # in-memory table was wiped past 10,000 entries, and ann could try again at once
    flood = 10_001
    pending = [throttle.failed(f"user{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") for i in range(flood)]
    for start in range(0, flood, 500):
        await asyncio.gather(*pending[start:start + 500])
    clock.now += 1
    assert await throttle.retry_after("ANN", "198.51.100.7") == WINDOW_S - 1  # still locked (names fold case)
    assert await throttle.retry_after("user42", "10.0.0.42") == 0  # one failure each: not locked
    clock.now += WINDOW_S  # the failures leave the window: unlocked, nothing kept for ever
    assert await throttle.retry_after("ann", "198.51.100.7") == 0


async def test_one_address_cannot_try_user_names_without_limit(store: StaffStore) -> None:
    clock = Clock()
    throttle = LoginThrottle(store, clock=clock)
    for i in range(PER_ADDRESS):
        assert await throttle.retry_after(f"guess{i}", "203.0.113.9") == 0
        await throttle.failed(f"guess{i}", "203.0.113.9")
        clock.now += 1
    assert await throttle.retry_after("a-new-name", "203.0.113.9") == WINDOW_S - PER_ADDRESS
    assert await throttle.retry_after("a-new-name", "203.0.113.10") == 0  # another address is not affected
    # IPv6: one /64 counts as one address, so cycling through it does not help
    for i in range(PER_ADDRESS):
        await throttle.failed(f"guess{i}", f"2001:db8:1:2::{i + 1:x}")
    assert await throttle.retry_after("a-new-name", "2001:db8:1:2:ffff::1") > 0
    assert await throttle.retry_after("a-new-name", "2001:db8:1:3::1") == 0
    # a success clears the account's failures from that address, not the address's
    await throttle.succeeded("guess0", "203.0.113.9")
    assert await throttle.retry_after("guess0", "203.0.113.9") > 0
    clock.now += WINDOW_S
    assert await throttle.retry_after("a-new-name", "203.0.113.9") == 0


async def test_a_correct_sign_in_clears_the_accounts_failures(store: StaffStore) -> None:
    throttle = LoginThrottle(store, clock=Clock())
    for _ in range(PER_ACCOUNT - 1):
        await throttle.failed("ann", "198.51.100.7")
    await throttle.succeeded("ann", "198.51.100.7")
    await throttle.failed("ann", "198.51.100.7")
    assert await throttle.retry_after("ann", "198.51.100.7") == 0


def test_address_blocks() -> None:
    assert address_block("198.51.100.7") == "198.51.100.7"
    assert address_block("2001:db8::1") == address_block("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_block("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_block("testclient") == "testclient"


@pytest.fixture(params=["sqlite", "mongodb"])
def shared_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Settings of replicas sharing one store: the embedded files in one data dir, or one MongoDB."""
    uri = request.getfixturevalue("mongo_uri") if request.param == "mongodb" else None
    return dataclasses.replace(settings, mongodb_uri=uri)


@pytest.fixture
def replicas(tiny_bot_dir: Path, shared_settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    async def add_user() -> None:
        from bots.staff.accounts import Accounts, open_staff_store

        staff = open_staff_store(uri=shared_settings.mongodb_uri, data_dir=shared_settings.data_dir)
        await staff.start()
        await Accounts(staff).add_user("ann", PASSWORD, "agent")
        await staff.aclose()

    asyncio.run(add_user())
    with TestClient(create_app(shared_settings, [tiny_bot_dir])) as a, \
            TestClient(create_app(shared_settings, [tiny_bot_dir])) as b:
        yield a, b


def sign_in(client: TestClient, username: str, password: str) -> tuple[int, str, str | None]:
    r = client.post("/review/login", content=f"csrf_token={login_token(client)}&username={username}"
                    f"&password={password.replace(' ', '+')}", headers=FORM, follow_redirects=False)
    return r.status_code, r.text, r.headers.get("retry-after")


def test_the_lock_holds_on_every_replica(replicas: tuple[TestClient, TestClient]) -> None:
    a, b = replicas
    for _ in range(PER_ACCOUNT):
        assert sign_in(a, "ann", "wrong-password")[0] == 401
    status, text, retry_after = sign_in(b, "ann", PASSWORD)  # the right password, on the other replica
    assert status == 429 and "Too many failed attempts" in text
    assert retry_after is not None and 0 < int(retry_after) <= WINDOW_S + 1
    assert int(re.search(r"Try again in (\d+) s", text).group(1)) == int(retry_after)  # type: ignore[union-attr]
    assert sign_in(a, "ann", PASSWORD)[0] == 429


def test_one_address_trying_many_user_names_gets_429_with_retry_after(
        replicas: tuple[TestClient, TestClient]) -> None:
    a, b = replicas
    started = time.monotonic()
    for i in range(PER_ADDRESS):
        client = (a, b)[i % 2]  # spread over both replicas: they count together
        assert sign_in(client, f"guess{i}", "wrong-password")[0] == 401
    status, _, retry_after = sign_in(a, "ann", PASSWORD)  # even a real account, from this address
    assert status == 429 and retry_after is not None
    assert WINDOW_S - (time.monotonic() - started) - 1 <= int(retry_after) <= WINDOW_S + 1
