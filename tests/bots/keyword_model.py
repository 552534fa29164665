"""A small deterministic intent model for dialogue tests (no training): keyword patterns → intent.

The real ONNX model is exercised by tests that use the trained ``tiny_bot_dir`` fixture; these
tests are about what the dialogue engine does with a prediction, so the prediction is fixed.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from bots.artifact import Manifest, write_manifest
from bots.botspec import BotSpec
from bots.nlu.oos import NOT_UNDERSTOOD
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from bots.types import ConversationRef, Entity, IntentScore, Understanding, UserMessage

DIALOGUE_BOT = Path(__file__).resolve().parents[1] / "data" / "dialogue_bot"

KEYWORDS: tuple[tuple[str, str], ...] = (
    (r"\b(human|agent|person)\b", "contact_human_agent"),
    (r"\b(change|modify)\b", "change_order"),
    (r"\b(track|where is|status)\b", "track_order"),
    (r"\b(hello|hi|morning)\b", "greet"),
    (r"\b(bye|goodbye)\b", "goodbye"),
    (r"\brefund\b", "get_refund"),
    (r"\bcomplain", "complaint"),
)
_ORDER_ID = re.compile(r"\b\d{3,}\b")


class KeywordModel:
    def __init__(self, spec: BotSpec) -> None:
        self.manifest = Manifest(bot=spec.name, version="keywords-1", data_hash="0" * 16, base_model="keywords",
                                 labels=tuple(sorted(spec.intents)), created_at="2026-01-01T00:00:00Z")
        self.intents = sorted(spec.intents)
        self.calls: list[str] = []

    def _one(self, text: str) -> Understanding:
        self.calls.append(text)
        lowered = text.lower()
        entities = tuple(Entity("order_id", m.group(), m.start(), m.end()) for m in _ORDER_ID.finditer(text))
        for pattern, intent in KEYWORDS:
            if intent in self.intents and re.search(pattern, lowered):
                others = [IntentScore(i, 0.02) for i in self.intents if i != intent]
                return Understanding(intent, 0.93, (IntentScore(intent, 0.93), *others), entities)
        # Nothing matched: an uncertain guess, ranking in a fixed order, rejected as the served NLU's one
        # out-of-scope rule rejects it (bots/nlu/oos.py: intent nlu_fallback, the model's confidence and ranking kept).
        ranking = tuple(IntentScore(name, round(0.2 - 0.05 * i, 2)) for i, name in enumerate(
            ["track_order", "change_order", "greet", *[n for n in self.intents
                                                      if n not in ("track_order", "change_order", "greet")]]))
        ranking = tuple(s for s in ranking if s.name in self.intents)
        return Understanding(NOT_UNDERSTOOD, ranking[0].confidence, ranking, entities)

    def predict(self, texts: Sequence[str]) -> list[Understanding]:
        return [self._one(t) for t in texts]


def keyword_loader(artifact_dir: Path, spec: BotSpec, settings: Settings) -> KeywordModel:
    return KeywordModel(spec)


def copy_bot(tmp_path: Path, source: Path = DIALOGUE_BOT, *, extra_yaml: str = "",
             drop: Sequence[str] = ()) -> Path:
    """A copy of a bot folder with a (fake) artifact, bot.yml lines starting with ``drop`` removed
    and ``extra_yaml`` appended."""
    bot_dir = tmp_path / f"bot-{time.monotonic_ns()}"
    shutil.copytree(source, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models"))
    text = (bot_dir / "bot.yml").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not any(line.startswith(d) for d in drop)]
    (bot_dir / "bot.yml").write_text("\n".join(lines) + "\n" + extra_yaml, encoding="utf-8")
    artifact = bot_dir / "models" / "keywords-1"
    artifact.mkdir(parents=True)
    write_manifest(artifact, Manifest(bot="shop", version="keywords-1", data_hash="0" * 16, base_model="keywords",
                                      labels=(), created_at="2026-01-01T00:00:00Z"))
    return bot_dir


async def start_runtime(bot_dir: Path, db: Path, *, gap_wait_s: float = 2.0, state_cache: int = 1000) -> Runtime:
    settings = Settings(data_dir=db.parent, nlu_max_wait_ms=0.0, lease_ttl_s=10.0, state_cache=state_cache)
    store = SQLiteStore(db)
    await store.start()
    runtime = Runtime(settings, store, model_loader=keyword_loader, gap_wait_s=gap_wait_s)
    await runtime.load_bot(bot_dir)
    return runtime


def message(text: str, conversation: str = "c1", *, message_id: str | None = None, bot: str = "shop",
            payload: str | None = None, at: float | None = None) -> UserMessage:
    return UserMessage(ref=ConversationRef(bot=bot, channel="web", conversation_id=conversation),
                       message_id=message_id or f"m-{time.monotonic_ns()}", text=text, user_id="u1",
                       received_at=time.time() if at is None else at, payload=payload)


async def say(runtime: Runtime, text: str, conversation: str = "c1", **kwargs: object) -> list[str]:
    responses = await runtime.handle(message(text, conversation, **kwargs))  # type: ignore[arg-type]
    return [r.text for r in responses]
