"""Pick the conversation store: MongoDB when a URI is configured (``SWITCHBOARD_MONGODB_URI``),
else the embedded SQLite file ``<data_dir>/conversations.db``. Never a silent in-memory fallback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pymongo.errors import ConfigurationError, InvalidURI

from bots.errors import ConfigError
from bots.store.base import ConversationStore

SQLITE_FILE = "conversations.db"


def open_store(*, uri: str | None, data_dir: Path | str, retention: Mapping[str, float] | None = None
               ) -> ConversationStore:
    """The store for these settings; nothing connects until ``start()``.

    ``retention`` maps a bot name to how many seconds its conversations are kept (absent: forever).
    A malformed URI or retention raises ``ConfigError`` naming ``SWITCHBOARD_MONGODB_URI``/the bot.
    """
    retention = dict(retention or {})
    for bot, seconds in retention.items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ConfigError(f"retention of bot {bot!r}: expected a positive number of seconds, got {seconds!r}")
    if uri:
        from bots.store.mongo import MongoStore

        try:
            return MongoStore(uri, retention=retention)
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise ConfigError(f"SWITCHBOARD_MONGODB_URI: {exc} (expected e.g. mongodb://host:27017/switchboard)"
                              ) from exc
    from bots.store.sqlite import SQLiteStore

    return SQLiteStore(Path(data_dir) / SQLITE_FILE, retention=retention)
