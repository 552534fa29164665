"""KV-cached ONNX decoding (bots/answers/decoding.py) equals torch decoding token for token, for a
tiny randomly initialised model of each generator family, built from a transformers config here
(nothing downloaded): GPT-2, Llama and Qwen2 causal LMs and a BERT→BERT encoder-decoder (the
shape of the MiniLM generator). Greedy, with the repetition penalty and the no-repeat n-gram rule,
and beam search (whose cache rows are reordered each step); and greedy also equals transformers'
own ``generate``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bots.answers.decoding import DecodeSettings, KvModel, beam_search, steps
from training.export import TorchDecoding, export_kv_generator

VOCAB = 96
NO_EOS = VOCAB + 7  # never produced: every decode runs to max_new_tokens


def _causal(family: str) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                          initializer_range=0.4))
    common = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
              "initializer_range": 0.4}
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return Qwen2ForCausalLM(Qwen2Config(**common))


def _encoder_decoder() -> Any:
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    common = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 128, "initializer_range": 0.4}
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**common), BertConfig(**common, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    return EncoderDecoderModel(config=config)


FAMILIES = ("gpt2", "llama", "qwen2", "bert2bert")


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request: pytest.FixtureRequest,
             module_tmp: Callable[[str], Path]) -> tuple[Any, KvModel, str, Path]:
    torch.manual_seed(FAMILIES.index(request.param))
    model = _encoder_decoder() if request.param == "bert2bert" else _causal(request.param)
    folder = module_tmp(request.param)
    spec, diff = export_kv_generator(model, folder, start_id=1 if request.param == "bert2bert" else None)
    assert diff < 1e-3
    assert spec.family == ("encoder-decoder" if request.param == "bert2bert" else "causal")
    assert sorted(p.name for p in folder.iterdir()) == (["decoder.onnx", "encoder.onnx"]
                                                        if spec.family == "encoder-decoder" else ["decoder.onnx"])
    return model, KvModel(folder, spec), request.param, folder


PROMPT = [5, 17, 33, 8, 61, 12, 40, 9, 77]


def _tokens(decoding: Any, settings: DecodeSettings) -> list[int]:
    return [t for t, _, why in steps(decoding, NO_EOS, settings) if not why]


@pytest.mark.parametrize("settings", [
    DecodeSettings(max_new_tokens=16, max_seconds=60, repetition_penalty=1.0),
    DecodeSettings(max_new_tokens=16, max_seconds=60, repetition_penalty=1.5, no_repeat_ngram=2),
], ids=["greedy", "penalties"])
def test_kv_cached_greedy_equals_torch_token_for_token(exported: tuple[Any, KvModel, str, Path],
                                                      settings: DecodeSettings) -> None:
    model, served, _, _ = exported
    got = _tokens(served.start(PROMPT), settings)
    want = _tokens(TorchDecoding(model, served.spec, PROMPT), settings)
    assert got == want and len(got) == 16
    if settings.no_repeat_ngram == 2:  # (a random BERT decoder repeats one token under plain greedy)
        pairs = list(itertools.pairwise(got))
        assert len(pairs) == len(set(pairs)) and len(set(got)) > 4, got  # no bigram twice


def test_greedy_equals_transformers_generate(exported: tuple[Any, KvModel, str, Path]) -> None:
    model, served, family, _ = exported
    with torch.no_grad():
        if family == "bert2bert":
            source = torch.tensor([PROMPT])
            out = model.generate(input_ids=source, attention_mask=torch.ones_like(source), max_new_tokens=12,
                                 do_sample=False, num_beams=1, decoder_start_token_id=1, eos_token_id=None,
                                 pad_token_id=0)[0, 1:]
        else:
            ids = torch.tensor([PROMPT])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                 num_beams=1, eos_token_id=None, pad_token_id=0)[0, len(PROMPT):]
    settings = DecodeSettings(max_new_tokens=12, max_seconds=60, repetition_penalty=1.0)
    assert _tokens(served.start(PROMPT), settings) == out.tolist()


def test_kv_cached_beam_search_equals_torch(exported: tuple[Any, KvModel, str, Path]) -> None:
    model, served, _, _ = exported
    settings = DecodeSettings(max_new_tokens=10, max_seconds=60, repetition_penalty=1.2, beams=3)
    eos = int(np.argsort(TorchDecoding(model, served.spec, PROMPT).first()[0])[-4])  # reachable, not the top token
    got = beam_search(served.start(PROMPT), eos, settings)
    want = beam_search(TorchDecoding(model, served.spec, PROMPT), eos, settings)
    assert got[0] == want[0] and got[2] == want[2]
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    greedy = beam_search(served.start(PROMPT), eos, DecodeSettings(max_new_tokens=10, max_seconds=60,
                                                                   repetition_penalty=1.2, beams=1))
    assert greedy[0] == [t for t, _, why in steps(served.start(PROMPT), eos, DecodeSettings(
        max_new_tokens=10, max_seconds=60, repetition_penalty=1.2)) if not why]


def test_sampling_is_seeded_and_bounded(exported: tuple[Any, KvModel, str, Path]) -> None:
    _, served, _, _ = exported
    settings = DecodeSettings(max_new_tokens=12, max_seconds=60, sample=True, temperature=1.5, top_k=20)
    runs = [_tokens(served.start(PROMPT), DecodeSettings(**{**settings.__dict__, "seed": s})) for s in range(4)]
    assert len({tuple(r) for r in runs}) > 1
    again = _tokens(served.start(PROMPT), DecodeSettings(**{**settings.__dict__, "seed": 2}))
    assert again == runs[2]
    assert list(steps(served.start(PROMPT), NO_EOS, DecodeSettings(max_new_tokens=50, max_seconds=0.0))) == [
        (-1, 0.0, "time")]
    assert beam_search(served.start(PROMPT), NO_EOS, DecodeSettings(max_new_tokens=50, max_seconds=0.0, beams=2)) == (
        [], [], "time")


def test_a_missing_graph_is_an_artifact_error(tmp_path: Path, exported: tuple[Any, KvModel, str, Path]) -> None:
    from bots.errors import ArtifactError

    _, served, _, _ = exported
    with pytest.raises(ArtifactError, match=r"missing decoder\.onnx; retrain"):
        KvModel(tmp_path, served.spec)


def _word_tokenizer(folder: Path) -> None:
    """A word-level tokenizer of the tiny models' size (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "Context", ":", "|", "Question", "Answer", "?", ".", "\n",
             "returns", "are", "accepted", "within", "30", "days", "how", "long", "for"]
    vocab = {w: i for i, w in enumerate(words)} | {f"w{i}": i for i in range(len(words), VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))


@pytest.mark.parametrize("beams", [1, 3])
def test_the_served_generator_decodes_each_family(exported: tuple[Any, KvModel, str, Path], tmp_path: Path,
                                                  beams: int) -> None:
    """``OnnxGenerator`` (what bots serve) over the exported graphs: the prompt as the family reads
    it, greedy and beam search, the answer's token count and stop reason."""
    import json
    import shutil

    from bots.answers.generation import OnnxGenerator

    model, served, family, source = exported
    folder = tmp_path / "generator"
    shutil.copytree(source, folder)
    _word_tokenizer(folder)
    eos = 2 if family == "bert2bert" else NO_EOS  # an encoder reads its end token: one of the vocabulary
    meta = {"decoder": served.spec.__dict__, "eos_id": eos, "bos_id": None, "max_positions": 64,
            "gate": {"passed": True}}
    (folder / "generator.json").write_text(json.dumps(meta), encoding="utf-8")
    generator = OnnxGenerator.load(folder)
    prompt = generator.prompt(["returns are accepted within 30 days ."], "how long for returns ?", 8)
    if family == "bert2bert":
        assert prompt[0] == 1 and prompt[-1] == eos  # the encoder's input between start and end tokens
    out = generator.generate(["returns are accepted within 30 days ."], "how long for returns ?", max_new_tokens=8,
                             beams=beams, repetition_penalty=1.3, no_repeat_ngram=2)
    assert out.tokens <= 8 and out.stopped in ("eos", "length") and 0 < out.confidence <= 1
    settings = DecodeSettings(max_new_tokens=8, max_seconds=60, repetition_penalty=1.3, no_repeat_ngram=2,
                              beams=beams)
    reference = TorchDecoding(model, served.spec, prompt)
    want = beam_search(reference, eos, settings)[0] if beams > 1 else \
        [t for t, _, why in steps(reference, eos, settings) if not why]
    assert out.text == generator._decode(want)


def test_a_generator_without_kv_cache_is_outdated(tmp_path: Path) -> None:
    import json

    from bots.answers.generation import OnnxGenerator, OutdatedGenerator

    (tmp_path / "generator.json").write_text(json.dumps({"eos_id": 0, "max_positions": 64}), encoding="utf-8")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(OutdatedGenerator, match="without a KV cache"):
        OnnxGenerator.load(tmp_path)


def test_int8_is_served_only_where_it_writes_the_same_answers(exported: tuple[Any, KvModel, str, Path],
                                                              tmp_path: Path) -> None:
    import shutil

    from training.export import INT8_AGREEMENT, quantize_generator_int8

    _, served, _, source = exported
    folder = tmp_path / "g"
    shutil.copytree(source, folder)
    prompts = [PROMPT, PROMPT[::-1], [7, 7, 30, 2, 55], [11, 60, 4]]
    decided = quantize_generator_int8(folder, served.spec, prompts, NO_EOS, max_new_tokens=10)
    int8 = folder / "decoder.int8.onnx"
    agreement = decided["int8_agreement"]
    assert decided["int8_prompts"] == 4 and 0.0 <= agreement <= 1.0
    assert (decided["decoder_file"] == "decoder.int8.onnx") == (agreement >= INT8_AGREEMENT) == int8.is_file()
    if int8.is_file():  # what would be served decodes
        quantized = KvModel(folder, served.spec, decoder_file=int8.name)
        assert len(_tokens(quantized.start(PROMPT), DecodeSettings(max_new_tokens=5, max_seconds=60))) == 5
        assert int8.stat().st_size < (folder / "decoder.onnx").stat().st_size
    assert quantize_generator_int8(folder, served.spec, [], NO_EOS)["decoder_file"] == "decoder.onnx"
    assert not int8.is_file()  # nothing to judge it on: not served


def test_decoding_a_generator_never_imports_torch(exported: tuple[Any, KvModel, str, Path], tmp_path: Path) -> None:
    """The served path (OnnxGenerator over decoding.py) in a fresh process: no torch, transformers or training."""
    import json
    import shutil
    import subprocess
    import sys

    _, served, _, source = exported
    folder = tmp_path / "g"
    shutil.copytree(source, folder)
    _word_tokenizer(folder)
    meta = {"decoder": served.spec.__dict__, "eos_id": 2, "bos_id": None, "max_positions": 64}
    (folder / "generator.json").write_text(json.dumps(meta), encoding="utf-8")
    code = f"""
import sys
from pathlib import Path
from bots.answers.generation import OnnxGenerator
g = OnnxGenerator.load(Path({str(folder)!r}))
out = g.generate(["returns are accepted within 30 days ."], "how long ?", max_new_tokens=5, beams=2)
assert out.tokens <= 5, out
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'training'))
print("HEAVY", heavy)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
