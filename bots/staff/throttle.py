"""Failed sign-ins: who must wait before trying again, kept in the staff store.

Two limits, each over a sliding window of ``WINDOW_S`` (ten minutes):

* **an account from one address**: after ``PER_ACCOUNT`` failed sign-ins for one user name from
  one client address, that pair waits until the oldest of them leaves the window (a correct
  password does not help meanwhile); a successful sign-in clears the pair's failures;
* **an address**: after ``PER_ADDRESS`` failed sign-ins from one address, whatever the user
  names, the address waits the same way (a success does not clear this one). IPv6 addresses
  count per /64, the block one customer line gets, so cycling through it does not help.

Why in the store, not in memory: every failure is a record with its time, in the staff store
(SQLite or MongoDB) that all replicas share, so a lock holds whichever replica the next attempt
reaches, survives restarts, and no amount of other traffic can evict it (an in-memory table has
to forget something to stay bounded; the old one was wiped at 10,000 entries). The records are
bounded by time instead: each expires after the window (MongoDB: a TTL index; SQLite: deleted on
the next failure), and every failure first costs an argon2 verification, so their number is
bounded by what the replicas can verify in ten minutes.

Replicas read and then write, so two attempts racing on two replicas may both pass the check:
a limit can be overshot by the number of attempts in flight at once, never more.

Keys are SHA-256 digests: the table holds neither the typed user names (sometimes a password
typed into the wrong field) nor addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable

from bots.staff.base import StaffStore

WINDOW_S = 600.0
PER_ACCOUNT = 5
PER_ADDRESS = 20


def address_block(ip: str) -> str:
    """The unit an address limit counts: the IPv4 address, the IPv6 /64 (IPv4-mapped: the IPv4)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an IP address (a test client, a Unix socket): itself
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class LoginThrottle:
    def __init__(self, store: StaffStore, *, per_account: int = PER_ACCOUNT, per_address: int = PER_ADDRESS,
                 window_s: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s
        self.clock = clock

    def _account(self, username: str, ip: str) -> str:
        return _key("account", username.strip().casefold(), address_block(ip))

    def _address(self, ip: str) -> str:
        return _key("address", address_block(ip))

    async def retry_after(self, username: str, ip: str) -> float:
        """Seconds until ``username`` may try again from ``ip``; 0: now."""
        now = self.clock()
        waits = [await self._wait(self._account(username, ip), self.per_account, now),
                 await self._wait(self._address(ip), self.per_address, now)]
        return max(waits)

    async def _wait(self, key: str, limit: int, now: float) -> float:
        newest = await self.store.login_failures(key, since=now - self.window_s, limit=limit)
        if len(newest) < limit:
            return 0.0
        # below the limit again once the limit-th newest failure has left the window
        return max(0.0, newest[limit - 1] + self.window_s - now)

    async def failed(self, username: str, ip: str) -> None:
        now = self.clock()
        await self.store.add_login_failure((self._account(username, ip), self._address(ip)), at=now,
                                           keep_until=now + self.window_s)

    async def succeeded(self, username: str, ip: str) -> None:
        await self.store.clear_login_failures(self._account(username, ip))
