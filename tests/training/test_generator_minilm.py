"""The MiniLM→MiniLM generator (``base_model: packaged-minilm``, BERT2BERT warm-started from the
packaged all-MiniLM-L6-v2): a reduced output vocabulary decodes token for token as torch does, the
answers' placeholders are whole tokens, and a short real fine-tune is exported and served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bots.answers.decoding import DecodeSettings, KvModel, steps
from bots.answers.generation import OnnxGenerator
from tests.training.test_generator_kv import NO_EOS, PROMPT, _encoder_decoder
from training.answers_config import PACKAGED_MINILM, GenerationSettings
from training.export import TorchDecoding, export_kv_generator
from training.generator import Example, reduce_head, train_generator


def test_a_reduced_output_vocabulary_decodes_as_torch_does(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = _encoder_decoder()
    kept = [2, 5, 9, 17, 33, 40, 61, 77, 90]
    columns = reduce_head(model, kept)
    assert columns[17] == 3 and columns[18] < 0
    spec, diff = export_kv_generator(model, tmp_path, start_id=1, output_ids=kept)
    assert diff < 1e-3 and spec.output_ids == tuple(kept) and spec.vocab_size == 96
    served = KvModel(tmp_path, spec)
    settings = DecodeSettings(max_new_tokens=12, max_seconds=60, repetition_penalty=1.3, no_repeat_ngram=2)
    got = [t for t, _, why in steps(served.start(PROMPT), NO_EOS, settings) if not why]
    want = [t for t, _, why in steps(TorchDecoding(model, spec, PROMPT), NO_EOS, settings) if not why]
    assert got == want and len(got) == 12
    assert set(got) <= set(kept)  # a token outside the head is never written
    logits = served.start(PROMPT).first()
    assert logits.shape == (1, 96) and np.argmax(logits[0]) in kept


EXAMPLES = [
    Example("where is my order?", "You can track order {order_number} on {website_url} under Orders.",
            ("Track an order on {website_url} under Orders.",)),
    Example("how do I cancel my order", "To cancel order {order_number}, open Orders and choose Cancel.",
            ("Orders can be cancelled until they ship.",)),
    Example("I want a refund", "Refunds go back to your card within 5 days.",
            ("Refunds go back to the card within 5 days.",)),
    Example("change my delivery address", "Open {website_url}, then Orders, then Change address.",
            ("The address can be changed before dispatch.",)),
]


def test_the_packaged_minilm_generator_is_fine_tuned_exported_and_served(tmp_path: Path) -> None:
    settings = GenerationSettings(base_model=PACKAGED_MINILM, train_steps=2, batch_size=2, context_tokens=64,
                                  label_smoothing=0.1, max_new_tokens=8)
    lines: list[str] = []
    result = train_generator(EXAMPLES, settings, tmp_path / "gen", held_out=EXAMPLES[:2], log=lines.append,
                             snapshots=[0.0])
    assert result.steps == 2 and result.parameters > 40e6
    # The learning curve's snapshot: the weights after the first step, a servable generator of its own.
    snapshot = json.loads((tmp_path / "gen-0s" / "generator.json").read_text(encoding="utf-8"))
    assert snapshot["snapshot"] is True and snapshot["steps"] == 1 and snapshot["export_max_diff"] < 1e-3
    assert OnnxGenerator.load(tmp_path / "gen-0s").generate(["Refunds go back to the card."], "refund?",
                                                            max_new_tokens=3).tokens <= 3
    meta = json.loads((tmp_path / "gen" / "generator.json").read_text(encoding="utf-8"))
    decoder = meta["decoder"]
    assert decoder["family"] == "encoder-decoder" and meta["export_max_diff"] < 1e-3
    assert meta["max_positions"] == 64 and meta["learning_rate"] == 1e-4
    generator = OnnxGenerator.load(tmp_path / "gen")
    tokenizer = generator._tokenizer
    # The placeholders are single tokens the head can write, and decode intact.
    ids = tokenizer.encode("track {order_number} on {website_url}", add_special_tokens=False).ids
    for name in ("{order_number}", "{website_url}"):
        token = tokenizer.token_to_id(name)
        assert token is not None and token >= 30522 and token in ids and token in decoder["output_ids"]
    assert "{order_number}" in tokenizer.decode(ids) and "{website_url}" in tokenizer.decode(ids)
    # The head covers the answers' tokens and end-of-answer only.
    assert decoder["vocab_size"] == tokenizer.get_vocab_size() and meta["eos_id"] in decoder["output_ids"]
    assert len(decoder["output_ids"]) < 80
    assert any("output vocabulary" in line for line in lines)
    answer = generator.generate(["Track an order on {website_url} under Orders."], "where is my order?",
                                max_new_tokens=8)
    assert answer.tokens <= 8 and answer.stopped in ("eos", "length")
    written = generator.prompt(["Track an order on {website_url}."], "where is my order?", 8)
    assert written[0] == tokenizer.token_to_id("[CLS]") and written[-1] == meta["eos_id"]


def test_switchboard_train_fits_the_minilm_generator_and_its_gate_keeps_a_losing_one_off(tmp_path: Path) -> None:
    """``base_model: packaged-minilm`` through ``switchboard train``: trained on the bot's pairs,
    compared with retrieval on its held-out ones; two steps cannot win, so generation stays off."""
    from bots.answers.retrieval import AnswerSelector
    from bots.nlu.model import OnnxNLU
    from tests.training.test_answers import train_answers_bot

    generation = ("  generation:\n    base_model: packaged-minilm\n    train_steps: 2\n    batch_size: 2\n"
                  "    context_tokens: 96\n    max_new_tokens: 8\n    gate_examples: 4\n")
    out = train_answers_bot(tmp_path, generation)
    folder = out / "responses" / "generator"
    meta = json.loads((folder / "generator.json").read_text(encoding="utf-8"))
    assert meta["decoder"]["family"] == "encoder-decoder" and meta["steps"] == 2
    gate = meta["gate"]
    assert gate["held_out"] >= 1 and gate["passed"] is False and "did not beat retrieval" in gate["reason"]
    assert "retrieval" in gate and "generation" in gate
    nlu = OnnxNLU.load(out)
    selector = AnswerSelector.load(out, nlu)
    assert selector is not None and isinstance(selector.generator, OnnxGenerator)
    assert not selector.generation_enabled  # require_gate (the default): off
