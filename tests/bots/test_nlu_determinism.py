"""A message scores the same whatever else is in its batch (issue 14, item 2).

The micro-batcher (bots/nlu/batcher.py) puts concurrent customers' messages into one model call,
and ``OnnxNLU`` sorts each call's texts by length into padded groups. Neither may change a
message's intent, confidence or entities: the tiny bot's fp32 and int8 files score a few hundred
texts alone and in shuffled batches of several sizes, and through the micro-batcher, and must
agree (intent and entities identical, confidences within 1e-4). An int8 file quantised the old
way (dynamic activation scales, per batch) is served one text per call, so it agrees too.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bots.artifact import latest_artifact
from bots.nlu.batcher import MicroBatcher
from bots.nlu.model import INT8_SCHEME_KEY, INT8_STATIC, OnnxNLU
from bots.nlu.multi import split
from bots.types import Understanding

TOLERANCE = 1e-4
BATCH_SIZES = (2, 3, 8, 13, 32, 57)


def _texts() -> list[str]:
    """Three hundred distinct customer messages of 1 to ~40 tokens, many with order numbers."""
    rng = random.Random(7)
    asks = ["cancel my order {n}", "where is order {n}", "track parcel {n} please", "I want to cancel {n}",
            "has order {n} shipped yet", "stop my order {n}, I don't want it", "status of {n}?",
            "can you tell me when my package {n} will arrive, I have been waiting for two weeks now"]
    plain = ["hello", "hi", "hey there", "good morning", "I want to talk to a human", "human please",
             "connect me with a real person right now because this is taking far too long",
             "what is the weather like", "thanks, bye", "ok", "refund", "I was charged twice and I am furious",
             "is my delivery on the way", "greetings from a very patient customer who has a question"]
    out: list[str] = []
    while len(out) < 300:
        if rng.random() < 0.6:
            text = rng.choice(asks).format(n=rng.randint(10, 99_999_999))
        else:
            text = rng.choice(plain)
            if rng.random() < 0.7:
                text += " " + " ".join(rng.choice(["and", "also", "my", "order", "today", "please", "now",
                                                   "?", "the", "parcel"]) for _ in range(rng.randint(1, 20)))
        if text not in out:
            out.append(text)
    return out


TEXTS = _texts()


@pytest.fixture(scope="module")
def artifact(tiny_bot_dir: Path) -> Path:
    found = latest_artifact(tiny_bot_dir / "models")
    assert (found / "model.int8.onnx").is_file(), "the tiny bot trains with its int8 twin"
    return found


def _same(alone: Understanding, batched: Understanding, where: str) -> None:
    assert batched.intent == alone.intent, where
    assert [s.name for s in batched.also] == [s.name for s in alone.also], where  # a second request (multi.py)
    assert batched.read_as == alone.read_as, where  # the spelling correction (bots/nlu/spelling.py)
    assert abs(batched.confidence - alone.confidence) <= TOLERANCE, where
    assert [s.name for s in batched.ranking] == [s.name for s in alone.ranking], where
    for a, b in zip(alone.ranking, batched.ranking, strict=True):
        assert abs(a.confidence - b.confidence) <= TOLERANCE, where
    spans = [(e.entity, e.value, e.start, e.end, e.role, e.group) for e in alone.entities]
    assert [(e.entity, e.value, e.start, e.end, e.role, e.group) for e in batched.entities] == spans, where
    for a_ent, b_ent in zip(alone.entities, batched.entities, strict=True):
        assert abs(a_ent.confidence - b_ent.confidence) <= TOLERANCE, where


def _compare_batches(nlu: OnnxNLU, texts: Sequence[str]) -> None:
    alone = [nlu.predict([t])[0] for t in texts]
    assert len({a.intent for a in alone}) >= 3 and any(a.entities for a in alone)  # the texts exercise the model
    rng = random.Random(11)
    for size in BATCH_SIZES:
        order = list(range(len(texts)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            for row, result in zip(rows, nlu.predict([texts[r] for r in rows]), strict=True):
                _same(alone[row], result, f"{texts[row]!r} in a batch of {len(rows)}")
    everything = nlu.predict(list(texts))  # one call: chunks of 32, sorted by length into padded groups
    for text, a, b in zip(texts, alone, everything, strict=True):
        _same(a, b, f"{text!r} in one call with all the others")


@pytest.mark.parametrize("onnx_file", ["model.int8.onnx", "model.onnx"])
def test_a_text_scores_the_same_alone_and_in_any_batch(artifact: Path, onnx_file: str) -> None:
    nlu = OnnxNLU.load(artifact, onnx_file=onnx_file)
    assert nlu.group > 1  # texts really share model calls
    _compare_batches(nlu, TEXTS)


def test_the_two_request_reading_is_the_same_alone_and_in_any_batch(artifact: Path) -> None:
    """With multi_intent (bot.yml bots) a message with a conjunction is read again as two parts, in a second model
    call with the other messages' parts: the parts, too, score the same whatever shares their call."""
    nlu = OnnxNLU.load(artifact, onnx_file="model.int8.onnx", multi_intent=True)
    rng = random.Random(5)
    texts = sorted({f"{rng.choice(TEXTS)}{rng.choice([' and also ', ' and ', '. Also, '])}{rng.choice(TEXTS)}"
                    for _ in range(150)})
    assert sum(split(t) is not None for t in texts) >= 100
    assert sum(bool(u.also) for u in nlu.predict(texts)) >= 5  # two requests are found (18 of 150 with the tiny bot)
    _compare_batches(nlu, texts)


def test_the_int8_twin_uses_static_activation_scales(artifact: Path) -> None:
    import onnx

    model = onnx.load(str(artifact / "model.int8.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert "DynamicQuantizeLinear" not in ops and "QuantizeLinear" in ops
    assert {p.key: p.value for p in model.metadata_props}[INT8_SCHEME_KEY] == INT8_STATIC


async def test_concurrent_customers_through_the_micro_batcher_get_what_they_get_alone(artifact: Path) -> None:
    nlu = OnnxNLU.load(artifact, onnx_file="model.int8.onnx")
    texts = TEXTS[:120]
    alone = [nlu.predict([t])[0] for t in texts]
    sizes: list[int] = []
    batcher: MicroBatcher[str, Understanding] = MicroBatcher(nlu.predict, max_batch=16, max_wait_ms=20.0,
                                                             on_batch=lambda n, _seconds: sizes.append(n))
    try:
        results = await asyncio.gather(*(batcher(t) for t in texts))
    finally:
        await batcher.aclose()
    assert max(sizes) > 1  # messages were batched together
    for text, a, b in zip(texts, alone, results, strict=True):
        _same(a, b, f"{text!r} through the micro-batcher")


@pytest.fixture(scope="module")
def dynamic_artifact(artifact: Path, module_tmp: Callable[[str], Path]) -> Path:
    """The tiny bot with its int8 twin quantised as training did before (dynamic activation scales)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = module_tmp("dynamic") / "artifact"
    shutil.copytree(artifact, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
    return folder


def test_an_old_dynamic_int8_model_runs_one_text_per_call_and_agrees(dynamic_artifact: Path) -> None:
    nlu = OnnxNLU.load(dynamic_artifact, onnx_file="model.int8.onnx")
    assert nlu.group == 1
    _compare_batches(nlu, TEXTS[:100])


def test_batched_dynamic_quantisation_is_what_the_check_catches(dynamic_artifact: Path) -> None:
    """The comparison above is not vacuous: run batched, the dynamic model's scores move with the batch."""
    nlu = OnnxNLU.load(dynamic_artifact, onnx_file="model.int8.onnx")
    nlu.group = 8  # what serving did before
    with pytest.raises(AssertionError):
        _compare_batches(nlu, TEXTS)
