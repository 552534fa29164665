"""Process settings: one object, the only reader of ``SWITCHBOARD_*`` environment variables.

Every variable is the upper-cased name of a field of :class:`Settings` with the prefix
(``data_dir`` ← ``SWITCHBOARD_DATA_DIR``); a field's default is written once, on the field, and its
bounds once, in ``_RANGES``. ``Settings.from_env`` reads them all at start-up and reports every
problem at once, each naming its variable: a bad value, and any ``SWITCHBOARD_*`` variable that is
not a setting (a typo such as ``SWITCHBOARD_NLU_THREAD`` would otherwise be silently ignored), with
the closest known name. Nothing runs on a setting nobody reads. An empty value means "not set"
(the Kubernetes Secret template lists every key with an empty value).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bots.errors import ConfigError
from bots.pii import MIN_KEY_CHARS

PREFIX = "SWITCHBOARD_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")  # embedded store, staff accounts, exports (created 0700, files 0600)
    mongodb_uri: str | None = None
    admin_token: str | None = None
    # Where `switchboard serve` listens (its --host/--port win).
    host: str = "127.0.0.1"
    port: int = 8000
    # Sites allowed to embed the widget and to frame /bots/{bot}/chat (exact origins, or "*"); the
    # server's own origin always is. Normalised: lower case, no trailing "/".
    widget_origins: tuple[str, ...] = ()
    nlu_threads: int = 1
    nlu_workers: int = 2  # NLU batches run at once per model (each on nlu_threads threads)
    nlu_max_batch: int = 16
    nlu_max_wait_ms: float = 2.0
    max_body_bytes: int = 64 * 1024
    max_message_chars: int = 4000
    max_in_flight: int = 512
    # A conversation's processing lease: renewed by a heartbeat while a replica processes it; a dead
    # replica's conversations go on at another one after at most this long.
    lease_ttl_s: float = 2.0
    # Conversations whose dialogue state a replica keeps between messages (LRU): a known
    # conversation reads only its new turns from the store instead of its last 200.
    state_cache: int = 1000
    gc_gen0: int = 50_000  # allocations between young garbage collections in `switchboard serve`
    log_level: str = "INFO"
    log_json: bool = True
    drain_timeout_s: float = 20.0
    # How often each replica looks for due reminders (bots/reminders.py; 0: this replica fires none).
    reminder_poll_s: float = 0.5
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
    # The public address `switchboard telegram set-webhook` registers when --url is not given.
    telegram_webhook_url: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    telegram_api_url: str = "https://api.telegram.org"
    # The HMAC key of user-id pseudonyms (bots/pii.py); required by bots with `pii:` on. Changing it
    # gives every customer a new pseudonym (their old and new conversations no longer group).
    pii_key: str | None = None
    # The HMAC key of the web widget's conversation tokens (connectors/web_tokens.py): every replica
    # needs the same one. Not set: a key generated once in data_dir (one replica, or a shared data_dir).
    web_secret: str | None = None

    _SECRETS = ("admin_token", "slack_signing_secret", "slack_bot_token", "telegram_token",
                "telegram_secret", "mongodb_uri", "slack_tokens", "telegram_tokens", "pii_key", "web_secret")

    def __repr__(self) -> str:
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in self._SECRETS and value:
                value = "***"
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def __post_init__(self) -> None:
        # Fixed to the directory the process started in: a Rasa project's in-process custom actions run with
        # their project folder as the working directory (bots/dialogue/actions.py), and a file under data_dir
        # opened meanwhile by another thread (an export, the web token key) must not land there.
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every ``SWITCHBOARD_*`` variable there is, one per field."""
        return tuple(variable(f.name) for f in dataclasses.fields(cls))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read and validate every ``SWITCHBOARD_*`` variable of ``env`` (default: the process's);
        raise ConfigError listing every problem, each naming its variable."""
        env = os.environ if env is None else env
        problems: list[str] = []
        known = cls.variables()
        for name in sorted(k for k in env if k.startswith(PREFIX) and k not in known):
            # compared without the prefix, which every name shares
            close = difflib.get_close_matches(name.removeprefix(PREFIX), [k.removeprefix(PREFIX) for k in known],
                                              n=1, cutoff=0.7)
            hint = f"did you mean {PREFIX}{close[0]}?" if close else "see the configuration table in README.md"
            problems.append(f"{name}: not a setting ({hint})")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(variable(f.name))
            if raw in (None, ""):
                continue
            try:
                values[f.name] = _parse(f, raw.strip())
            except ValueError as exc:
                shown = "" if f.name == "widget_origins" else f"={_shown(f.name, raw)}"  # names the bad origin
                problems.append(f"{variable(f.name)}{shown}: {exc}")
        token = values.get("admin_token")
        if token is not None and len(token) < 16:
            problems.append(f"{PREFIX}ADMIN_TOKEN: use at least 16 characters (e.g. `openssl rand -hex 32`)")
        pii_key = values.get("pii_key")
        if pii_key is not None and len(pii_key) < MIN_KEY_CHARS:
            problems.append(f"{PREFIX}PII_KEY: use at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)")
        web_secret = values.get("web_secret")
        if web_secret is not None and len(web_secret) < 32:
            problems.append(f"{PREFIX}WEB_SECRET: use at least 32 characters (e.g. `openssl rand -hex 32`)")
        if problems:
            raise ConfigError(problems)
        settings = cls(**values)
        if overrides:
            settings = replace(settings, **overrides)  # type: ignore[arg-type]
        return settings


def variable(name: str) -> str:
    """The environment variable of a setting: ``data_dir`` → ``SWITCHBOARD_DATA_DIR``."""
    return PREFIX + name.upper()


# Bounds of the numeric settings (inclusive).
_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "nlu_threads": (1, 64),
    "nlu_workers": (1, 64),
    "nlu_max_batch": (1, 1024),
    "nlu_max_wait_ms": (0.0, 1000.0),
    "max_body_bytes": (1024, 16 * 1024 * 1024),
    "max_message_chars": (1, 100_000),
    "max_in_flight": (1, 100_000),
    "lease_ttl_s": (1.0, 3600.0),
    "state_cache": (0, 1_000_000),
    "gc_gen0": (100, 10_000_000),
    "drain_timeout_s": (0.0, 3600.0),
    "reminder_poll_s": (0.0, 3600.0),
    "model_poll_s": (0.0, 86400.0),
    "rate_per_ip": (0.0, 1e6),
    "rate_per_ip_burst": (1.0, 1e6),
    "rate_per_conversation": (0.0, 1e6),
    "rate_per_conversation_burst": (1.0, 1e6),
    "ws_idle_timeout_s": (1.0, 86400.0),
}


def _shown(name: str, raw: str) -> str:
    return "***" if name in Settings._SECRETS else repr(raw)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    """One variable's value as its field's type; ValueError says what is expected."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
    if f.name == "log_level":
        if raw.upper() not in LOG_LEVELS:
            raise ValueError(f"use {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")
        return raw.upper()
    if f.name == "widget_origins":
        return parse_origins(raw)
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError("use true or false")
        return raw.lower() in ("true", "1")
    if isinstance(default, int | float):
        kind = type(default)
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError("expected a whole number" if kind is int else "expected a number") from None
        low, high = _RANGES[f.name]
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value
    if isinstance(default, Path):
        return Path(raw)
    if isinstance(default, Mapping):
        return _string_map(raw)
    return raw  # text (None as default: optional text)


def _string_map(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg}); use {{\"key\": \"token\"}}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError('use a JSON object of non-empty strings, {"key": "token"}')
    return {str(k): v for k, v in value.items()}


def parse_origins(raw: str) -> tuple[str, ...]:
    """Comma-separated web origins (``https://shop.example.com``), or ``*`` for any site:
    normalised to lower case without a trailing ``/``; ValueError names the first bad one."""
    found: list[str] = []
    for item in (x.strip().rstrip("/") for x in raw.split(",")):
        if not item:
            continue
        if item == "*":
            return ("*",)
        if not _ORIGIN.match(item):
            raise ValueError(f"{item!r} is not an origin: use scheme://host[:port], e.g. https://shop.example.com")
        if item.lower() not in found:
            found.append(item.lower())
    return tuple(found)
