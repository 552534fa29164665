"""LoRA (peft) for a local causal LM: a tiny Llama built here and saved to tmp is fine-tuned with
adapters by ``switchboard train``, merged, exported and served by bots/answers/decoding.py token
for token as torch decodes the merged model; ``server_model`` writes the merged folder and the
adapter (base + adapter = merged). LoRA switches itself on above ``LORA_ABOVE`` parameters; its
settings are checked with ``bot.yml:LINE``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bots.answers.decoding import DecodeSettings, KvModel, KvSpec, steps
from bots.botspec import load_bot
from bots.errors import ConfigError
from tests.training.test_answers import TINY_GENERATION, _answers_bot, _bot_with, _local_causal_lm
from training import generator as generator_module
from training.answers_config import parse_answers_config
from training.cli import main
from training.export import TorchDecoding
from training.generator import Example, train_generator

LORA = "    lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}\n    learning_rate: 0.01\n"


def test_a_local_causal_lm_is_fine_tuned_with_lora_merged_exported_and_served(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = _local_causal_lm(tmp_path / "llama-base", "llama")
    generation = TINY_GENERATION.replace("  generation:\n", f"  generation:\n    base_model: {base}\n" + LORA)
    bot = _answers_bot(tmp_path, generation + "    server_model: true\n")
    out = bot / "models" / "v1"
    assert main(["train", str(bot), "--fast", "--no-quantize", "--seed", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LoRA r=4 alpha=8 on q_proj, v_proj" in printed and "with LoRA" in printed
    folder = out / "responses" / "generator"
    meta = json.loads((folder / "generator.json").read_text(encoding="utf-8"))
    assert meta["lora"] is True and meta["steps"] == 12 and meta["export_max_diff"] < 1e-3
    assert meta["settings"]["lora"] == {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0,
                                        "target_modules": ["q_proj", "v_proj"]}
    # The merged model, as a server loads it: plain weights (no adapter modules left), trained.
    merged = AutoModelForCausalLM.from_pretrained(str(folder / "server"), local_files_only=True).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    original = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True).eval()
    prompt = [5, 17, 33, 8, 61, 12, 40, 9, 77, 3, 120]
    with torch.no_grad():
        want = merged(input_ids=torch.tensor([prompt])).logits[0, -1]
        before = original(input_ids=torch.tensor([prompt])).logits[0, -1]
        assert float((want - before).abs().max()) > 1e-3  # the adapters learned something
        # The adapter folder: the base model plus it computes the merged model.
        adapted = PeftModel.from_pretrained(original, str(folder / "adapter")).eval()
        assert float((adapted(input_ids=torch.tensor([prompt])).logits[0, -1] - want).abs().max()) < 1e-4
    assert (folder / "adapter" / "adapter_config.json").is_file()
    # Served (ONNX Runtime with its KV cache, no torch) = torch decoding the merged model, token for token.
    spec = KvSpec.from_meta(meta["decoder"], folder)
    settings = DecodeSettings(max_new_tokens=16, max_seconds=60, repetition_penalty=1.3, no_repeat_ngram=3)
    served = [t for t, _, why in steps(KvModel(folder, spec).start(prompt), -1, settings) if not why]
    reference = [t for t, _, why in steps(TorchDecoding(merged, spec, prompt), -1, settings) if not why]
    assert served == reference and len(served) == 16


EXAMPLES = [Example("how long for returns?", "Returns are accepted within 30 days.", ("Returns: 30 days.",)),
            Example("do you ship abroad?", "We ship to 40 countries.", ("Shipping: 40 countries.",))]


def test_lora_switches_itself_on_above_the_size_and_off_when_told(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from training.answers_config import GenerationSettings, LoraSettings

    base = _local_causal_lm(tmp_path / "gpt2-base", "gpt2")
    monkeypatch.setattr(generator_module, "LORA_ABOVE", 1000)  # the tiny model counts as a big one
    lines: list[str] = []
    settings = GenerationSettings(base_model=str(base), train_steps=2, batch_size=2, context_tokens=64)
    train_generator(EXAMPLES, settings, tmp_path / "auto", log=lines.append)
    meta = json.loads((tmp_path / "auto" / "generator.json").read_text(encoding="utf-8"))
    assert meta["lora"] is True and any("LoRA r=16 alpha=32 on c_attn" in line for line in lines)
    assert meta["learning_rate"] == 1e-3
    lines.clear()
    off = GenerationSettings(base_model=str(base), train_steps=2, batch_size=2, context_tokens=64,
                             lora=LoraSettings(enabled=False))
    train_generator(EXAMPLES, off, tmp_path / "off", log=lines.append)
    meta = json.loads((tmp_path / "off" / "generator.json").read_text(encoding="utf-8"))
    assert meta["lora"] is False and not any("LoRA" in line for line in lines) and meta["learning_rate"] == 1e-4
    # A module name the model does not have is a configuration error naming the setting.
    wrong = GenerationSettings(base_model=str(base), train_steps=1, batch_size=2, context_tokens=64,
                               lora=LoraSettings(enabled=True, target_modules=("q_proj",)))
    with pytest.raises(ConfigError, match=r"answers\.generation\.lora: .*q_proj"):
        train_generator(EXAMPLES, wrong, tmp_path / "wrong", log=lines.append)


def test_lora_and_base_model_settings_are_checked_with_their_line(tmp_path: Path) -> None:
    bot = _bot_with(tmp_path, """answers:
  generation:
    base_model: packaged-minilm
    server_model: true
    lora: {r: 0, alpha: 8, colour: red, target_modules: q_proj}
""")
    with pytest.raises(ConfigError) as err:
        parse_answers_config(load_bot(bot))
    lines = (bot / "bot.yml").read_text(encoding="utf-8").splitlines()
    first = lines.index("answers:") + 1
    text = "\n".join(err.value.problems)
    f = bot / "bot.yml"
    assert f"{f}:{first + 2}: 'server_model' needs a local causal LM" in text
    assert f"{f}:{first + 2}: 'lora' is for a local causal LM base_model, not packaged-minilm" in text
    assert f"{f}:{first + 4}: 'r' must be a whole number between 1 and 4096" in text
    assert f"{f}:{first + 4}: unknown lora key 'colour'" in text
    assert f"{f}:{first + 4}: 'target_modules' must be a list of module names" in text
    for answers, words in [("  generation:\n    base_model: MiniLM\n", "did you mean 'packaged-minilm'?"),
                           ("  generation:\n    lora: true\n", "'lora' needs a local causal LM as base_model"),
                           ("  generation:\n    lora: 16\n", "'lora' must be true, false or a mapping"),
                           ("  generation:\n    label_smoothing: 0.95\n", "'label_smoothing' must be a number "
                                                                          "between 0 and 0.9")]:
        bot = _bot_with(tmp_path / str(abs(hash(words))), "answers:\n" + answers)
        with pytest.raises(ConfigError) as err:
            parse_answers_config(load_bot(bot))
        assert words in "\n".join(err.value.problems)
    ok = _bot_with(tmp_path / "ok", "answers:\n  generation:\n    base_model: packaged-minilm\n"
                                    "    label_smoothing: 0.1\n    answer_vocabulary: false\n")
    cfg = parse_answers_config(load_bot(ok)).generation
    assert cfg is not None and cfg.base_model == "packaged-minilm" and cfg.label_smoothing == 0.1
    assert not cfg.answer_vocabulary and cfg.lora.enabled is None
    assert np.isclose(cfg.learning_rate, 0.0)  # 0: chosen by model kind at training
