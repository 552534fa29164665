"""A fixed intent model for dialogue tests on the Rasa fixture projects (no training): a lookup of the
project's own annotated NLU examples, with overrides, so that a test decides exactly what the NLU answers.
``project`` copies a fixture project with a fake artifact for it to be served from; ``lookup_runtime``
serves such a copy."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from bots.artifact import Manifest, write_manifest
from bots.botspec import BotSpec
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from bots.types import Entity, IntentScore, Understanding
from connectors.story_test import StoryTestResults, run_story_tests

RASA = Path(__file__).resolve().parents[1] / "data" / "rasa"
Overrides = Mapping[str, tuple[str, tuple[Entity, ...]]]


class LookupModel:
    """Each text's intent and entities as the bot's own annotated examples say, ``overrides`` first;
    an unknown text is the first intent with confidence 0.1."""

    def __init__(self, spec: BotSpec, overrides: Overrides) -> None:
        self.manifest = Manifest(bot=spec.name, version="lookup-1", data_hash="0" * 16, base_model="lookup",
                                 labels=tuple(sorted(spec.intents)), created_at="2026-01-01T00:00:00Z")
        self.known: dict[str, tuple[str, tuple[Entity, ...]]] = {
            x.text.lower(): (i.name, x.entities) for i in spec.intents.values() for x in i.examples}
        self.known.update({k.lower(): v for k, v in overrides.items()})
        self.labels = sorted(spec.intents)

    def _one(self, text: str) -> Understanding:
        found = self.known.get(text.strip().lower())
        if found is None:
            return Understanding(self.labels[0], 0.1, (IntentScore(self.labels[0], 0.1),))
        intent, entities = found
        return Understanding(intent, 0.95, (IntentScore(intent, 0.95),), entities)

    def predict(self, texts: Sequence[str]) -> list[Understanding]:
        return [self._one(t) for t in texts]


def project(tmp_path: Path, name: str, tests: str | None = None) -> Path:
    """A copy of a fixture project with a (fake) artifact; ``tests`` replaces its test stories."""
    bot_dir = tmp_path / name
    shutil.copytree(RASA / name, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models", "results"))
    artifact = bot_dir / "models" / "lookup-1"
    artifact.mkdir(parents=True)
    write_manifest(artifact, Manifest(bot=name, version="lookup-1", data_hash="0" * 16, base_model="lookup",
                                      labels=(), created_at="2026-01-01T00:00:00Z"))
    if tests is not None:
        shutil.rmtree(bot_dir / "tests", ignore_errors=True)
        (bot_dir / "tests").mkdir()
        (bot_dir / "tests" / "test_stories.yml").write_text(tests, encoding="utf-8")
    return bot_dir


@contextlib.asynccontextmanager
async def lookup_runtime(tmp_path: Path, name: str, overrides: Overrides | None = None) -> AsyncIterator[Runtime]:
    """A Runtime on a SQLite store serving a copy of the fixture project ``name``, understood by a
    ``LookupModel`` with ``overrides``."""
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, overrides or {})

    store = SQLiteStore(tmp_path / "store.db")
    await store.start()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0), store, model_loader=loader)
    try:
        await runtime.load_bot(project(tmp_path, name))
        yield runtime
    finally:
        await runtime.aclose()


async def lookup_story_tests(bot_dir: Path, overrides: Overrides | None = None, *,
                             replay: bool = False) -> StoryTestResults:
    """``switchboard test`` of ``bot_dir`` (a ``project`` copy) with the lookup model as its NLU."""
    def loader(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
        return LookupModel(spec, overrides or {})

    return await run_story_tests(bot_dir, settings=Settings(nlu_max_wait_ms=0.0), model_loader=loader, replay=replay)
