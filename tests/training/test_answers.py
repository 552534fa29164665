"""Fitting answers: config validation, answer normalisation, knowledge-base chunking, the index,
the from-scratch generator (tiny) and its served artifact, and the evaluation."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from bots.answers.generation import Generated, OnnxGenerator
from bots.answers.generation import prompt_ids as serving_prompt_ids
from bots.answers.grounding import check_support
from bots.answers.retrieval import AnswerSelector, AnswerService
from bots.botspec import load_bot
from bots.errors import ConfigError
from bots.nlu.model import OnnxNLU
from bots.types import Entity
from training.answers import QAPair, chunk_documents, normalise_answer, read_pairs_csv
from training.answers_config import parse_answers_config
from training.answers_eval import evaluate_answers, evaluate_guard, perturb_negation, rouge_l
from training.cli import main
from training.generator import prompt_ids as training_prompt_ids

BOT = Path(__file__).resolve().parents[1] / "data" / "answers_bot"
TINY_GENERATION = """\
  generation:
    layers: 1
    width: 32
    heads: 2
    vocab_size: 300
    context_tokens: 128
    batch_size: 4
    train_steps: 12
    max_new_tokens: 24
    require_gate: false
"""


def _answers_bot(folder: Path, generation: str) -> Path:
    """A copy of the answers bot in ``folder`` with ``generation`` (YAML) in its answers section."""
    bot = folder / "answers_bot"
    shutil.copytree(BOT, bot)
    text = (bot / "bot.yml").read_text(encoding="utf-8")
    (bot / "bot.yml").write_text(text.replace("  kb_min_similarity: 0.3\n", "  kb_min_similarity: 0.3\n" + generation),
                                 encoding="utf-8")
    return bot


def _with_base_model(base: Path) -> str:
    return TINY_GENERATION.replace("  generation:\n", f"  generation:\n    base_model: {base}\n")


def train_answers_bot(folder: Path, generation: str) -> Path:
    """The answers bot with ``generation`` trained by ``switchboard train`` (fast): its artifact."""
    bot = _answers_bot(folder, generation)
    out = bot / "models" / "v1"
    assert main(["train", str(bot), "--fast", "--no-quantize", "--seed", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trained(module_tmp: Callable[[str], Path]) -> Path:
    """The answers bot with a tiny from-scratch generator, trained by ``switchboard train``."""
    return train_answers_bot(module_tmp("bot"), TINY_GENERATION)


# -- configuration -------------------------------------------------------------------------------
def _bot_with(tmp_path: Path, answers: str) -> Path:
    shutil.copytree(BOT, tmp_path / "bot")
    text = (tmp_path / "bot" / "bot.yml").read_text(encoding="utf-8")
    head = text[:text.index("answers:\n")]
    (tmp_path / "bot" / "bot.yml").write_text(head + answers, encoding="utf-8")
    return tmp_path / "bot"


def test_bad_answers_section_lists_every_problem_with_its_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bot = _bot_with(tmp_path, """answers:
  default: magic
  intents:
    greet: generation
    nope: retrieval
  pairs: missing.csv
  min_similarity: 1.5
  colour: blue
knowledge_base: no_such_folder
""")
    first = (bot / "bot.yml").read_text(encoding="utf-8").splitlines().index("answers:") + 1
    assert main(["train", str(bot), "--fast", "--no-quantize", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    f = bot / "bot.yml"
    for line, words in [(first + 1, "'default' must be one of"), (first + 4, "unknown intent 'nope'"),
                        (first + 5, "pairs file 'missing.csv' not found"), (first + 6, "'min_similarity' must be"),
                        (first + 7, "unknown answers key 'colour'"), (first + 8, "knowledge base folder")]:
        assert f"{f}:{line}: {words}" in err, (line, words, err)
    assert "generation' is not configured" in err
    assert not (tmp_path / "out").exists()  # nothing trained


def test_generation_keys_are_checked(tmp_path: Path) -> None:
    bot = _bot_with(tmp_path, "answers:\n  generation:\n    sampling: beam\n    layers: 0\n    lr: 1\n")
    with pytest.raises(ConfigError) as err:
        parse_answers_config(load_bot(bot))
    text = "\n".join(err.value.problems)
    assert "'sampling' must be greedy or sample" in text and "'layers' must be" in text
    assert "unknown generation key 'lr'" in text


def test_config_defaults_and_modes() -> None:
    cfg = parse_answers_config(load_bot(BOT))
    assert cfg.default == "retrieval" and cfg.mode_for("greet") == "template" and cfg.mode_for("newsletter") == \
        "retrieval"
    assert cfg.kb_folder == "kb" and cfg.pairs == ("pairs.csv",) and cfg.generation is None
    assert cfg.values["website_name"] == "shop.example.com"


# -- normalisation, pairs, chunks ------------------------------------------------------------------
def test_normalise_answer_removes_the_askers_values() -> None:
    q = "I want a refund of $50 for order ABC-12345, mail me at jo@example.com"
    answer = ("Refund of $50 for order ABC-12345 is on its way to jo@example.com. Visit {{Website Name}} "
              "or call us 24/7 within 30 days.")
    got = normalise_answer(q, [Entity("refund_amount", "$50", 19, 22)], answer)
    assert got == ("Refund of {refund_amount} for order {entity} is on its way to {entity}. Visit {website_name} "
                   "or call us 24/7 within 30 days.")


def test_literal_braces_cannot_become_placeholders() -> None:
    assert normalise_answer("hi", [], "Use the code {SPRING} at checkout") == "Use the code (SPRING) at checkout"


def test_pairs_csv_reads_bitext_columns_and_reports_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "bitext.csv"
    good.write_text("instruction,intent,entity_type,entity_value,response\n"
                    "cancel purchase 00123842 now,cancel_order,order_id,00123842,Purchase 00123842 is cancelled.\n",
                    encoding="utf-8")
    (pair,) = read_pairs_csv(good)
    assert pair.entities == (Entity("order_id", "00123842", 16, 24),) and pair.intent == "cancel_order"
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer,intent\nhello,hi,greet\nbye,,goodbye\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{bad}:3: empty"):
        read_pairs_csv(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("message,label\nhello,greet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{wrong}:1: .*missing question, answer"):
        read_pairs_csv(wrong)


def test_chunks_keep_sections_sentences_and_lines(tmp_path: Path) -> None:
    chunks = chunk_documents(BOT / "kb", chunk_words=20, overlap_sentences=1)
    refunds = [c for c in chunks if c.title == "Refunds"]
    assert refunds and refunds[0].document == "returns.md" and refunds[0].line == 6
    assert all(len(c.text.split(": ", 1)[1].split()) <= 20 or len(c.sentences) == 1 for c in chunks)
    assert {c.document for c in chunks} == {"returns.md", "shipping.md", "warranty.txt"}
    long_section = [c for c in chunks if c.title == "Returns and refunds"]
    assert len(long_section) >= 2 and long_section[0].sentences[-1] == long_section[1].sentences[0]  # overlap
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match=r"bad\.md: not UTF-8"):
        chunk_documents(tmp_path)


# -- the index and the generator --------------------------------------------------------------------
def test_train_writes_the_answer_index(trained: Path) -> None:
    folder = trained / "responses"
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    assert index["format"] == 1
    for name, key in (("questions.npy", "questions"), ("templates.npy", "templates"), ("chunks.npy", "chunks"),
                      ("sentences.npy", "sentences")):
        m = np.load(folder / name)
        assert m.shape[0] == len(index[key]) > 0
        assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-4)
    assert sum(1 for t in index["templates"] if t["from_bot"]) == 3  # greet, cancel_order, track_order


def test_prompts_are_built_the_same_in_training_and_serving(trained: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(trained / "responses" / "generator" / "tokenizer.json"))
    passages = ["Returns are accepted within 30 days.", "Refunds take 5 business days. " * 40]
    for budget in (16, 64, 400):
        a = training_prompt_ids(tok, passages, "how do returns work?", budget)
        assert a == serving_prompt_ids(tok, passages, "how do returns work?", budget)
        assert len(a) <= budget
    assert tok.decode(a).rstrip().endswith("Answer:")


def test_generator_trains_and_its_artifact_serves(trained: Path) -> None:
    folder = trained / "responses" / "generator"
    meta = json.loads((folder / "generator.json").read_text(encoding="utf-8"))
    assert meta["steps"] == 12 and meta["parameters"] < 200_000 and meta["export_max_diff"] < 1e-3
    assert meta["gate"]["held_out"] >= 1 and "retrieval" in meta["gate"] and "passed" in meta["gate"]
    generator = OnnxGenerator.load(folder)
    out = generator.generate(["Returns are accepted within 30 days."], "how long for returns?", max_new_tokens=10)
    assert 0 <= out.tokens <= 10 and out.stopped in ("eos", "length") and 0.0 <= out.confidence <= 1.0
    sampled = [generator.generate([], "hello", max_new_tokens=8, sample=True, temperature=1.5, seed=s).text
               for s in range(4)]
    assert len(set(sampled)) > 1  # sampling is random, greedy is not
    greedy = {generator.generate([], "hello", max_new_tokens=8).text for _ in range(2)}
    assert len(greedy) == 1


def test_generation_time_is_bounded(trained: Path) -> None:
    generator = OnnxGenerator.load(trained / "responses" / "generator")
    started = time.perf_counter()
    out = generator.generate(["x " * 50], "a question", max_new_tokens=10_000, max_seconds=0.05)
    elapsed = time.perf_counter() - started
    assert out.stopped in ("time", "eos", "length")
    assert elapsed < 0.05 + 0.5  # one step past the deadline at most, with a generous margin for a busy CPU
    assert out.tokens <= generator.max_positions // 2  # the length bound holds even for an absurd request


def test_generated_answers_are_shown_only_when_grounded(trained: Path) -> None:
    nlu = OnnxNLU.load(trained)
    selector = AnswerSelector.load(trained, nlu)
    assert selector is not None and selector.generation_enabled  # require_gate: false
    for question in ("please cancel my order 39393", "how fast are refunds?", "I'd like to erase my account"):
        answer = selector.answer(question, nlu.predict([question])[0], {}, mode="generation")
        assert answer is not None
        if answer.source == "generation":
            assert check_support(answer.text, answer.passages, question, values=selector.values).grounded
        else:  # rejected: the best template (or knowledge-base answer) instead, with the reason
            assert answer.detail["generation_rejected"]["reason"]
            assert "{" not in answer.text


async def test_streamed_answer_ends_with_the_final_answer(trained: Path) -> None:
    nlu = OnnxNLU.load(trained)
    selector = AnswerSelector.load(trained, nlu)
    assert selector is not None
    question = "how fast are refunds?"
    deltas = [d async for d in selector.stream(question, nlu.predict([question])[0], {}, mode="generation")]
    final = deltas[-1].final
    assert final is not None and all(d.final is None for d in deltas[:-1])
    assert "".join(d.text for d in deltas).strip() == final.text.strip()
    assert "{" not in final.text


class _EchoGenerator:
    """A generator that writes the first retrieved passage back, sentence by sentence (grounded by
    construction), then one sentence the passages do not support."""

    gate_passed = True

    def __init__(self, unsupported: str) -> None:
        self.unsupported = unsupported

    async def stream_sentences(self, passages: list[str], question: str,
                               **limits: object) -> AsyncIterator[tuple[str, float, Generated | None]]:
        sentences = [s.strip() + "." for s in passages[0].split(".") if s.strip()][:2]
        for sentence in [*sentences, self.unsupported]:
            await asyncio.sleep(0)
            yield sentence, 0.9, None
        text = " ".join([*sentences, self.unsupported])
        yield "", 0.9, Generated(text, 0.9, "eos", 0.01, 20)


async def test_the_service_shows_a_generated_answer_as_it_grows(trained: Path) -> None:
    """``partial`` sees the text so far, sentence by sentence, each checked against the passages:
    the unsupported last sentence is never shown, and the answer is what was shown. Without
    generation nothing is streamed."""
    nlu = OnnxNLU.load(trained)
    service = AnswerService.load(trained, nlu)
    assert service is not None
    service.selector.generator = _EchoGenerator("Refunds are paid in gold bars to the moon.")  # type: ignore[assignment]
    question = "how fast are refunds?"
    shown: list[str] = []

    async def partial(text: str) -> None:
        shown.append(text)

    response = await service.answer("generation", question, nlu.predict([question])[0], {}, partial=partial)
    assert response is not None and response.source == "generation", response
    assert len(shown) >= 1 and shown[-1] == response.text
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(shown))
    assert "gold" not in response.text and "gold" not in "".join(shown)
    shown.clear()
    retrieved = await service.answer("retrieval", question, nlu.predict([question])[0], {}, partial=partial)
    assert retrieved is not None and retrieved.source != "generation" and shown == []


# -- evaluation --------------------------------------------------------------------------------------
def test_rouge_l() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("dogs bark", "the cat sat") == 0.0
    assert rouge_l("", "anything") == 0.0
    # LCS("a b c d", "a c d e") = 3: precision 3/4, recall 3/4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    # LCS = 2 ("a", "b"): precision 2/2, recall 2/4 → F1 = 2/3
    assert rouge_l("A b!", "a x b y") == pytest.approx(2 / 3)


def test_negation_perturbation() -> None:
    assert perturb_negation("Refunds are issued in 5 days.") == "Refunds are not issued in 5 days."
    assert perturb_negation("Gift cards are not refundable.") == "Gift cards are refundable."


def test_evaluation_scores_retrieval_on_held_out_pairs(trained: Path) -> None:
    nlu = OnnxNLU.load(trained)
    selector = AnswerSelector.load(trained, nlu, load_generator=False)
    assert selector is not None
    pairs = [QAPair("could you erase my account", "To close your account, open Account settings on "
                    "shop.example.com and choose Delete account.", "delete_account"),
             QAPair("unsubscribe me from your newsletter please", "You can unsubscribe with the link at the bottom of "
                    "any newsletter.", "newsletter")]
    result = evaluate_answers(selector, nlu, pairs, mode="retrieval")
    assert result.examples == 2 and result.answered == 1.0 and result.sources == {"retrieval": 2}
    assert result.intent_consistency == 1.0
    assert 0.3 < result.rouge_l <= 1.0 and result.latency_ms_mean > 0
    guard = evaluate_guard(selector, nlu, pairs)
    assert guard.answers == 2 and guard.false_rejections == 0.0
    assert guard.caught["negation"] == 1.0 and guard.caught["other_intent"] == 1.0


def test_evaluate_prints_and_writes_the_answer_scores(trained: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "held_out.csv"
    data.write_text("text,intent,answer\n"
                    "could you erase my account,delete_account,To close your account open Account settings.\n"
                    "unsubscribe me from your newsletter please,newsletter,Use the unsubscribe link in a newsletter.\n"
                    "where is my parcel 4411,track_order,Order 4411 is on its way.\n", encoding="utf-8")
    assert main(["evaluate", str(trained), str(data), "--out", str(tmp_path / "reports")]) == 0
    out = capsys.readouterr().out
    assert "answers (configured): intent consistency" in out and "answers (generation)" in out
    assert "grounding guard: false rejections" in out
    report = json.loads((tmp_path / "reports" / "answers.json").read_text(encoding="utf-8"))
    assert report["configured"]["examples"] == 3 and "passed" in report["generation_gate"]
    assert 0.0 <= report["retrieval"]["rouge_l"] <= 1.0


# -- fine-tuning a local Hugging Face causal LM ------------------------------------------------------
def _local_causal_lm(folder: Path, family: str) -> Path:
    """A small randomly initialised causal LM saved the way Hugging Face models are shipped
    (config.json, weights, tokenizer.json): what a user's local GPT-2 / SmolLM (Llama) / Qwen2 folder
    looks like, without downloading one."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    corpus = [line for line in (BOT / "pairs.csv").read_text(encoding="utf-8").splitlines() if line.strip()]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 3, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    eos = bpe.token_to_id("<|endoftext|>")
    size = {"vocab_size": bpe.get_vocab_size(), "bos_token_id": eos, "eos_token_id": eos}
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=256, n_embd=32, n_layer=1, n_head=2, **size))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=256, **size))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=256, **size))
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    bpe.save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_a_local_hugging_face_causal_lm_is_fine_tuned_exported_and_served(
        family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _local_causal_lm(tmp_path / f"{family}-base", family)
    bot = _answers_bot(tmp_path, _with_base_model(base) + "    server_model: true\n")
    out = bot / "models" / "v1"
    assert main(["train", str(bot), "--fast", "--no-quantize", "--seed", "0", "--out", str(out)]) == 0
    assert f"fine-tuning {base}" in capsys.readouterr().out
    folder = out / "responses" / "generator"
    meta = json.loads((folder / "generator.json").read_text(encoding="utf-8"))
    assert meta["settings"]["base_model"] == str(base) and meta["steps"] == 12
    assert meta["export_max_diff"] < 1e-3  # the served ONNX model computes what torch computed
    assert (folder / meta["decoder_file"]).is_file() and meta["int8_prompts"] >= 1  # int8 judged, served if it held
    generator = OnnxGenerator.load(folder)
    out_text = generator.generate(["Returns are accepted within 30 days."], "how long for returns?", max_new_tokens=6)
    assert out_text.tokens <= 6 and out_text.stopped in ("eos", "length")
    # server_model: the fine-tuned weights as a Hugging Face folder an OpenAI-compatible server loads;
    # transformers reads it back and computes what the served ONNX model computes (not the base model).
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bots.answers.decoding import KvModel

    server = folder / "server"
    loaded = AutoModelForCausalLM.from_pretrained(str(server), local_files_only=True).eval()
    prompt = generator.prompt(["Returns are accepted within 30 days."], "how long for returns?", 6)
    assert AutoTokenizer.from_pretrained(str(server)).encode(
        "Returns are accepted", add_special_tokens=False) == generator._tokenizer.encode(
        "Returns are accepted", add_special_tokens=False).ids
    with torch.no_grad():
        want = loaded(input_ids=torch.tensor([prompt])).logits[0, -1].numpy()
    fp32 = KvModel(folder, generator.model.spec)  # (the generator may serve its int8 twin)
    assert np.abs(fp32.start(prompt).first()[0] - want).max() < 1e-3
    base_model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True).eval()
    with torch.no_grad():
        assert np.abs(base_model(input_ids=torch.tensor([prompt])).logits[0, -1].numpy() - want).max() > 1e-3


def test_a_base_model_folder_without_a_tokenizer_is_refused_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _local_causal_lm(tmp_path / "base", "gpt2")
    (base / "tokenizer.json").unlink()
    bot = _answers_bot(tmp_path, _with_base_model(base))
    assert main(["train", str(bot), "--fast", "--no-quantize", "--out", str(bot / "models" / "v1")]) != 0
    err = capsys.readouterr().err
    assert "must be a local Hugging Face causal LM folder with config.json and tokenizer.json" in err
