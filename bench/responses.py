"""Answer selection on held-out Bitext question→answer pairs: retrieval (and optionally generation).

    .venv/bin/python bench/responses.py [--max-test N] [--held-out 0.1] [--generator-seconds S]
                                        [--generator-test N] [--guard-test N] [--threads N] [--keep DIR]
                                        [--reuse DIR] [--compose-below 0.5,0.7,0.8] [--compose-runs 3]

Splits Bitext's 4.5k pairs per intent (seeded), trains a fast-mode NLU model and the answer index
on the training part with ``switchboard train`` (a temporary bot folder: intents with annotated
examples, ``answers.pairs`` = the training pairs), then serves the held-out questions:

* intent consistency: the NLU model classifies the chosen answer; it should be the question's intent;
* ROUGE-L against the reference answer (both with Bitext's {{Placeholders}} shown as their names);
* leaked values: answers showing an id/number (3+ digits in a row), e-mail or amount that is not in
  the question;
  compared with answering with the nearest training question's raw Bitext answer;
* the grounding guard: false rejections of retrieved answers and catch rates of broken copies;
* latency per answer (NLU + selection, batch 1);
* exact-search time over 10k and 100k random normalised vectors (the index scale limit);
* with --generator-seconds: a from-scratch generator trained for that long, served on
  --generator-test held-out questions (its own held-out gate decides whether it would be on).
* with --generator-base packaged-minilm (or a local causal LM folder) and --generator-seconds: that
  generator fine-tuned on the training pairs (training/generator.py ``train_generator``; the prompt's
  passages as the server builds them), with --generator-snapshots (seconds) also exported on the
  way: the learning curve. Each snapshot and the final model answer the first --generator-test
  held-out questions: ROUGE-L and right intent of the generated answers before the grounding guard
  and of what is served (the guard's fallback to retrieval), the guard's pass rate, foreign values,
  repeated 4-grams, ms per answer and per token; retrieval on the same questions beside them.

``--compose-below T1,T2,...`` measures ``answers.compose`` where it applies (held-out questions whose
nearest training question is less similar than T) against plain retrieval on the same questions:
how many are composed or fall back, ROUGE-L, intent consistency, values the asker did not give,
sentences kept and the selection latency (median of --compose-runs runs, with their range). Bitext
has no knowledge base, so the sources are the nearest answer templates. The generator is a STAND-IN
(no model, stated in the output): it writes the first sentence of sources 1 and 2, each cited, as an
extractive composer would; it measures what the compose path (prompt, guard, attribution, fallback)
does with such an answer, not the quality a trained generator would reach. ``--reuse DIR`` serves a
folder kept by ``--keep`` (same split and seed) instead of training again.

``--decode-speed`` measures decoding alone instead (nothing trained): the MiniLM→MiniLM
encoder-decoder warm-started from the packaged all-MiniLM-L6-v2 on both sides (BERT2BERT; its
cross-attention and LM-head transform are untrained, which changes no timing), exported with its
KV cache (training/export.py), decoded by the served code (bots/answers/decoding.py) on
``--threads`` ONNX Runtime threads for --decode-prompts prompts built like the served ones (the
question and three Bitext answers of its intent as passages), --decode-tokens tokens each, repeated
--decode-runs times: ms per generated token (p50, p95), time to the first token (encoder + first
step) and to 24 tokens (about a first sentence), for the fp32 decoder, its int8 twin (dynamic
int8 weights, with the share of greedy tokens that agree with fp32), and without the cache (the
same graph fed the whole sequence each step, as generators were served before).
``--decode-answer-vocabulary``: the same with the LM head over the tokens Bitext's answers use only
(training's ``answer_vocabulary``), served through its ``output_ids``.

Not part of the test run. Prints the load average: on a shared machine it says how far to trust
the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one thread per request, no BLAS pool
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from bots.answers.generation import Generated, OnnxGenerator  # noqa: E402
from bots.answers.retrieval import AnswerSelector  # noqa: E402
from bots.nlu.model import OnnxNLU  # noqa: E402
from training.answers import QAPair, _pair_from_row, bitext_placeholder_name  # noqa: E402
from training.answers_eval import evaluate_answers, evaluate_guard, reference_text, rouge_l  # noqa: E402
from training.cli import main as train_main  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_responses.csv"
_VALUE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|(?<![\w-])[A-Za-z#-]*\d{3,}[\w-]*|[$€£]\s?\d[\d,.]*")
_BITEXT = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


def _load(path: Path) -> list[tuple[QAPair, dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(_pair_from_row(r["instruction"].strip(), r["response"].strip(), r["intent"].strip(), r,
                                f"{path}:{i}"), r) for i, r in enumerate(csv.DictReader(f), start=2)]


def _split(rows: list[tuple[QAPair, dict[str, str]]], fraction: float,
           seed: int) -> tuple[list[tuple[QAPair, dict[str, str]]], list[tuple[QAPair, dict[str, str]]]]:
    rng = random.Random(seed)
    by_intent: dict[str, list[tuple[QAPair, dict[str, str]]]] = defaultdict(list)
    for row in rows:
        by_intent[row[0].intent].append(row)
    train, test = [], []
    for name in sorted(by_intent):
        group = by_intent[name]
        rng.shuffle(group)
        n = max(1, round(len(group) * fraction))
        test += group[:n]
        train += group[n:]
    asked = {p.question.lower() for p, _ in test}
    train = [r for r in train if r[0].question.lower() not in asked]  # no held-out question seen in training
    return train, test


def _annotated(pair: QAPair) -> str:
    text = pair.question.replace("[", "(").replace("]", ")")
    for e in sorted(pair.entities, key=lambda e: -e.start):
        text = text[:e.start] + f"[{text[e.start:e.end]}]({e.entity})" + text[e.end:]
    return text


def _write_bot(folder: Path, train: list[tuple[QAPair, dict[str, str]]], labels: list[str]) -> None:
    intents: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"examples": []})
    seen: set[str] = set()
    for pair, _ in train:
        if pair.question.lower() not in seen:
            seen.add(pair.question.lower())
            intents[pair.intent]["examples"].append(_annotated(pair))
    with (folder / "pairs.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(train[0][1].keys()))
        w.writeheader()
        w.writerows(r for _, r in train)
    spec = {"name": "bitext", "fallback_threshold": 0.3, "intents": dict(intents),
            "answers": {"default": "retrieval", "pairs": "pairs.csv",
                        "values": {bitext_placeholder_name(label): label for label in labels}}}
    (folder / "bot.yml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _leaks(answer: str, question: str) -> bool:
    """A value in the answer that the asker did not give ("#123456" and "$350." count as "123456", "350")."""
    return any(v.lstrip("#$€£ ").rstrip(".,") not in question for v in _VALUE.findall(answer))


def _exact_search_ms(rows: int, dim: int = 384, queries: int = 50) -> float:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((rows, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    qs = m[rng.integers(0, rows, queries)]
    started = time.perf_counter()
    for q in qs:
        sims = m @ q
        top = np.argpartition(-sims, 40)[:40]
        top[np.argsort(-sims[top])]
    return (time.perf_counter() - started) * 1000 / queries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--held-out", type=float, default=0.1)
    p.add_argument("--max-test", type=int, default=0, help="score at most N held-out pairs (0 = all)")
    p.add_argument("--guard-test", type=int, default=200)
    p.add_argument("--generator-seconds", type=float, default=0.0)
    p.add_argument("--generator-test", type=int, default=60)
    p.add_argument("--generator-base", default="", help="packaged-minilm or a local causal LM folder (fine-tune)")
    p.add_argument("--generator-snapshots", default="", help="comma-separated seconds: learning-curve snapshots")
    p.add_argument("--generator-lr", type=float, default=0.0, help="0: training/generator.py's default")
    p.add_argument("--generator-batch", type=int, default=16)
    p.add_argument("--generator-context", type=int, default=384, help="prompt tokens")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--no-repeat-ngram", type=int, default=3, help="decoding rule with --generator-base")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--keep", type=Path, help="keep the temporary bot and artifact here")
    p.add_argument("--reuse", type=Path, help="serve DIR/artifact (kept by --keep, same split) instead of training")
    p.add_argument("--compose-below", default="", help="comma-separated compose.below thresholds to measure")
    p.add_argument("--compose-runs", type=int, default=3, help="runs of the compose latency measurement")
    p.add_argument("--decode-speed", action="store_true", help="measure KV-cached decoding of the MiniLM generator")
    p.add_argument("--decode-prompts", type=int, default=20)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--decode-runs", type=int, default=3)
    p.add_argument("--decode-answer-vocabulary", action="store_true", help="LM head over the answers' tokens only")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}")
    rows = _load(args.data)
    if args.decode_speed:
        _decode_speed(rows, args)
        print(f"load average after: {os.getloadavg()}")
        return 0
    labels = sorted({m.group(1) for _, r in rows for m in _BITEXT.finditer(r["response"])})
    train, test = _split(rows, args.held_out, args.seed)
    if args.max_test:
        test = random.Random(args.seed).sample(test, min(args.max_test, len(test)))
    print(f"bitext: {len(rows)} pairs, {len(train)} train, {len(test)} held out")
    work = Path(tempfile.mkdtemp(prefix="bench-responses-"))
    try:
        bot = work / "bot"
        bot.mkdir()
        _write_bot(bot, train, labels)
        if args.generator_seconds and not args.generator_base:
            spec = yaml.safe_load((bot / "bot.yml").read_text(encoding="utf-8"))
            spec["answers"]["generation"] = {"train_seconds": args.generator_seconds, "train_steps": 100_000,
                                             "max_new_tokens": 120, "max_seconds": 5.0}
            (bot / "bot.yml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
        artifact = work / "artifact"
        started = time.perf_counter()
        if args.reuse:
            if not (args.reuse / "artifact" / "manifest.json").is_file():
                print(f"--reuse {args.reuse}: no artifact/manifest.json there (a folder kept by --keep)")
                return 2
            artifact = args.reuse / "artifact"
            print(f"serving {artifact} (kept by an earlier run with the same split: nothing trained)")
        else:
            code = train_main(["train", str(bot), "--fast", "--no-quantize", "--threads", str(args.threads),
                               "--out", str(artifact)])
            if code != 0:
                return code
            print(f"train (fast NLU + answer index{' + generator' if args.generator_seconds else ''}): "
                  f"{time.perf_counter() - started:.0f}s")
        nlu = OnnxNLU.load(artifact, threads=args.threads)
        selector = AnswerSelector.load(artifact, nlu)
        assert selector is not None
        pairs = [p for p, _ in test]
        if args.compose_below:
            for below in (float(x) for x in args.compose_below.split(",")):
                print(f"compose below {below:g}:", json.dumps(_compose(selector, nlu, pairs, below, args.compose_runs)))
            print(f"load average after: {os.getloadavg()}")
            return 0
        result = evaluate_answers(selector, nlu, pairs, mode="retrieval")
        print("retrieval:", json.dumps(result.to_dict()))
        answers = []
        for q in pairs:
            a = selector.answer(q.question, nlu.predict([q.question])[0], {}, mode="retrieval")
            answers.append(a.text if a else "")
        naive = _naive_answers(nlu, train, pairs)
        ours = sum(_leaks(a, q.question) for a, q in zip(answers, pairs, strict=True)) / len(pairs)
        raw = sum(_leaks(a, q.question) for a, q in zip(naive, pairs, strict=True)) / len(pairs)
        raw_rouge = np.mean([rouge_l(a, q.answer) for a, q in zip(naive, pairs, strict=True)])
        print(f"leaked values: retrieval {ours:.4f}, raw nearest-neighbour answer {raw:.4f} "
              f"(ROUGE-L of the raw answers {raw_rouge:.4f})")
        guard = evaluate_guard(selector, nlu, pairs[:args.guard_test])
        print("guard:", json.dumps(guard.to_dict()))
        for n in (10_000, 100_000):
            print(f"exact search over {n} vectors: {_exact_search_ms(n):.2f} ms/query")
        if args.generator_base:
            _learning_curve(selector, nlu, [p for p, _ in train], pairs, work, args)
        if args.generator_seconds and not args.generator_base and isinstance(selector.generator, OnnxGenerator):
            print("generator:", json.dumps({k: selector.generator.meta[k] for k in
                                            ("parameters", "steps", "train_seconds", "train_loss", "val_loss")}))
            print("generator gate:", json.dumps(selector.generator.gate))
            sub = pairs[:args.generator_test]
            gen = evaluate_answers(selector, nlu, sub, mode="generation")
            ret = evaluate_answers(selector, nlu, sub, mode="retrieval")
            print(f"on {len(sub)} held-out: generation(served, with fallback):", json.dumps(gen.to_dict()))
            print(f"on {len(sub)} held-out: retrieval:", json.dumps(ret.to_dict()))
        print(f"load average after: {os.getloadavg()}")
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _learning_curve(selector: AnswerSelector, nlu: OnnxNLU, train: list[QAPair], test: list[QAPair], work: Path,
                    args: argparse.Namespace) -> None:
    """Fine-tune ``--generator-base`` for --generator-seconds (snapshots on the way), serve each on the
    held-out questions and print the comparison with retrieval."""
    from bots.answers.generation import OnnxGenerator
    from training.answers_config import GenerationSettings
    from training.generator import examples_with_passages, train_generator

    sub, held = test[:args.generator_test], test[args.generator_test:args.generator_test + 16]
    selector.config["generation"] = {"passages": 3, "max_new_tokens": 120, "max_seconds": 60.0, "require_gate": False,
                                     "repetition_penalty": 1.2, "no_repeat_ngram": args.no_repeat_ngram}
    started = time.perf_counter()
    examples = examples_with_passages(selector, train, selector.values, training=True)
    held_out = examples_with_passages(selector, held, selector.values)  # keeps the best weights; not scored
    print(f"generator examples: {len(examples)} train, {len(held_out)} for its held-out loss "
          f"({time.perf_counter() - started:.0f}s to find their passages)")
    settings = GenerationSettings(base_model=args.generator_base, train_seconds=args.generator_seconds,
                                  train_steps=1_000_000, batch_size=args.generator_batch,
                                  context_tokens=args.generator_context, learning_rate=args.generator_lr,
                                  label_smoothing=args.label_smoothing, seed=args.seed)
    snapshots = [float(x) for x in args.generator_snapshots.split(",") if x.strip()]
    final = work / "generator"
    result = train_generator(examples, settings, final, held_out=held_out, snapshots=snapshots,
                             log=lambda line: print(line, flush=True))
    retrieval = evaluate_answers(selector, nlu, sub, mode="retrieval")
    print(f"on {len(sub)} held-out: retrieval: ROUGE-L {retrieval.rouge_l:.4f}, right intent "
          f"{retrieval.intent_consistency:.2%}, {retrieval.latency_ms_mean:.1f} ms per answer (p95 "
          f"{retrieval.latency_ms_p95:.1f})", flush=True)
    for folder in [*(final.with_name(f"{final.name}-{s:.0f}s") for s in snapshots), final]:
        if not (folder / "generator.json").is_file():
            print(f"{folder.name}: not written (training ended first)")
            continue
        selector.generator = OnnxGenerator.load(folder, threads=args.threads)
        print(json.dumps({"generator": folder.name, **_generated_scores(selector, nlu, sub)}), flush=True)
    print(f"generator trained {result.steps} steps in {result.seconds:.0f}s (held-out loss {result.val_loss})")


def _generated_scores(selector: AnswerSelector, nlu: OnnxNLU, pairs: list[QAPair]) -> dict[str, object]:
    """Generated answers (before the guard, placeholders filled) and served ones (after it) on ``pairs``."""
    from bots.answers.generation import OnnxGenerator
    from bots.botspec import fill_template
    from training.answers_eval import reference_text

    generator = selector.generator
    assert isinstance(generator, OnnxGenerator)
    generated: list[str] = []
    served: list[str] = []
    ms: list[float] = []
    per_token: list[float] = []
    leaks = repeats = passed = 0
    for q in pairs:
        understanding = nlu.predict([q.question])[0]
        answer = selector.answer(q.question, understanding, {}, mode="generation")
        assert answer is not None
        detail = answer.detail if answer.source == "generation" else answer.detail.get("generation_rejected", {})
        raw = str(detail.get("text", ""))
        known = {**selector.values, **{e.entity: e.value for e in understanding.entities}}
        text = fill_template([raw], known) or raw
        generated.append(text)
        served.append(answer.text)
        passed += answer.source == "generation"
        leaks += _leaks(text, q.question)
        words = text.lower().split()
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        repeats += len(grams) != len(set(grams))
        if "generation_seconds" in detail:  # tokens: the raw text encoded again (≈ the tokens written)
            ms.append(float(detail["generation_seconds"]) * 1000)
            per_token.append(ms[-1] / max(1, len(generator._tokenizer.encode(raw, add_special_tokens=False).ids)))
    refs = [reference_text(q, selector.values) for q in pairs]
    n = len(pairs)

    def rouge(texts: list[str]) -> float:
        return round(float(np.mean([rouge_l(t, r) for t, r in zip(texts, refs, strict=True)])), 4)

    def right(texts: list[str]) -> float:
        return round(sum(u.intent == q.intent for u, q in zip(nlu.predict(texts), pairs, strict=True)) / n, 4)

    meta = generator.meta
    return {**{k: meta.get(k) for k in ("steps", "epochs", "train_seconds", "train_loss", "decoder_file",
                                        "int8_agreement")},
            "generated_rouge_l": rouge(generated), "generated_right_intent": right(generated),
            "served_rouge_l": rouge(served), "served_right_intent": right(served), "guard_pass": round(passed / n, 4),
            "foreign_values": round(leaks / n, 4), "repeated_4gram": round(repeats / n, 4),
            "ms_per_answer_p50": round(float(np.median(ms)), 1) if ms else None,
            "ms_per_answer_p95": round(float(np.percentile(ms, 95)), 1) if ms else None,
            "ms_per_token_p50": round(float(np.median(per_token)), 2) if per_token else None,
            "first_generated": generated[:2]}


def _decode_speed(rows: list[tuple[QAPair, dict[str, str]]], args: argparse.Namespace) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer
    from transformers import EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    from bots.answers.decoding import DecodeSettings, KvModel, steps
    from bots.answers.generation import OnnxGenerator, prompt_ids
    from training.export import export_kv_generator
    from training.tokens import base_model_path

    hf_logging.set_verbosity_error()  # "newly initialised cross-attention weights": known, see above
    base = base_model_path("")
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.no_truncation()  # as OnnxGenerator.load: the prompt is fitted by prompt_ids
    tokenizer.no_padding()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(base), str(base), local_files_only=True)
    output_ids = None
    if args.decode_answer_vocabulary:  # as training/generator.py's answer_vocabulary
        from training.generator import reduce_head

        output_ids = sorted({t for pair, _ in rows for t in tokenizer.encode(pair.answer, add_special_tokens=False).ids}
                            | {sep_id})
        reduce_head(model, output_ids)
        print(f"LM head over the {len(output_ids)} tokens of Bitext's answers")
    decoder_params = sum(p.numel() for p in model.decoder.parameters())
    rng = random.Random(args.seed)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for pair, _ in rows:
        by_intent[pair.intent].append(pair.answer)
    chosen = rng.sample([pair for pair, _ in rows], args.decode_prompts)
    prompts = [[cls_id, *prompt_ids(tokenizer, rng.sample(by_intent[q.intent], 3), q.question, 510), sep_id]
               for q in chosen]
    lengths = sorted(len(x) for x in prompts)
    print(f"MiniLM→MiniLM: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
          f"({decoder_params / 1e6:.1f}M decoder, vocabulary {model.config.decoder.vocab_size}); prompts of "
          f"{lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), {args.decode_tokens} new "
          f"tokens each, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        spec, diff = export_kv_generator(model, folder, start_id=cls_id, output_ids=output_ids)
        quantize_dynamic(str(folder / "decoder.onnx"), str(folder / "decoder.int8.onnx"), weight_type=QuantType.QInt8)
        print(f"export + check + int8: {time.perf_counter() - started:.0f}s, largest logit difference to torch "
              f"{diff:.1e}; decoder.onnx {(folder / 'decoder.onnx').stat().st_size / 1e6:.0f} MB, int8 "
              f"{(folder / 'decoder.int8.onnx').stat().st_size / 1e6:.0f} MB")
        # No end token: every prompt decodes all its tokens. Greedy; no-repeat trigrams keep an untrained
        # model off one repeated token (the rule's own cost is part of the figure).
        settings = DecodeSettings(max_new_tokens=args.decode_tokens, max_seconds=600, repetition_penalty=1.2,
                                  no_repeat_ngram=3)
        fp32_tokens: list[list[int]] = []
        for name in ("decoder.onnx", "decoder.int8.onnx"):
            served = KvModel(folder, spec, threads=args.threads, decoder_file=name)
            per_run: list[tuple[float, float, float, float, float, float]] = []
            agree = total = 0
            for run in range(args.decode_runs):
                step_ms: list[float] = []
                first_ms: list[float] = []
                sentence_ms: list[float] = []
                answer_ms: list[float] = []
                step_cpu_ms: list[float] = []  # CPU time of the step: what the machine's other jobs do not inflate
                for i, prompt in enumerate(prompts):
                    started = time.perf_counter()
                    last = started
                    last_cpu = time.process_time()
                    tokens: list[int] = []
                    for token, _, why in steps(served.start(prompt), -1, settings):
                        now, now_cpu = time.perf_counter(), time.process_time()
                        if why:
                            break
                        (first_ms if not tokens else step_ms).append((now - last) * 1000)
                        if tokens:
                            step_cpu_ms.append((now_cpu - last_cpu) * 1000)
                        tokens.append(token)
                        if len(tokens) == 24:
                            sentence_ms.append((now - started) * 1000)
                        last, last_cpu = now, now_cpu
                    answer_ms.append((last - started) * 1000)
                    if run == 0 and name == "decoder.onnx":
                        fp32_tokens.append(tokens)
                    elif run == 0:
                        same = next((k for k, (a, b) in enumerate(zip(tokens, fp32_tokens[i], strict=True))
                                     if a != b), len(tokens))
                        agree, total = agree + same, total + len(tokens)
                per_run.append((float(np.percentile(step_ms, 50)), float(np.percentile(step_ms, 95)),
                                float(np.median(first_ms)), float(np.median(sentence_ms)), float(np.median(answer_ms)),
                                float(np.percentile(step_cpu_ms, 50))))
            p50s, p95s, firsts, sentences, answers, cpus = (sorted(x) for x in zip(*per_run, strict=True))
            print(f"{name} KV-cached: ms per generated token p50 {np.median(p50s):.2f} (runs {p50s[0]:.2f}-"
                  f"{p50s[-1]:.2f}), p95 {np.median(p95s):.2f}; CPU ms per token p50 {np.median(cpus):.2f} (runs "
                  f"{cpus[0]:.2f}-{cpus[-1]:.2f}); first token {np.median(firsts):.0f} ms; 24 tokens "
                  f"{np.median(sentences):.0f} ms; whole answer {np.median(answers):.0f} ms (medians of "
                  f"{args.decode_runs} runs over {len(prompts)} prompts)"
                  + (f"; greedy tokens identical to fp32 until the first difference: {agree}/{total}"
                     if total else ""))
        # As served: OnnxGenerator.stream_sentences (each step off the event loop, the text decoded and
        # cut into sentences as it grows), fp32.
        (folder / "generator.json").write_text(json.dumps({
            "decoder": spec.__dict__, "eos_id": -1, "bos_id": None, "max_positions": 512}), encoding="utf-8")
        tokenizer.save(str(folder / "tokenizer.json"))
        generator = OnnxGenerator.load(folder, threads=args.threads)
        limits = {"max_new_tokens": args.decode_tokens, "max_seconds": 600.0, "repetition_penalty": 1.2,
                  "no_repeat_ngram": 3}

        async def stream(q: QAPair, passages: list[str]) -> tuple[float, int]:
            started = time.perf_counter()
            async for _, _, done in generator.stream_sentences(passages, q.question, **limits):
                if done is not None:
                    return (time.perf_counter() - started) * 1000, done.tokens
            raise AssertionError("no result")

        streamed = [asyncio.run(stream(q, rng.sample(by_intent[q.intent], 3))) for q in chosen]
        totals = sorted(ms for ms, _ in streamed)
        print(f"served stream (OnnxGenerator.stream_sentences, fp32): whole answer of {args.decode_tokens} tokens "
              f"{np.median(totals):.0f} ms median over {len(streamed)} answers ({totals[0]:.0f}-{totals[-1]:.0f}; "
              f"tokens {sorted({n for _, n in streamed})}; prompt built and tokenised inside)")
        served = KvModel(folder, spec, threads=args.threads)
        uncached: list[float] = []
        for prompt in prompts[:5]:
            decoding = served.start(prompt)
            decoding.first()  # the encoder's cross keys/values and mask, as when cached
            fixed = {k: v for k, v in decoding.feeds.items() if k not in served.past}
            sequence = [cls_id]
            for _ in range(24):  # the whole decoder sequence every step, no past (length 0)
                feeds = {**fixed, **served.empty_past(1)}
                feeds["input_ids"] = np.array([sequence], dtype=np.int64)
                started = time.perf_counter()
                logits = served.decoder.run(None, feeds)[0]
                uncached.append((time.perf_counter() - started) * 1000)
                sequence.append(int(np.argmax(served.full_logits(logits)[0])))
        print(f"without the cache (whole sequence each step, 24 tokens, 5 prompts): ms per token p50 "
              f"{np.median(uncached):.2f}, at the 24th token {np.median(uncached[23::24]):.2f}")
        _decode_speed_gpt2(folder / "gpt2", args)


def _decode_speed_gpt2(folder: Path, args: argparse.Namespace) -> None:
    """The shape of the from-scratch generator measured above (4.28M GPT-2, context 384, 120 new
    tokens): a whole answer with the KV cache and without (the same graph fed the whole sequence)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from bots.answers.decoding import DecodeSettings, KvModel, steps
    from training.export import export_kv_generator

    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=4000, n_positions=384, n_embd=256, n_layer=4, n_head=4))
    spec, _ = export_kv_generator(model, folder)
    served = KvModel(folder, spec, threads=args.threads)
    rng = np.random.default_rng(args.seed)
    prompts = [rng.integers(0, 4000, 264).tolist() for _ in range(args.decode_prompts)]
    settings = DecodeSettings(max_new_tokens=120, max_seconds=600, repetition_penalty=1.2)
    cached = []
    for prompt in prompts:
        started = time.perf_counter()
        n = sum(1 for _, _, why in steps(served.start(prompt), -1, settings) if not why)
        cached.append((time.perf_counter() - started) * 1000)
        assert n == 120
    whole = []
    for prompt in prompts[:5]:
        sequence = list(prompt)
        started = time.perf_counter()
        for _ in range(120):
            feeds = {**served.empty_past(1), "input_ids": np.array([sequence], dtype=np.int64)}
            sequence.append(int(np.argmax(served.decoder.run(None, feeds)[0][0])))
        whole.append((time.perf_counter() - started) * 1000)
    print(f"GPT-2 4.28M shape (random weights), 264-token prompt, 120 new tokens: KV-cached {np.median(cached):.0f} "
          f"ms per answer (median of {len(cached)}, {min(cached):.0f}-{max(cached):.0f}); without the cache "
          f"{np.median(whole):.0f} ms (median of {len(whole)})")


class ExtractiveStandIn:
    """A stand-in generator (no model): the first sentence of sources 1 and 2 of the compose prompt,
    each cited as a model told to cite would. It stands where ``OnnxGenerator``/``EndpointGenerator`` do."""

    gate_passed = True

    def generate(self, passages: list[str], question: str, **limits: object) -> Generated:
        started = time.perf_counter()
        firsts = []
        for passage in passages[:2]:
            number, _, text = passage.partition("] ")
            first = re.split(r"(?<=[.!?])\s+", text.strip())[0].rstrip(".!?")
            firsts.append(f"{first} {number}].")
        text = " ".join(firsts)
        return Generated(text, 1.0, "eos", time.perf_counter() - started, len(text.split()))


def _compose(selector: AnswerSelector, nlu: OnnxNLU, pairs: list[QAPair], below: float, runs: int) -> dict[str, object]:
    """answers.compose at ``below`` against plain retrieval, on the held-out questions it applies to."""
    selector.config["compose"] = {"below": below, "passages": 3, "templates": 2}
    selector.config["generation"] = {**(selector.config.get("generation") or {}), "require_gate": False}
    selector.generator = ExtractiveStandIn()  # type: ignore[assignment]
    understood = [nlu.predict([q.question])[0] for q in pairs]
    plain = [selector.answer(q.question, u, {}, compose=False) for q, u in zip(pairs, understood, strict=True)]
    served = [selector.answer(q.question, u, {}) for q, u in zip(pairs, understood, strict=True)]
    applies = [i for i, a in enumerate(served) if a is not None and (
        "composed" in a.detail or (a.detail.get("generation_rejected") or {}).get("composed"))]
    composed = [i for i in applies if served[i] is not None and served[i].source == "generation"]  # type: ignore[union-attr]

    def text(a: object) -> str:
        return getattr(a, "text", "") or ""

    def scores(answers: list[object]) -> dict[str, float]:
        texts = [text(answers[i]) for i in applies]
        intents = [u.intent for u in nlu.predict(texts)] if texts else []
        return {"rouge_l": round(float(np.mean([rouge_l(t, reference_text(pairs[i], selector.values))
                                                 for t, i in zip(texts, applies, strict=True)])), 4) if texts else 0.0,
                "intent_consistency": round(float(np.mean([g == pairs[i].intent for g, i in zip(intents, applies,
                                                                                             strict=True)])), 4)
                if texts else 0.0,
                "values_not_given": sum(_leaks(t, pairs[i].question) for t, i in zip(texts, applies, strict=True))}

    def latency(compose: bool) -> list[float]:
        per_run = []
        for _ in range(runs):
            took = []
            for i in applies:
                started = time.perf_counter()
                selector.answer(pairs[i].question, understood[i], {}, compose=compose)
                took.append((time.perf_counter() - started) * 1000)
            per_run.append(float(np.median(took)) if took else 0.0)
        return per_run

    nearest = np.array([a.score for a in plain if a is not None and "nearest_question" in a.detail])
    kept = [len(served[i].detail["composed"]["sentences"]) for i in composed]  # type: ignore[union-attr]
    lat_plain, lat_composed = latency(False), latency(True)
    return {"generator": "extractive stand-in (no model): first sentence of sources 1 and 2, cited",
            "held_out": len(pairs), "nearest_below": int((nearest < below).sum()),
            "nearest_similarity_p1_p5_p10_p50": [round(float(x), 3) for x in np.quantile(nearest, [.01, .05, .1, .5])],
            "applies": len(applies), "composed": len(composed),
            "fell_back": len(applies) - len(composed),
            "sentences_kept_mean": round(float(np.mean(kept)), 2) if kept else 0.0,
            "retrieval": scores(plain), "served_with_compose": scores(served),  # type: ignore[arg-type]
            "selection_ms_median_retrieval": [round(x, 2) for x in lat_plain],
            "selection_ms_median_compose": [round(x, 2) for x in lat_composed]}


def _naive_answers(nlu: OnnxNLU, train: list[tuple[QAPair, dict[str, str]]], test: list[QAPair]) -> list[str]:
    """The nearest training question's raw Bitext answer (no normalisation): the leak baseline."""
    vectors = nlu.embed([p.question for p, _ in train])
    queries = nlu.embed([p.question for p in test])
    best = np.argmax(queries @ vectors.T, axis=1)
    return [_BITEXT.sub(lambda m: m.group(1), train[int(i)][0].answer) for i in best]


if __name__ == "__main__":
    sys.exit(main())
