"""Conversation tokens of the web widget: knowing a conversation id alone never reads its transcript.

The widget starts a conversation with ``POST /bots/{bot}/webhooks/web/conversations``: the server
picks a random conversation id and returns it with its token, an HMAC-SHA256 of ``bot/id`` under a
server key. ``GET …/web/history`` wants the token in the ``X-Conversation-Token`` header and the
WebSocket wants it in its first frame, ``{"type": "auth", "token": …}``; neither puts it in a URL,
so access logs (ours, an ingress's, a proxy's) never hold something that reads a conversation. A
token cannot be asked for an existing id: only for a new, random one.

The key is ``SWITCHBOARD_WEB_SECRET`` (every replica must share it). Without it, a random key is
generated once into ``DATA_DIR/web-secret`` (mode 0600) and reused after restarts, which suits one
replica or replicas sharing a data folder; replicas with their own data folders each sign with
their own key, so the setting is required there (``switchboard serve`` warns when it is missing
while a MongoDB store is configured).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from bots.errors import ConfigError

KEY_FILE = "web-secret"
TOKEN_HEADER = "X-Conversation-Token"  # noqa: S105 - a header name, not a secret


class ConversationTokens:
    """Issue and check per-conversation tokens. The key is read (or generated) on first use, so
    an app that never serves the widget never touches the data folder."""

    def __init__(self, secret: str | None, data_dir: Path) -> None:
        self._secret = secret
        self._data_dir = data_dir
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def _signing_key(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._secret.encode() if self._secret else _key_file(self._data_dir)
        return self._key

    def token(self, bot: str, conversation_id: str) -> str:
        message = f"{bot}/{conversation_id}".encode()
        return hmac.new(self._signing_key(), message, hashlib.sha256).hexdigest()

    def new_conversation(self, bot: str) -> tuple[str, str]:
        """A fresh random conversation id and its token."""
        conversation_id = secrets.token_hex(16)
        return conversation_id, self.token(bot, conversation_id)

    def valid(self, bot: str, conversation_id: str, token: str | None) -> bool:
        if not token or len(token) > 128:
            return False
        return hmac.compare_digest(self.token(bot, conversation_id), token)


def _key_file(data_dir: Path) -> bytes:
    """The key kept in ``data_dir``: created once, atomically (several processes may share the
    folder: the first link wins and every process reads the same key)."""
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise ConfigError(f"{path}: the web token key is shorter than 32 characters; delete the file to "
                         "generate a new one (open widget conversations then start again)")
    return key.encode()
