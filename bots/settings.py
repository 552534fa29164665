"""Process settings: one object read from ``SWITCHBOARD_*`` environment variables and
validated at start-up. A bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bots.errors import ConfigError
from bots.pii import MIN_KEY_CHARS

PREFIX = "SWITCHBOARD_"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    mongodb_uri: str | None = None
    admin_token: str | None = None
    nlu_threads: int = 1
    nlu_workers: int = 2  # NLU batches run at once per model (each on nlu_threads threads)
    nlu_max_batch: int = 16
    nlu_max_wait_ms: float = 2.0
    max_body_bytes: int = 64 * 1024
    max_message_chars: int = 4000
    max_in_flight: int = 512
    lease_ttl_s: float = 30.0
    # Conversations whose dialogue state a replica keeps between messages (LRU): a known
    # conversation reads only its new turns from the store instead of its last 200.
    state_cache: int = 1000
    gc_gen0: int = 50_000  # allocations between young garbage collections in `switchboard serve`
    log_level: str = "INFO"
    log_json: bool = True
    drain_timeout_s: float = 20.0
    model_poll_s: float = 10.0  # how often to look for a newer model artifact (0: never)
    # Abuse limits on the customer-facing web channel (per second, with bursts; 0 turns one off).
    rate_per_ip: float = 5.0
    rate_per_ip_burst: float = 30.0
    rate_per_conversation: float = 1.0
    rate_per_conversation_burst: float = 10.0
    ws_idle_timeout_s: float = 300.0  # a web-widget socket with no message for this long is closed
    # Channel secrets (never logged: see __repr__).
    slack_signing_secret: str | None = None
    slack_bot_token: str | None = None
    telegram_token: str | None = None
    telegram_secret: str | None = None
    # SWITCHBOARD_SLACK_TOKENS: {"T123": "xoxb-..."} per workspace (team id); slack_bot_token serves any other.
    slack_tokens: Mapping[str, str] = field(default_factory=dict)
    # SWITCHBOARD_TELEGRAM_TOKENS: {"bot-name": "123:ABC"} per bot; telegram_token serves any other.
    telegram_tokens: Mapping[str, str] = field(default_factory=dict)
    slack_api_url: str = "https://slack.com/api/"
    telegram_api_url: str = "https://api.telegram.org"
    session_secret: str | None = None
    # The HMAC key of user-id pseudonyms (bots/pii.py); required by bots with `pii:` on. Changing it
    # gives every customer a new pseudonym (their old and new conversations no longer group).
    pii_key: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    _SECRETS = ("admin_token", "slack_signing_secret", "slack_bot_token", "telegram_token",
                "telegram_secret", "session_secret", "mongodb_uri", "slack_tokens", "telegram_tokens", "pii_key")

    def __repr__(self) -> str:
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in self._SECRETS and value:
                value = "***"
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name.upper())
            return value if value not in (None, "") else None

        def number(name: str, kind: type, default: float, low: float, high: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                problems.append(f"{PREFIX}{name.upper()}={raw!r}: expected a {kind.__name__}")
                return default
            if not low <= value <= high:
                problems.append(f"{PREFIX}{name.upper()}={raw!r}: must be between {low:g} and {high:g}")
                return default
            return value

        def string_map(name: str) -> dict[str, str]:
            raw = get(name)
            if raw is None:
                return {}
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append(f"{PREFIX}{name.upper()}: not JSON ({exc.msg}); use {{\"key\": \"token\"}}")
                return {}
            if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
                problems.append(f"{PREFIX}{name.upper()}: use a JSON object of non-empty strings, "
                                '{"key": "token"}')
                return {}
            return {str(k): v for k, v in value.items()}

        log_level = (get("log_level") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"{PREFIX}LOG_LEVEL={log_level!r}: use DEBUG, INFO, WARNING or ERROR")
        log_json = (get("log_json") or "true").lower()
        if log_json not in ("true", "false", "1", "0"):
            problems.append(f"{PREFIX}LOG_JSON={log_json!r}: use true or false")
        settings = cls(
            data_dir=Path(get("data_dir") or "data"),
            mongodb_uri=get("mongodb_uri"),
            admin_token=get("admin_token"),
            nlu_threads=int(number("nlu_threads", int, 1, 1, 64)),
            nlu_workers=int(number("nlu_workers", int, 2, 1, 64)),
            nlu_max_batch=int(number("nlu_max_batch", int, 16, 1, 1024)),
            nlu_max_wait_ms=float(number("nlu_max_wait_ms", float, 2.0, 0.0, 1000.0)),
            max_body_bytes=int(number("max_body_bytes", int, 64 * 1024, 1024, 16 * 1024 * 1024)),
            max_message_chars=int(number("max_message_chars", int, 4000, 1, 100_000)),
            max_in_flight=int(number("max_in_flight", int, 512, 1, 100_000)),
            lease_ttl_s=float(number("lease_ttl_s", float, 30.0, 1.0, 3600.0)),
            state_cache=int(number("state_cache", int, 1000, 0, 1_000_000)),
            gc_gen0=int(number("gc_gen0", int, 50_000, 100, 10_000_000)),
            log_level=log_level,
            log_json=log_json in ("true", "1"),
            drain_timeout_s=float(number("drain_timeout_s", float, 20.0, 0.0, 3600.0)),
            model_poll_s=float(number("model_poll_s", float, 10.0, 0.0, 86400.0)),
            rate_per_ip=float(number("rate_per_ip", float, 5.0, 0.0, 1e6)),
            rate_per_ip_burst=float(number("rate_per_ip_burst", float, 30.0, 1.0, 1e6)),
            rate_per_conversation=float(number("rate_per_conversation", float, 1.0, 0.0, 1e6)),
            rate_per_conversation_burst=float(number("rate_per_conversation_burst", float, 10.0, 1.0, 1e6)),
            ws_idle_timeout_s=float(number("ws_idle_timeout_s", float, 300.0, 1.0, 86400.0)),
            slack_signing_secret=get("slack_signing_secret"),
            slack_bot_token=get("slack_bot_token"),
            telegram_token=get("telegram_token"),
            telegram_secret=get("telegram_secret"),
            slack_tokens=string_map("slack_tokens"),
            telegram_tokens=string_map("telegram_tokens"),
            slack_api_url=get("slack_api_url") or "https://slack.com/api/",
            telegram_api_url=get("telegram_api_url") or "https://api.telegram.org",
            session_secret=get("session_secret"),
            pii_key=get("pii_key"),
        )
        if settings.admin_token is not None and len(settings.admin_token) < 16:
            problems.append(f"{PREFIX}ADMIN_TOKEN: use at least 16 characters (e.g. `openssl rand -hex 32`)")
        if settings.pii_key is not None and len(settings.pii_key) < MIN_KEY_CHARS:
            problems.append(f"{PREFIX}PII_KEY: use at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)")
        if problems:
            raise ConfigError(problems)
        if overrides:
            settings = replace(settings, **overrides)  # type: ignore[arg-type]
        return settings
