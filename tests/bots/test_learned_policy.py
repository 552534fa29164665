"""The runtime serves the artifact's learned next-action model (policy.onnx, written by `switchboard
train`): the bot's policy ensemble is built once per loaded artifact and used by every turn, with
onnxruntime only (the serving process never imports torch); an artifact without one serves with rules
and memoisation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bots.artifact import Manifest, write_manifest
from bots.dialogue.policies import POLICY_FILE, POLICY_META
from bots.events import ACTION
from bots.loader import load_bot_folder
from bots.runtime import Runtime
from tests.bots.keyword_model import message, start_runtime
from tests.conftest import ROOT

DIGRESSIONS = ROOT / "tests" / "data" / "rasa" / "digressions"
DIGRESSION = [("hi", "/greet"), ("how much is it", "/ask_price"), ("are you a bot", "/bot_challenge"),
              ("yes", "/affirm")]


def _bot_folder(root: Path, *, learned: bool) -> Path:
    """The digressions Rasa project with an artifact: a fixed intent model's manifest, and (``learned``)
    the policy model trained from its stories."""
    bot_dir = root / "digressions"
    shutil.copytree(DIGRESSIONS, bot_dir)
    artifact = bot_dir / "models" / "keywords-1"
    artifact.mkdir(parents=True)
    if learned:
        from training.policy import PolicyTrainConfig, export_policy, train_policy

        _, dialogue = load_bot_folder(bot_dir)
        export_policy(train_policy(dialogue.domain, dialogue.stories, PolicyTrainConfig.of(dialogue.policy),
                                   progress=False), artifact)
    write_manifest(artifact, Manifest(bot="digressions", version="keywords-1", data_hash="0" * 16,
                                      base_model="keywords", labels=(), created_at="2026-01-01T00:00:00Z"))
    return bot_dir


@pytest.fixture(scope="module")
def learned_bot(module_tmp: Callable[[str], Path]) -> Path:
    return _bot_folder(module_tmp("learned"), learned=True)


@pytest.fixture
async def runtime(learned_bot: Path, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await start_runtime(learned_bot, tmp_path / "store.db")
    yield rt
    await rt.aclose()


async def _talk(runtime: Runtime, turns: list[tuple[str, str]], conversation: str = "c1") -> list[list[str]]:
    out = []
    for text, payload in turns:
        responses = await runtime.handle(message(text, conversation, bot="digressions", payload=payload))
        out.append([r.text or "" for r in responses])
    return out


async def _policies(runtime: Runtime, conversation: str = "c1") -> list[tuple[str, str]]:
    loaded = await runtime.store.load("digressions", conversation)
    assert loaded is not None
    return [(e.data["name"], e.data.get("policy", "")) for e in loaded.events if e.kind == ACTION]


async def test_a_digression_is_answered_by_the_learned_model(runtime: Runtime) -> None:
    bot = runtime.bot("digressions")
    assert bot.policies is not None and bot.policies.learned is not None
    assert bot.services().policies is bot.policies  # built once per loaded artifact, handed to every turn
    said = await _talk(runtime, DIGRESSION)
    assert said == [["Hi! Ask me about prices or opening hours."], ["It is 10 euros. Shall I order it?"],
                    ["I am a bot."], ["Ordered."]]
    assert ("utter_ordered", "LearnedPolicy") in await _policies(runtime)
    # The stories themselves are still answered by memoisation (no ONNX call needed there).
    said = await _talk(runtime, [("hi", "/greet"), ("when do you open", "/ask_hours"), ("yes", "/affirm")], "c2")
    assert said[-1] == ["Visit booked."]
    assert {p for _, p in await _policies(runtime, "c2")} <= {"MemoizationPolicy", ""}


async def test_without_a_learned_model_the_bot_serves_with_rules_and_memoisation(tmp_path: Path) -> None:
    rt = await start_runtime(_bot_folder(tmp_path, learned=False), tmp_path / "store.db")
    try:
        bot = rt.bot("digressions")
        assert bot.policies is not None and bot.policies.learned is None
        said = await _talk(rt, DIGRESSION)
        assert said[:3] == [["Hi! Ask me about prices or opening hours."], ["It is 10 euros. Shall I order it?"],
                            ["I am a bot."]]
        assert "Ordered." not in said[3]  # nothing predicts the digression's answer: the core fallback
        assert ("action_default_fallback", "fallback") in await _policies(rt)
        assert await _talk(rt, [("are you a bot", "/bot_challenge")], "c2") == [["I am a bot."]]
    finally:
        await rt.aclose()


def test_serving_the_learned_model_never_imports_torch(learned_bot: Path, tmp_path: Path) -> None:
    code = f"""
import asyncio, sys
from pathlib import Path
from tests.bots.keyword_model import message, start_runtime

async def main():
    rt = await start_runtime(Path({str(learned_bot)!r}), Path({str(tmp_path / 'store.db')!r}))
    said = []
    for text, payload in {DIGRESSION!r}:
        said.append([r.text for r in await rt.handle(message(text, bot="digressions", payload=payload))])
    assert rt.bot("digressions").policies.learned is not None
    await rt.aclose()
    return said

said = asyncio.run(main())
assert said[-1] == ["Ordered."], said
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))
print(heavy)
sys.exit(1 if heavy else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (learned_bot / "models" / "keywords-1" / POLICY_FILE).is_file()
    assert (learned_bot / "models" / "keywords-1" / POLICY_META).is_file()
