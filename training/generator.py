"""The answer generation model: warm-start an encoder-decoder from the packaged MiniLM, fine-tune a
local causal LM (LoRA through peft above ~100M parameters), or train a small GPT-2 from scratch.

Each training example is the prompt the server will build (bots/answers/generation.py), then the
normalised answer template, then end-of-text; the loss is on the answer only::

    Context: <passage> | <passage>\\nQuestion: <question>\\nAnswer: <answer><eos>

``base_model: packaged-minilm`` (BERT2BERT, Rothe et al. 2020): the packaged all-MiniLM-L6-v2 on
both sides; the encoder reads ``[CLS] prompt [SEP]``, the decoder writes ``[CLS] answer`` →
``answer [SEP]``. Its cross-attention and LM-head transform start untrained. The answers'
``{placeholders}`` become whole tokens of both embeddings (started at the mean of their words'),
so the model writes them intact, and with ``answer_vocabulary`` the LM head predicts only the
tokens the training answers use (exported as such: ``output_ids`` in generator.json).

The loop reads top to bottom: lr → forward → loss → backward → clip → step → log → eval.
It stops after ``train_steps`` or ``train_seconds``, whichever comes first, and keeps the
weights with the best held-out loss. The model is exported to ONNX with its KV cache
(training/export.py ``export_kv_generator``, served by bots/answers/decoding.py) so that serving
stays torch-free and pays one position per generated token, checked against torch.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer
from torch import nn

from bots.answers.generation import prompt_ids  # one prompt format for training and serving
from bots.answers.retrieval import AnswerSelector
from bots.botspec import BotSpec, placeholders
from bots.errors import ConfigError
from training.answers import AnswerIndex, QAPair, build_index, write_index
from training.answers_config import LORA_ABOVE, PACKAGED_MINILM, AnswersConfig, GenerationSettings
from training.answers_eval import evaluate_answers
from training.export import export_kv_generator, quantize_generator_int8

EOS = "<|endoftext|>"
IGNORE = -100
_MAX_ANSWER_TOKENS = 160
_ENCODER_POSITIONS = 512  # all-MiniLM-L6-v2's


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    passages: tuple[str, ...]


@dataclass(frozen=True)
class GeneratorResult:
    directory: Path
    steps: int
    seconds: float
    parameters: int
    train_loss: float
    val_loss: float | None


def _train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    return Tokenizer.from_str(bpe.to_str())


@dataclass
class _Base:
    """The model to train and how to feed it."""

    model: Any  # a transformers model (or peft's wrapper of one)
    tokenizer: Tokenizer
    eos_id: int
    context: int  # the prompt's and answer's tokens (causal), or the encoder's input (encoder-decoder)
    start_id: int | None = None  # encoder-decoder: the decoder's first token
    pad_id: int = 0
    lora: bool = False
    output_ids: list[int] | None = None  # a reduced LM head's token ids (column k predicts output_ids[k])
    columns: torch.Tensor | None = None  # token id → its column of the reduced head (IGNORE: none)

    def prompt(self, passages: Sequence[str], question: str, room: int) -> list[int]:
        """What the model reads, as bots/answers/generation.py ``OnnxGenerator.prompt`` builds it (``room``:
        tokens a causal LM keeps free for the answer)."""
        if self.start_id is None:
            return prompt_ids(self.tokenizer, passages, question, self.context - room)
        return [self.start_id, *prompt_ids(self.tokenizer, passages, question, self.context - 2), self.eos_id]


def _load_base(settings: GenerationSettings, corpus: Sequence[str], log: Callable[[str], None]) -> _Base:
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    if settings.base_model == PACKAGED_MINILM:
        return _load_minilm(corpus, min(settings.context_tokens, _ENCODER_POSITIONS))
    if settings.base_model:
        path = Path(settings.base_model).expanduser()
        if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
            raise ConfigError(f"{path}: generation.base_model must be a local Hugging Face causal LM folder with "
                              f"config.json and tokenizer.json (nothing is downloaded), or {PACKAGED_MINILM}")
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        eos = model.config.eos_token_id
        eos_id = int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None
        if eos_id is None:
            raise ConfigError(f"{path}: the model config has no eos_token_id")
        limit = int(getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 1024))
        params = sum(p.numel() for p in model.parameters())
        lora = settings.lora.enabled if settings.lora.enabled is not None else params > LORA_ABOVE
        if lora:
            model = _with_lora(model, settings, log)
        return _Base(model, tokenizer, eos_id, min(settings.context_tokens, limit), pad_id=eos_id, lora=lora)
    tokenizer = _train_tokenizer(corpus, settings.vocab_size)
    eos_id = tokenizer.token_to_id(EOS)
    config = GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=settings.context_tokens,
                        n_embd=settings.width, n_layer=settings.layers, n_head=settings.heads,
                        bos_token_id=eos_id, eos_token_id=eos_id, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    return _Base(GPT2LMHeadModel(config), tokenizer, eos_id, settings.context_tokens, pad_id=eos_id)


def _with_lora(model: nn.Module, settings: GenerationSettings, log: Callable[[str], None]) -> nn.Module:
    """Low-rank adapters (peft) on the base model's attention/MLP projections; only they train."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    lora = settings.lora
    transposed = any(isinstance(m, Conv1D) for m in model.modules())  # GPT-2 stores its projections (in, out)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                        target_modules=list(lora.target_modules) or None, fan_in_fan_out=transposed)
    try:
        wrapped = get_peft_model(model, config)  # type: ignore[arg-type]
    except ValueError as exc:  # an architecture peft has no default for, or a module name that is not there
        raise ConfigError(f"answers.generation.lora: {exc} (name target_modules)") from None
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    log(f"generator: LoRA r={lora.r} alpha={lora.alpha} on {', '.join(sorted(config.target_modules or ()))}: "
        f"{trainable / 1e6:.2f}M trainable parameters")
    return wrapped


def _load_minilm(corpus: Sequence[str], context: int) -> _Base:
    """BERT2BERT from the packaged all-MiniLM-L6-v2, with the corpus' placeholders as whole tokens."""
    from transformers import EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    from training.tokens import base_model_path

    base = base_model_path("")
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.no_truncation()  # prompt_ids fits the prompt; OnnxGenerator.load does the same
    tokenizer.no_padding()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised cross-attention weights": the recipe's known start
    try:
        model: Any = EncoderDecoderModel.from_encoder_decoder_pretrained(str(base), str(base), local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    names = sorted({f"{{{name}}}" for text in corpus for name in placeholders(text)})  # as responses fill them
    before = tokenizer.get_vocab_size()
    tokenizer.add_tokens([AddedToken(n, normalized=False, single_word=False) for n in names])
    if tokenizer.get_vocab_size() > before:
        words = {n: tokenizer.encode(n.strip("{}").replace("_", " ").replace("-", " "), add_special_tokens=False).ids
                 for n in names}
        for part in (model.encoder, model.decoder):
            table = part.resize_token_embeddings(tokenizer.get_vocab_size(), mean_resizing=False).weight
            with torch.no_grad():
                for name, ids in words.items():
                    if ids:
                        table[tokenizer.token_to_id(name)] = table[ids].mean(0)
    cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    model.config.decoder_start_token_id, model.config.pad_token_id = cls_id, pad_id
    model.config.eos_token_id = sep_id
    return _Base(model, tokenizer, sep_id, context, start_id=cls_id, pad_id=pad_id)


def reduce_head(model: Any, kept: Sequence[int]) -> torch.Tensor:
    """An encoder-decoder's BERT LM head over the tokens ``kept`` only (column k predicts ``kept[k]``),
    started from the full head's rows. Returns each token id's column (``IGNORE``: none)."""
    head = model.decoder.cls.predictions
    linear = nn.Linear(head.decoder.in_features, len(kept))
    with torch.no_grad():
        linear.weight.copy_(head.decoder.weight[list(kept)])
        linear.bias.copy_(head.bias[list(kept)])
    head.decoder, head.bias = linear, linear.bias
    model.decoder.config.tie_word_embeddings = False  # the input embeddings keep the whole vocabulary
    columns = torch.full((int(model.decoder.config.vocab_size),), IGNORE, dtype=torch.long)
    columns[list(kept)] = torch.arange(len(kept))
    return columns


def _encode(base: _Base, examples: Sequence[Example]) -> list[tuple[list[int], ...]]:
    """Causal: (ids, labels). Encoder-decoder: (encoder ids, decoder ids, labels)."""
    rows: list[tuple[list[int], ...]] = []
    for ex in examples:
        text = " " + ex.answer.strip() if base.start_id is None else ex.answer.strip()
        answer = base.tokenizer.encode(text, add_special_tokens=False).ids[:_MAX_ANSWER_TOKENS]
        answer = [*answer, base.eos_id]
        prompt = base.prompt(ex.passages, ex.question, len(answer))
        if base.start_id is None:
            rows.append((prompt + answer, [IGNORE] * len(prompt) + answer))
        else:
            rows.append((prompt, [base.start_id, *answer[:-1]], answer))
    return rows


def _pad(seqs: Sequence[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(x) for x in seqs)), value, dtype=torch.long)
    for r, x in enumerate(seqs):
        out[r, :len(x)] = torch.tensor(x)
    return out


def _loss(base: _Base, rows: Sequence[tuple[list[int], ...]], smoothing: float = 0.0) -> torch.Tensor:
    labels = _pad([r[-1] for r in rows], IGNORE)
    if base.start_id is None:
        # Right padding needs no attention mask in a causal model: no real token attends to a later pad.
        logits = base.model(input_ids=_pad([r[0] for r in rows], base.pad_id), use_cache=False).logits
        logits, labels = logits[:, :-1], labels[:, 1:]
    else:
        source = _pad([r[0] for r in rows], base.pad_id)
        mask = _pad([[1] * len(r[0]) for r in rows], 0)
        logits = base.model(input_ids=source, attention_mask=mask, decoder_input_ids=_pad([r[1] for r in rows],
                                                                                           base.pad_id),
                            use_cache=False).logits
        if base.columns is not None:  # targets as columns of the reduced head (a token it lacks: not scored)
            labels = torch.where(labels == IGNORE, IGNORE, base.columns[labels.clamp(min=0)])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=IGNORE, label_smoothing=smoothing)


@torch.no_grad()
def _eval_loss(base: _Base, rows: Sequence[tuple[list[int], ...]], batch: int) -> float:
    base.model.eval()
    losses = [float(_loss(base, rows[i:i + batch])) for i in range(0, len(rows), batch)]
    base.model.train()
    return float(np.mean(losses))


def _learning_rate(settings: GenerationSettings, base: _Base) -> float:
    if settings.learning_rate:
        return settings.learning_rate
    return 1e-3 if base.lora or not settings.base_model else 1e-4


def train_generator(examples: Sequence[Example], settings: GenerationSettings, out_dir: Path, *,
                    held_out: Sequence[Example] = (), corpus: Sequence[str] = (),
                    log: Callable[[str], None] = print, snapshots: Sequence[float] = ()) -> GeneratorResult:
    """Train (or fine-tune) on ``examples`` and write ``out_dir`` (decoder.onnx [+ encoder.onnx],
    tokenizer.json, generator.json; with LoRA and ``server_model`` the adapter too).

    The learning rate warms up over the first 5% of the steps (at most 100), then follows a cosine
    over ``train_steps`` or ``train_seconds``, whichever runs out first. ``snapshots`` (seconds of
    training; not with LoRA): the weights of that moment are also written, as a generator folder
    ``<out_dir>-<seconds>s`` beside ``out_dir``, the clock stopped meanwhile (bench/responses.py's
    learning curve)."""
    if not examples:
        raise ConfigError("answers.generation: no question→answer pairs to train the generator on")
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    texts = [*corpus, *(e.question for e in examples), *(e.answer for e in examples),
             *(p for e in examples for p in e.passages)]
    base = _load_base(settings, texts, log)
    model = base.model
    rows = _encode(base, examples)
    val_rows = _encode(base, held_out) if held_out else []
    if base.start_id is not None and settings.answer_vocabulary:  # the tokens the answers use, and end-of-answer
        base.output_ids = sorted({t for row in rows for t in row[-1]} | {base.eos_id})
        base.columns = reduce_head(model, base.output_ids)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    learning_rate = _learning_rate(settings, base)
    log(f"generator: {params / 1e6:.2f}M parameters ({sum(p.numel() for p in trainable) / 1e6:.2f}M trained), "
        f"{len(rows)} examples, context {base.context} tokens, "
        + (f"output vocabulary {len(base.output_ids)} tokens, " if base.output_ids else "")
        + f"learning rate {learning_rate:g}, "
        + (f"fine-tuning {settings.base_model}" + (" with LoRA" if base.lora else "") if settings.base_model
           else "from scratch"))
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, min(100, settings.train_steps // 20))
    pending = sorted(snapshots) if not base.lora else []
    model.train()
    started = time.perf_counter()
    best_state: dict[str, torch.Tensor] | None = None
    best_val = math.inf
    running = float("nan")
    step = 0
    order: list[int] = []
    eval_every = max(20, settings.train_steps // 10)
    eval_seconds = max(30.0, settings.train_seconds / 10)  # time-bounded runs log and keep the best too
    last_eval = started
    while step < settings.train_steps and time.perf_counter() - started < settings.train_seconds:
        done = max(step / settings.train_steps, (time.perf_counter() - started) / settings.train_seconds)
        lr = learning_rate * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if len(order) < settings.batch_size:
            order += random.sample(range(len(rows)), len(rows))
        batch, order = [rows[i] for i in order[:settings.batch_size]], order[settings.batch_size:]
        loss = _loss(base, batch, settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if math.isnan(running) else 0.95 * running + 0.05 * value
        out_of_time = time.perf_counter() - started >= settings.train_seconds
        if (step % eval_every == 0 or step == settings.train_steps or out_of_time
                or time.perf_counter() - last_eval >= eval_seconds):
            last_eval = time.perf_counter()
            val = _eval_loss(base, val_rows, settings.batch_size) if val_rows else None
            log(f"generator step {step} (epoch {step * settings.batch_size / len(rows):.2f}): loss {running:.3f}"
                + (f", held-out {val:.3f}" if val is not None else "") + f", {time.perf_counter() - started:.0f}s")
            if val is not None and val < best_val:  # the trained weights only (LoRA: the adapters)
                best_val = val
                best_state = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
        if pending and time.perf_counter() - started >= pending[0]:
            paused = time.perf_counter()
            at = pending.pop(0)
            configs = [(m.config, m.config._attn_implementation) for m in model.modules() if hasattr(m, "config")]
            model.eval()
            folder = out_dir.with_name(f"{out_dir.name}-{at:.0f}s")
            _write(base, model, folder, settings, held_out or examples, {
                "parameters": params, "learning_rate": learning_rate, "steps": step,
                "epochs": round(step * settings.batch_size / len(rows), 2), "train_seconds": round(at, 1),
                "train_loss": round(running, 4), "snapshot": True})
            for config, attention in configs:  # the export switched to traceable eager attention
                config._attn_implementation = attention
            model.train()
            log(f"generator snapshot at {at:.0f}s (step {step}) → {folder} ({time.perf_counter() - paused:.0f}s, "
                "not counted)")
            started += time.perf_counter() - paused
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    if base.lora:
        if settings.server_model:  # the adapter alone, for a server that loads base + adapter (vLLM --lora-modules)
            model.save_pretrained(str(out_dir / "adapter"))
        model = model.merge_and_unload()  # plain weights: export and serving unchanged
    model.eval()
    _write(base, model, out_dir, settings, held_out or examples, {
        "parameters": params, "lora": base.lora, "learning_rate": learning_rate, "steps": step,
        "epochs": round(step * settings.batch_size / len(rows), 2), "train_seconds": round(seconds, 1),
        "train_loss": round(running, 4), "val_loss": None if best_val == math.inf else round(best_val, 4)}, log=log)
    if settings.server_model:
        write_server_model(model, base.tokenizer, out_dir / "server", settings, base.eos_id, base.context)
        log(f"generator: Hugging Face folder for an OpenAI-compatible server → {out_dir / 'server'}")
    return GeneratorResult(out_dir, step, seconds, params, running, None if best_val == math.inf else best_val)


def _write(base: _Base, model: Any, out_dir: Path, settings: GenerationSettings, judged_on: Sequence[Example],
           facts: dict[str, Any], log: Callable[[str], None] | None = None) -> None:
    """Export ``model`` with its KV cache (checked against torch), the tokenizer, the int8 twin where
    it writes the same answers (judged on the first 20 of ``judged_on``) and generator.json."""
    spec, diff = export_kv_generator(model, out_dir, start_id=base.start_id, output_ids=base.output_ids)
    base.tokenizer.save(str(out_dir / "tokenizer.json"))
    budget = min(40, base.context // 2)
    prompts = [base.prompt(e.passages, e.question, budget) for e in judged_on[:20]]
    int8 = quantize_generator_int8(out_dir, spec, prompts, base.eos_id, max_new_tokens=budget)
    if log is not None:
        log(f"generator int8: {int8['int8_agreement']:.0%} of {int8['int8_prompts']} greedy answers as fp32's → "
            f"serving {int8['decoder_file']}")
    meta: dict[str, Any] = {
        "decoder": asdict(spec), **int8, "eos_id": base.eos_id, "bos_id": None, "max_positions": base.context,
        "settings": asdict(settings), **facts, "export_max_diff": diff,
        "gate": {"passed": False, "reason": "not evaluated against retrieval yet"},
    }
    (out_dir / "generator.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def write_server_model(model: nn.Module, tokenizer: Tokenizer, folder: Path, settings: GenerationSettings,
                       eos_id: int, context: int) -> None:
    """The trained weights (merged: the whole model) as a Hugging Face folder that vLLM, TGI or
    llama.cpp's converter load (``vllm serve FOLDER``; k8s/overlays/generator mounts it): config.json,
    model.safetensors, tokenizer.json, and the base model's tokenizer settings (else minimal ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]
    tokenizer.save(str(folder / "tokenizer.json"))
    copied: list[str] = []
    if settings.base_model:
        base = Path(settings.base_model).expanduser()
        copied = [n for n in _TOKENIZER_FILES if (base / n).is_file()]
        for name in copied:
            shutil.copyfile(base / name, folder / name)
    if "tokenizer_config.json" not in copied:
        eos = tokenizer.id_to_token(eos_id)
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": eos,
            "model_max_length": context}, indent=2), encoding="utf-8")


def set_gate(out_dir: Path, gate: dict[str, Any]) -> None:
    """Record the held-out comparison with retrieval that switches generation on (or not)."""
    path = out_dir / "generator.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["gate"] = gate
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def examples_from_pairs(pairs: Sequence[QAPair], passages_for: Callable[[int], Sequence[str]]) -> list[Example]:
    """Each pair with the passages retrieval would give its question (``passages_for(i)``)."""
    return [Example(p.question, p.answer, tuple(passages_for(i))) for i, p in enumerate(pairs)]


def examples_with_passages(selector: AnswerSelector, pairs: Sequence[QAPair], values: dict[str, str], *,
                           training: bool = False) -> list[Example]:
    """Each pair with the passages the server would give its question (``training``: the pair is one of
    the index's, ``pairs[i]`` its i-th question, left out of its own passages)."""
    return [Example(p.question, p.answer, tuple(selector.passages_for(
        p.question, {**values, **{e.entity: e.value for e in p.entities}}, exclude_question=i if training else None)))
        for i, p in enumerate(pairs)]


def _split(pairs: Sequence[QAPair], fraction: float, cap: int, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Held-out pairs for the gate: ``fraction`` of each intent (at most ``cap`` in all), never a whole intent."""
    rng = random.Random(seed)  # noqa: S311 - reproducible choice, not security
    by_intent: dict[str, list[QAPair]] = {}
    for p in pairs:
        by_intent.setdefault(p.intent, []).append(p)
    held: list[QAPair] = []
    per_intent = max(1, cap // max(1, len(by_intent)))
    for group in by_intent.values():
        if len(group) < 3:
            continue
        shuffled = rng.sample(group, len(group))
        held.extend(shuffled[:min(per_intent, max(1, round(len(group) * fraction)))])
    held_questions = {p.question for p in held}
    return [p for p in pairs if p.question not in held_questions], held


def fit_generation(bot: BotSpec, cfg: AnswersConfig, index: AnswerIndex, artifact_dir: Path, nlu: Any, *,
                   extra_pairs: Sequence[QAPair] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the generator on all but a held-out slice of the pairs, serve both answer paths on
    that slice, and switch generation on only if it beats retrieval (recorded as the gate)."""
    settings = cfg.generation or GenerationSettings()
    _, held = _split(index.pairs, 0.1, settings.gate_examples, settings.seed)
    with tempfile.TemporaryDirectory(prefix="switchboard-gen-") as tmp:
        work = Path(tmp)
        sub = build_index(bot, cfg, extra_pairs=extra_pairs, leave_out=frozenset(p.question for p in held))
        write_index(sub, nlu, work)
        selector = AnswerSelector.load(work, nlu, load_generator=False)
        assert selector is not None
        known = dict(cfg.values)

        examples = examples_with_passages(selector, sub.pairs, known, training=True)
        held_examples = examples_with_passages(selector, held, known)
        corpus = [c.text for c in index.chunks]
        result = train_generator(examples, settings, work / "responses" / "generator", held_out=held_examples,
                                 corpus=corpus, log=log)
        gate: dict[str, Any] = {"passed": False, "held_out": len(held)}
        if held:
            served = AnswerSelector.load(work, nlu)
            assert served is not None
            retrieval = evaluate_answers(served, nlu, held, mode="retrieval")
            generation = evaluate_answers(served, nlu, held, mode="generation")
            passed = (generation.sources.get("generation", 0) > 0  # a fallback to retrieval is no win
                      and generation.intent_consistency >= retrieval.intent_consistency
                      and generation.rouge_l > retrieval.rouge_l)
            gate = {"passed": passed, "held_out": len(held), "retrieval": retrieval.to_dict(),
                    "generation": generation.to_dict(),
                    "reason": "generation beat retrieval on held-out pairs" if passed else
                    "generation did not beat retrieval on held-out pairs (intent consistency and ROUGE-L)"}
        else:
            gate["reason"] = "no held-out pairs (too few examples per intent) to compare with retrieval"
        set_gate(result.directory, gate)
        target = artifact_dir / "responses" / "generator"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(result.directory, target)
    log(f"generator gate: {'ON' if gate['passed'] else 'off'} ({gate['reason']})")
    return gate
