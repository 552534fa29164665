"""ONNX export of the joint model (fp32, and a static-int8 twin), checked against torch.

The TorchScript-based exporter is used: in torch 2.13 the dynamo exporter needs an opset
version conversion that fails for this graph at opset 17, and writes weights as external
data; the TorchScript path gives one self-contained file whose outputs match torch to ~1e-6.

The int8 twin quantises activations with **static** scales calibrated on training texts, never
per call: dynamic quantisation (``quantize_dynamic``, used before) scales each MatMul input by
the min/max of the whole batch, so a message's intent and confidence depended on the other
messages the micro-batcher put next to it (72 of 5,500 test intents changed, confidences moved
by up to 0.17). With fixed scales every token row is quantised alone: a text scores the same,
bit for bit, alone or in any batch, at the same speed (bench/nlu_determinism.py,
bench/RESULTS.md). The int8 file says so in its metadata (``INT8_SCHEME_KEY``); bots/nlu/model.py
runs an int8 file without it one text at a time.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from bots.answers.decoding import DecodeSettings, KvModel, KvSpec, full_vocabulary, steps
from bots.nlu.model import INT8_SCHEME_KEY, INT8_STATIC
from training.model import JointModel

INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("intent_logits", "entity_logits", "sentence_embedding")
OPSET = 17


class ExportError(RuntimeError):
    pass


def export_onnx(model: JointModel, tokenizer: Tokenizer, path: Path) -> None:
    model.eval()
    enc = tokenizer.encode_batch(["export the model please", "hi"])
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask", "entity_logits")}
    dynamic.update({"intent_logits": {0: "batch"}, "sentence_embedding": {0: "batch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, mask), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    verify(model, tokenizer, path)


def verify(model: JointModel, tokenizer: Tokenizer, path: Path, *, atol: float = 1e-3) -> float:
    """Run torch and ONNX Runtime on a padded batch; raise when they differ. Returns the max difference."""
    texts = ["where is my order 12345?", "cancel", "I would like to speak with a human agent about my refund"]
    enc = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUTS), {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask))
    worst = 0.0
    for name, g, w in zip(OUTPUTS, got, want, strict=True):
        diff = float(np.abs(g - w.numpy()).max())
        worst = max(worst, diff)
        if diff > atol:
            raise ExportError(f"ONNX output {name} differs from torch by {diff:.2e} (> {atol})")
    return worst


CALIBRATION_TEXTS = 512  # training texts whose activation ranges fix the int8 scales


def quantize_int8(fp32_path: Path, int8_path: Path, tokenizer: Tokenizer, calibration: Sequence[str]) -> None:
    """Static int8: MatMul/Gemm weights per channel (symmetric int8), their float inputs as uint8
    with one scale per tensor fixed by the min/max seen on ``calibration`` texts (run one at a
    time, so padding never widens a range).

    Only the inputs of the encoder's weight MatMuls are quantised: the quantiser also routes the
    residual connection of a quantised tensor through its Q/DQ pair, which is put back to the float
    tensor here (the residual stream stays fp32, as in the dynamic version). Each Q → MatMul → Add(bias)
    is written as one ``MatMulIntegerToFloat`` with its bias (``_fuse_bias``): as fast as the dynamic
    version, which fused the same way. Per-channel weight scales: on BANKING77 per-tensor int8 lost
    1.0 accuracy point against fp32, per-channel 0.1 (92.7% vs 92.8%)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    texts = list(dict.fromkeys(t for t in calibration if t.strip()))[:CALIBRATION_TEXTS]
    texts = texts or ["export the model please", "hi"]

    class _Texts(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        def __init__(self) -> None:
            self._feeds = _feeds(tokenizer, texts)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    model = onnx.load(str(fp32_path))
    weights = {init.name for init in model.graph.initializer}
    # The encoder's weight MatMuls only. Attention's MatMuls multiply two activations: left in float (as
    # quantize_dynamic did). The heads stay float too: they are tiny, and the intent head reads the
    # mean-pooled embedding, whose last bits ONNX Runtime's ReduceSum computes differently for different
    # batch sizes (~1e-7); a fixed quantisation step would turn that into 4e-3 in a logit.
    encoder_weights = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                       and n.name.startswith("/encoder/") and any(i in weights for i in n.input)]
    if not encoder_weights:
        raise ExportError(f"{fp32_path}: no encoder MatMul to quantise (node names should start with /encoder/)")
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        warnings.simplefilter("ignore")
        qdq = Path(tmp) / "qdq.onnx"
        quantize_static(str(fp32_path), str(qdq), _Texts(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=encoder_weights,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                       "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]})
        quantized = onnx.load(str(qdq))
    _float_residuals(quantized)
    _fuse_bias(quantized)
    entry = quantized.metadata_props.add()
    entry.key, entry.value = INT8_SCHEME_KEY, INT8_STATIC
    onnx.save(quantized, str(int8_path))


def _feeds(tokenizer: Tokenizer, texts: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    for text in texts:
        enc = tokenizer.encode(text)
        yield {"input_ids": np.array([enc.ids], dtype=np.int64),
               "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}


def _float_residuals(model: onnx.ModelProto) -> None:
    """Give every consumer of a dequantised activation other than MatMul/Gemm the float tensor back."""
    graph = model.graph
    quantized_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    float_of = {n.output[0]: quantized_from[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in quantized_from}
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            if name in float_of:
                node.input[k] = float_of[name]


def _fuse_bias(model: onnx.ModelProto) -> None:
    """Q(x) → DQ → MatMul(·, DQ(W)) → Add(bias) becomes Q(x) → ``MatMulIntegerToFloat`` with the bias,
    the node ONNX Runtime builds from the quantiser's pattern itself, minus the separate Add it would
    keep (as the dynamic version's fused node had it): one pass over the output less per layer."""
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fused: dict[int, onnx.NodeProto] = {}  # id(MatMul) -> its replacement
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        dq_x, dq_w = (producer.get(name) for name in node.input)
        users = consumers.get(node.output[0], [])
        if (dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear"
                or dq_w.input[0] not in constants or len(users) != 1 or users[0].op_type != "Add"):
            continue
        add = users[0]
        bias = next((name for name in add.input if name != node.output[0]), "")
        if bias not in constants or len(constants[bias].dims) != 1:
            continue
        fused[id(node)] = onnx.helper.make_node(
            "MatMulIntegerToFloat", [dq_x.input[0], dq_w.input[0], dq_x.input[1], dq_w.input[1], dq_x.input[2],
                                     dq_w.input[2], bias], [add.output[0]], name=node.name, domain="com.microsoft")
        dropped.update((id(add), id(dq_w)))
    if not fused:
        return
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        kept.append(fused.get(id(node), node))
    used = {name for node in kept for name in node.input}
    kept = [n for n in kept if n.op_type != "DequantizeLinear" or n.output[0] in used]  # DQ(x) no longer read
    del graph.node[:]
    graph.node.extend(kept)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


# -- the answer generator, with past keys and values (bots/answers/decoding.py) ------------------------
def _kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of a decoder config (GPT-2, Llama, Qwen2, BERT, ...)."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(config.num_hidden_layers), kv_heads, head_dim


def _positions_and_mask(input_ids: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the new tokens after ``past`` ones, and which keys each may see [new, past + new]
    (a ready mask: transformers then builds none with vmap, which cannot be traced)."""
    p, q = past.shape[2], input_ids.shape[1]
    positions = torch.arange(q, dtype=torch.long, device=input_ids.device)[None] + p
    keys = torch.arange(p + q, dtype=torch.long, device=input_ids.device)
    return positions, keys[None, :] <= positions[0][:, None]


class _CausalStep(torch.nn.Module):
    """input_ids, past keys/values → logits of the last new token, the grown keys/values."""

    def __init__(self, model: Any, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        positions, visible = _positions_and_mask(input_ids, past[0])
        # Additive (0 / most negative): eager attention adds the 4D mask it is given to the scores.
        additive = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)[None, None]
        out = self.model(input_ids=input_ids, attention_mask=additive, position_ids=positions,
                         past_key_values=cache, use_cache=True, cache_position=positions[0])
        grown = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1, :], *grown)


class _CrossKeys(torch.nn.Module):
    """The encoder of an encoder-decoder, then every decoder layer's cross-attention keys and values."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        b, s, _ = states.shape
        out: list[torch.Tensor] = []
        for layer in self.model.decoder.bert.encoder.layer:
            attn = layer.crossattention.self
            for proj in (attn.key, attn.value):
                out.append(proj(states).view(b, s, attn.num_attention_heads, attn.attention_head_size).transpose(1, 2))
        return tuple(out)


class _DecoderStep(torch.nn.Module):
    """An encoder-decoder's decoder: input_ids, encoder mask, past and cross keys/values → logits, grown past."""

    def __init__(self, model: Any, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache, EncoderDecoderCache

        past, cross = kv[:2 * self.layers], kv[2 * self.layers:]
        own, theirs = DynamicCache(), DynamicCache()
        for i in range(self.layers):
            own.update(past[2 * i], past[2 * i + 1], i)
            theirs.update(cross[2 * i], cross[2 * i + 1], i)
        cache = EncoderDecoderCache(own, theirs)
        for i in range(self.layers):
            cache.is_updated[i] = True  # cross keys/values come from the encoder graph, never recomputed
        positions, visible = _positions_and_mask(input_ids, past[0])
        b, s = encoder_attention_mask.shape
        mask = visible[None].to(torch.float32).expand(b, -1, -1)
        out = self.model.decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                 encoder_hidden_states=torch.zeros(b, s, 1),  # unread: the cross keys are cached
                                 encoder_attention_mask=encoder_attention_mask, past_key_values=cache, use_cache=True,
                                 cache_position=positions[0])
        grown = [t for layer in out.past_key_values.self_attention_cache.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1, :], *grown)


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
            outputs: list[str], dynamic: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)


def export_kv_generator(model: Any, folder: Path, *, start_id: int | None = None,
                        output_ids: Sequence[int] | None = None, atol: float = 1e-3) -> tuple[KvSpec, float]:
    """Export ``model`` (a transformers causal LM, or an ``EncoderDecoderModel`` with a BERT decoder:
    then ``start_id`` is the decoder's first token) to ``folder`` as KV-cached graphs, and check them
    against torch (recomputing the whole sequence each step) over a few decoding steps. ``output_ids``:
    the token id of each column of a reduced LM head (the model's vocabulary is its input embeddings').
    Returns the ``generator.json`` decoder description and the largest logit difference."""
    from transformers import EncoderDecoderModel

    model.eval()
    encoder_decoder = isinstance(model, EncoderDecoderModel)
    for config in ((model.config, model.encoder.config, model.decoder.config) if encoder_decoder else (model.config,)):
        config._attn_implementation = "eager"  # traceable attention with the masks given above
    decoder_config = model.decoder.config if encoder_decoder else model.config
    layers, kv_heads, head_dim = _kv_shape(decoder_config)
    spec = KvSpec("encoder-decoder" if encoder_decoder else "causal", layers, kv_heads, head_dim,
                  start_id if encoder_decoder else None, None if output_ids is None else tuple(map(int, output_ids)),
                  int(decoder_config.vocab_size) if output_ids is not None else 0)
    if encoder_decoder and start_id is None:
        raise ExportError("an encoder-decoder generator needs the decoder's start token id")
    folder.mkdir(parents=True, exist_ok=True)
    past, present, cross = spec.kv_names("past"), spec.kv_names("present"), spec.kv_names("cross")
    sample_past = tuple(torch.zeros(1, kv_heads, 3, head_dim) for _ in past)
    dynamic: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "new"}, "logits": {0: "batch"}}
    dynamic.update({n: {0: "batch", 2: "past"} for n in past})
    dynamic.update({n: {0: "batch", 2: "total"} for n in present})
    ids = torch.randint(3, 50, (1, 2), dtype=torch.long)
    if encoder_decoder:
        source = torch.randint(3, 50, (1, 9), dtype=torch.long)
        mask = torch.ones_like(source)
        cross_dynamic = {n: {0: "batch", 2: "source"} for n in cross}
        _export(_CrossKeys(model).eval(), (source, mask), folder / "encoder.onnx", ["input_ids", "attention_mask"],
                cross, {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"},
                        **cross_dynamic})
        sample_cross = tuple(torch.zeros(1, kv_heads, 9, head_dim) for _ in cross)
        _export(_DecoderStep(model, layers).eval(), (ids, mask, *sample_past, *sample_cross), folder / "decoder.onnx",
                ["input_ids", "encoder_attention_mask", *past, *cross], ["logits", *present],
                {**dynamic, "encoder_attention_mask": {0: "batch", 1: "source"}, **cross_dynamic})
    else:
        _export(_CausalStep(model, layers).eval(), (ids, *sample_past), folder / "decoder.onnx", ["input_ids", *past],
                ["logits", *present], dynamic)
    return spec, verify_kv_generator(model, folder, spec, atol=atol)


def torch_logits(model: Any, spec: KvSpec, prompt: Sequence[int], rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Torch's next-token logits after ``prompt`` and each row's tokens, the whole sequence recomputed
    (no cache): the reference the exported graphs are checked against; a reduced output vocabulary's
    logits put back at their token ids, as ``KvModel`` serves them."""
    out = []
    with torch.no_grad():
        for tokens in rows:
            if spec.family == "causal":
                ids = torch.tensor([[*prompt, *tokens]], dtype=torch.long)
                out.append(model(input_ids=ids, use_cache=False).logits[0, -1].numpy())
            else:
                source = torch.tensor([list(prompt)], dtype=torch.long)
                target = torch.tensor([[spec.start_id, *tokens]], dtype=torch.long)
                out.append(model(input_ids=source, attention_mask=torch.ones_like(source), decoder_input_ids=target,
                                 use_cache=False).logits[0, -1].numpy())
    columns = None if spec.output_ids is None else np.array(spec.output_ids, dtype=np.int64)
    return full_vocabulary(np.stack(out), columns, spec.vocab_size)


class TorchDecoding:
    """``bots.answers.decoding.Decoding`` by torch without a cache (the reference of the tests and
    of ``verify_kv_generator``)."""

    def __init__(self, model: Any, spec: KvSpec, prompt: Sequence[int]) -> None:
        self.model, self.spec, self.prompt = model, spec, list(prompt)
        self.rows: list[list[int]] = [[]]

    def first(self) -> np.ndarray:
        self.rows = [[]]
        return torch_logits(self.model, self.spec, self.prompt, self.rows)

    def next(self, tokens: np.ndarray, parents: np.ndarray) -> np.ndarray:
        self.rows = [[*self.rows[int(p)], int(t)] for t, p in zip(tokens, parents, strict=True)]
        return torch_logits(self.model, self.spec, self.prompt, self.rows)


def verify_kv_generator(model: Any, folder: Path, spec: KvSpec, *, atol: float = 1e-3,
                        decoder_file: str = "decoder.onnx") -> float:
    """Decode a few greedy steps with the exported graphs (the serving code) and with torch; raise
    when the logits differ by more than ``atol``. Returns the largest difference."""
    served = KvModel(folder, spec, decoder_file=decoder_file)
    vocab = int(model.config.decoder.vocab_size if spec.family == "encoder-decoder" else model.config.vocab_size)
    prompt = [int(x) for x in np.random.default_rng(7).integers(3, min(vocab, 1000), 11)]
    mine, theirs = served.start(prompt), TorchDecoding(model, spec, prompt)
    worst = 0.0
    got, want = mine.first(), theirs.first()
    for _ in range(4):
        worst = max(worst, float(np.abs(got - want).max()))
        token = np.array([int(np.argmax(want[0]))], dtype=np.int64)
        zero = np.zeros(1, dtype=np.int64)
        got, want = mine.next(token, zero), theirs.next(token, zero)
    worst = max(worst, float(np.abs(got - want).max()))
    if worst > atol:
        raise ExportError(f"exported generator differs from torch by {worst:.2e} (> {atol})")
    return worst


INT8_AGREEMENT = 0.9  # share of greedy answers int8 must write exactly as fp32 does to be served


def quantize_generator_int8(folder: Path, spec: KvSpec, prompts: Sequence[Sequence[int]], eos_id: int, *,
                            max_new_tokens: int = 40) -> dict[str, Any]:
    """``decoder.int8.onnx``: the decoder's MatMul weights as int8 (dynamic activation scales: a
    generator decodes one answer per call, so no other message shares its scales), kept only where
    quality holds: at least ``INT8_AGREEMENT`` of the greedy answers to ``prompts`` identical to
    fp32's. Returns what was decided (``decoder_file`` and the agreement) for generator.json."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder / "decoder.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(folder / "decoder.onnx"), str(target), weight_type=QuantType.QInt8)
    settings = DecodeSettings(max_new_tokens=max_new_tokens, max_seconds=600, repetition_penalty=1.2)
    fp32, int8 = KvModel(folder, spec), KvModel(folder, spec, decoder_file=target.name)

    def answer(model: KvModel, prompt: Sequence[int]) -> list[int]:
        return [t for t, _, why in steps(model.start(prompt), eos_id, settings) if not why]

    same = sum(answer(fp32, p) == answer(int8, p) for p in prompts)
    agreement = same / len(prompts) if prompts else 0.0
    keep = bool(prompts) and agreement >= INT8_AGREEMENT
    if not keep:
        target.unlink()
    return {"decoder_file": target.name if keep else "decoder.onnx", "int8_agreement": round(agreement, 4),
            "int8_prompts": len(prompts)}
