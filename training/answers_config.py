"""The ``answers:`` and ``knowledge_base:`` sections of bot.yml, validated with ``file:line`` errors.

```yaml
answers:
  default: retrieval          # template | knowledge | retrieval | generation
  intents: {greet: template}  # per-intent override
  pairs: [faq.csv]            # extra question→answer pairs (question,answer,intent or Bitext CSV)
  values: {website_name: shop.example.com}   # bot-wide placeholder values
  min_similarity: 0.6         # a question this close to a known one gets that one's answer template
  kb_min_similarity: 0.35     # else a knowledge-base chunk this close gives a composed answer
  kb_override_similarity: 0.45  # mode knowledge: a chunk this close answers instead of the intent's template
  follow_up_similarity: 0.45  # a message not understood alone, read with the one before it (1: never)
  generation:                 # optional: a domain-tuned generation model (see GenerationSettings)
    base_model: ""            # local HF causal LM folder; packaged-minilm = MiniLM→MiniLM encoder-decoder;
                              # "" = small GPT-2 from scratch
    lora: {r: 16, alpha: 32}  # LoRA (peft) for a local causal LM; on by itself above 100M parameters
    endpoint:                 # or: an OpenAI-compatible server writes the answers (nothing is trained)
      url: http://generator:8000/v1
      model: support-generator
  compose:                    # optional: a question no template fits well gets a generated answer
    below: 0.5                # ... when its nearest known question is less similar than this
knowledge_base: kb/           # or {folder: kb/, chunk_words: 120, overlap_sentences: 1}
```
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bots.answers.generation import EndpointConfig
from bots.botspec import ANSWER_KINDS, BotSpec
from bots.errors import ConfigError
from bots.yamlspan import Located

MODES = ANSWER_KINDS  # one list: a rule's answer: and answers.intents take the same modes
KB_SUFFIXES = (".md", ".markdown", ".txt")
PACKAGED_MINILM = "packaged-minilm"  # generation.base_model: BERT2BERT warm-started from the packaged encoder
LORA_ABOVE = 100_000_000  # a local causal LM with more parameters is fine-tuned with LoRA unless lora: false


@dataclass(frozen=True)
class LoraSettings:
    """``generation.lora``: low-rank adapters (peft) on a local causal LM, merged into it before export."""

    enabled: bool | None = None  # None: on for a base model over LORA_ABOVE parameters
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ()  # () = peft's default for the architecture (e.g. q_proj, v_proj)


@dataclass(frozen=True)
class GenerationSettings:
    # local Hugging Face causal LM folder; "packaged-minilm": an encoder-decoder warm-started from the packaged
    # all-MiniLM-L6-v2 on both sides (BERT2BERT); "": a small GPT-2-style model from scratch
    base_model: str = ""
    max_new_tokens: int = 80
    max_seconds: float = 2.0
    sampling: str = "greedy"  # greedy | sample
    temperature: float = 0.8
    top_k: int = 40
    repetition_penalty: float = 1.2
    no_repeat_ngram: int = 0  # n > 0: the answer never repeats an n-gram (local model)
    beams: int = 1  # beam search over this many hypotheses (local model; 1 = greedy, streamed token by token)
    min_confidence: float = 0.35  # mean probability of the generated tokens
    min_support: float = 0.7  # share of the answer's content words found in the passages or question
    passages: int = 3
    require_gate: bool = True  # serve generation only if it beat retrieval on held-out pairs
    gate_examples: int = 50  # held-out pairs (of the bot's own) the gate compares on
    train_steps: int = 2000
    train_seconds: float = 600.0
    layers: int = 4
    width: int = 256
    heads: int = 4
    vocab_size: int = 4000
    context_tokens: int = 384
    batch_size: int = 16
    learning_rate: float = 0.0  # 0: 1e-3 from scratch or with LoRA, 1e-4 fine-tuning a whole pretrained model
    label_smoothing: float = 0.0  # of the answer tokens' targets (0.1 helps a short fine-tune generalise)
    answer_vocabulary: bool = True  # packaged-minilm: the LM head predicts only the tokens the answers use
    lora: LoraSettings = LoraSettings()
    seed: int = 13
    endpoint: EndpointConfig | None = None  # an OpenAI-compatible server instead of a trained model
    server_model: bool = False  # also write the trained model as a Hugging Face folder a server loads (vLLM ...)


@dataclass(frozen=True)
class ComposeSettings:
    """``answers.compose``: for a question no template fits well, the generator (``answers.generation``:
    local or endpoint) writes from the top knowledge-base passages and nearest answer templates,
    sentence by sentence checked and attributed (bots/answers/retrieval.py)."""

    below: float = 0.5  # compose when the nearest known question is less similar than this (bench/responses.py)
    passages: int = 3  # knowledge-base chunks in the prompt (at least kb_min_similarity close)
    templates: int = 2  # nearest answer templates in the prompt


@dataclass(frozen=True)
class AnswersConfig:
    default: str = "retrieval"
    intents: dict[str, str] = field(default_factory=dict)  # intent -> mode
    pairs: tuple[str, ...] = ()  # CSV files (question/answer/intent or Bitext columns), relative to the bot
    max_pairs_per_intent: int = 0  # 0 = all
    values: dict[str, str] = field(default_factory=dict)  # bot-wide placeholder values
    top_k: int = 5
    min_similarity: float = 0.6  # nearest known question at least this close: answer with its template
    kb_min_similarity: float = 0.35  # nearest knowledge-base chunk at least this close: compose from it
    # mode knowledge (e.g. an out_of_scope intent that catches in-scope questions): a chunk at least this close
    # answers instead of the intent's template; above the off-topic questions' best (bench/kb_passages.py)
    kb_override_similarity: float = 0.45
    # a message not understood, and not answered alone, is read together with the customer's message before it: the
    # evidence found must be this close to the two and closer to them than to the earlier one alone; 1 turns it off
    follow_up_similarity: float = 0.45
    kb_sentences: int = 3
    kb_folder: str = ""
    chunk_words: int = 120
    overlap_sentences: int = 1
    generation: GenerationSettings | None = None
    compose: ComposeSettings | None = None

    def mode_for(self, intent: str) -> str:
        return self.intents.get(intent, self.default)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pairs"] = list(self.pairs)
        return d


_INT_KEYS = {"max_pairs_per_intent", "top_k", "kb_sentences", "chunk_words", "overlap_sentences"}
_FLOAT_KEYS = {"min_similarity", "kb_min_similarity", "kb_override_similarity", "follow_up_similarity"}


def _number(item: Located, key: str, kind: type, problems: list[str], low: float, high: float) -> Any:
    v = item.value
    ok = not isinstance(v, bool) and isinstance(v, int | float) and (kind is float or isinstance(v, int))
    if not ok or not low <= v <= high:
        what = "a whole number" if kind is int else "a number"
        problems.append(f"{item.where()}: '{key}' must be {what} between {low:g} and {high:g}")
        return None
    return kind(v)


def _switch(item: Located, what: str, problems: list[str]) -> bool | None:
    """A section that is on with its defaults (``true`` or empty: True), off (``false``: False), or a
    mapping of settings to read (None); anything else is a problem (False)."""
    if item.value is None or item.value is True:
        return True
    if item.value is False:
        return False
    if isinstance(item.value, dict):
        return None
    problems.append(f"{item.where()}: '{what}' must be true, false or a mapping of {what} settings")
    return False


def _parse_generation(item: Located, problems: list[str]) -> GenerationSettings | None:
    switch = _switch(item, "generation", problems)
    if switch is not None:
        return GenerationSettings() if switch else None
    defaults = GenerationSettings()
    values: dict[str, Any] = {}
    for key, sub in item.value.items():
        if not hasattr(defaults, key):
            known = ", ".join(sorted(GenerationSettings.__dataclass_fields__))
            problems.append(f"{sub.where()}: unknown generation key {key!r} (known: {known})")
            continue
        default = getattr(defaults, key)
        if key == "endpoint":
            values[key] = _parse_endpoint(sub, problems)
        elif key == "lora":
            values[key] = _parse_lora(sub, problems)
        elif key == "sampling":
            if sub.value not in ("greedy", "sample"):
                problems.append(f"{sub.where()}: 'sampling' must be greedy or sample")
                continue
            values[key] = sub.value
        elif isinstance(default, bool):
            if not isinstance(sub.value, bool):
                problems.append(f"{sub.where()}: {key!r} must be true or false")
                continue
            values[key] = sub.value
        elif isinstance(default, str):
            if not isinstance(sub.value, str):
                problems.append(f"{sub.where()}: {key!r} must be text (a local model folder)")
                continue
            values[key] = sub.value
        else:
            high = 1.0 if key in ("min_confidence", "min_support", "label_smoothing") else 1e7
            low = 0 if key == "no_repeat_ngram" else 1 if isinstance(default, int) else 0.0
            high = 0.9 if key == "label_smoothing" else high
            got = _number(sub, key, type(default), problems, low, high)
            if got is not None:
                values[key] = got
    if "endpoint" in item.value and values.get("base_model"):
        problems.append(f"{item.where()}: 'base_model' (a model trained here) and 'endpoint' (a server's model) "
                        "exclude each other")
    _check_base_model(item, values, problems)
    return GenerationSettings(**values)


def _check_base_model(item: Located, values: dict[str, Any], problems: list[str]) -> None:
    """What each base model allows: LoRA and the server folder are for a local causal LM."""
    base = values.get("base_model", "")
    lora: LoraSettings | None = values.get("lora")
    where = item.value.get("base_model", item).where()
    if base == PACKAGED_MINILM:
        if values.get("server_model"):
            problems.append(f"{where}: 'server_model' needs a local causal LM as base_model (OpenAI-compatible "
                            f"servers do not load the {PACKAGED_MINILM} encoder-decoder)")
        if lora is not None and lora.enabled:
            problems.append(f"{where}: 'lora' is for a local causal LM base_model, not {PACKAGED_MINILM} (fully "
                            "fine-tuned)")
    elif base.lower().replace("_", "-") in (PACKAGED_MINILM, "minilm", "packaged"):
        problems.append(f"{where}: base_model {base!r}: did you mean {PACKAGED_MINILM!r}?")
    elif not base and lora is not None and lora.enabled:
        problems.append(f"{item.value['lora'].where()}: 'lora' needs a local causal LM as base_model (a model "
                        "trained from scratch has nothing to adapt)")


def _parse_lora(item: Located, problems: list[str]) -> LoraSettings | None:
    """``lora: true | false | {r, alpha, dropout, target_modules}`` (a mapping switches it on)."""
    if isinstance(item.value, bool):
        return LoraSettings(enabled=item.value)
    if not isinstance(item.value, dict):
        problems.append(f"{item.where()}: 'lora' must be true, false or a mapping of r, alpha, dropout, "
                        "target_modules")
        return None
    values: dict[str, Any] = {"enabled": True}
    for key, sub in item.value.items():
        if key == "target_modules":
            raw = sub.value if isinstance(sub.value, list) else None
            names = [x.value for x in raw] if raw is not None else None
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                problems.append(f"{sub.where()}: 'target_modules' must be a list of module names, e.g. [q_proj, "
                                "v_proj] (or leave it out: peft's default for the architecture)")
            else:
                values[key] = tuple(names)
        elif key == "enabled":
            if not isinstance(sub.value, bool):
                problems.append(f"{sub.where()}: 'enabled' must be true or false")
            else:
                values[key] = sub.value
        elif key in ("r", "alpha"):
            got = _number(sub, key, int, problems, 1, 4096)
            if got is not None:
                values[key] = got
        elif key == "dropout":
            got = _number(sub, key, float, problems, 0.0, 0.9)
            if got is not None:
                values[key] = got
        else:
            problems.append(f"{sub.where()}: unknown lora key {key!r} (known: r, alpha, dropout, target_modules, "
                            "enabled)")
    return LoraSettings(**values)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENDPOINT_LIMITS = {"timeout_s": (0.01, 600.0), "retries": (0, 10), "backoff_s": (0.0, 60.0),
                    "breaker_failures": (1, 1000), "breaker_reset_s": (0.1, 3600.0)}


def _parse_endpoint(item: Located, problems: list[str]) -> EndpointConfig | None:
    """``generation.endpoint``: url and model required; every other key checked against its kind."""
    if not isinstance(item.value, dict):
        problems.append(f"{item.where()}: 'endpoint' must be a mapping with url and model (an OpenAI-compatible "
                        "server: vLLM, TGI, llama.cpp, Ollama)")
        return None
    defaults = EndpointConfig(url="", model="")
    values: dict[str, Any] = {}
    before = len(problems)
    for key, sub in item.value.items():
        v = sub.value
        if key not in EndpointConfig.__dataclass_fields__:
            known = ", ".join(EndpointConfig.__dataclass_fields__)
            problems.append(f"{sub.where()}: unknown endpoint key {key!r} (known: {known})")
        elif key == "url":
            parts = urlsplit(v) if isinstance(v, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"{sub.where()}: 'url' must be an http:// or https:// address, e.g. "
                                "http://generator:8000/v1")
            elif parts.username or parts.password or parts.query or parts.fragment:
                problems.append(f"{sub.where()}: 'url' must not carry a user, password, query or fragment (put the "
                                "API key in the environment variable named by api_key_env)")
            else:
                values[key] = v
        elif key == "api":
            if v not in ("chat", "completions"):
                problems.append(f"{sub.where()}: 'api' must be chat or completions")
            else:
                values[key] = v
        elif key == "api_key_env":
            if not isinstance(v, str) or not _ENV_NAME.fullmatch(v):
                problems.append(f"{sub.where()}: 'api_key_env' must be the name of an environment variable")
            elif v.startswith("SWITCHBOARD_"):
                problems.append(f"{sub.where()}: 'api_key_env' {v!r}: SWITCHBOARD_* names are the server's settings "
                                "(an unknown one stops it); use another name, e.g. GENERATOR_API_KEY")
            else:
                values[key] = v
        elif isinstance(getattr(defaults, key), bool):
            if not isinstance(v, bool):
                problems.append(f"{sub.where()}: {key!r} must be true or false")
            else:
                values[key] = v
        elif isinstance(getattr(defaults, key), str):
            if not isinstance(v, str) or not v.strip():
                problems.append(f"{sub.where()}: {key!r} must be a non-empty text")
            else:
                values[key] = v
        else:
            low, high = _ENDPOINT_LIMITS[key]
            got = _number(sub, key, type(getattr(defaults, key)), problems, low, high)
            if got is not None:
                values[key] = got
    for needed in ("url", "model"):
        if needed not in item.value:
            problems.append(f"{item.where()}: 'endpoint' needs {needed!r}")
    return EndpointConfig(**values) if len(problems) == before else None


_COMPOSE_LIMITS = {"below": (0.0, 1.0), "passages": (0, 10), "templates": (0, 10)}


def _parse_compose(item: Located, problems: list[str]) -> ComposeSettings | None:
    switch = _switch(item, "compose", problems)
    if switch is not None:
        return ComposeSettings() if switch else None
    values: dict[str, Any] = {}
    for key, sub in item.value.items():
        if key not in _COMPOSE_LIMITS:
            problems.append(f"{sub.where()}: unknown compose key {key!r} (known: {', '.join(_COMPOSE_LIMITS)})")
            continue
        low, high = _COMPOSE_LIMITS[key]
        got = _number(sub, key, type(getattr(ComposeSettings, key)), problems, low, high)
        if got is not None:
            values[key] = got
    if values.get("passages", 1) + values.get("templates", 1) == 0:
        problems.append(f"{item.where()}: 'compose' needs passages or templates to write from (both are 0)")
    return ComposeSettings(**values)


def parse_answers_config(bot: BotSpec) -> AnswersConfig:
    """The ``answers:`` and ``knowledge_base:`` sections, every problem as ``file:line: ...``."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    section = bot.sections.get("answers")
    if section is not None and section.value is not None:
        if not isinstance(section.value, dict):
            raise ConfigError(f"{section.where()}: 'answers' must be a mapping (default, intents, pairs, values, ...)")
        for key, item in section.value.items():
            if key == "default":
                if item.value not in MODES:
                    problems.append(f"{item.where()}: 'default' must be one of {', '.join(MODES)}")
                else:
                    values[key] = item.value
            elif key == "intents":
                values[key] = _parse_modes(item, bot, problems)
            elif key == "pairs":
                raw = item.value if isinstance(item.value, list) else [item]
                for x in raw:
                    if not isinstance(x.value, str) or not (bot.directory / x.value).is_file():
                        problems.append(f"{x.where()}: pairs file {x.value!r} not found (a CSV path relative to "
                                        f"{bot.directory})")
                values[key] = tuple(str(x.value) for x in raw)
            elif key == "values":
                if not isinstance(item.value, dict) or any(not isinstance(v.value, str | int | float)
                                                           for v in item.value.values()):
                    problems.append(f"{item.where()}: 'values' must map placeholder names to texts")
                else:
                    values[key] = {k: str(v.value) for k, v in item.value.items()}
            elif key == "generation":
                values[key] = _parse_generation(item, problems)
            elif key == "compose":
                values[key] = _parse_compose(item, problems)
            elif key in _INT_KEYS | _FLOAT_KEYS:
                kind = int if key in _INT_KEYS else float
                got = _number(item, key, kind, problems, 0, 1.0 if kind is float else 1e6)
                if got is not None:
                    values[key] = got
            else:
                known = ["default", "intents", "pairs", "values", "generation", "compose",
                         *sorted(_INT_KEYS | _FLOAT_KEYS)]
                problems.append(f"{item.where()}: unknown answers key {key!r} (known: {', '.join(known)})")
    _parse_knowledge_base(bot, values, problems)
    if values.get("generation") is None and "generation" in values.get("intents", {}).values():
        problems.append(f"{section.where() if section else bot.file}: an intent uses generation but "
                        "'answers.generation' is not configured")
    if values.get("compose") is not None and values.get("generation") is None and section is not None:
        problems.append(f"{section.value['compose'].where()}: 'compose' needs a generator: configure "
                        "'answers.generation' (a model trained here, or an endpoint)")
    if problems:
        raise ConfigError(problems)
    return AnswersConfig(**values)


def _parse_modes(item: Located, bot: BotSpec, problems: list[str]) -> dict[str, str]:
    if not isinstance(item.value, dict):
        problems.append(f"{item.where()}: 'intents' must map intent names to {', '.join(MODES)}")
        return {}
    modes: dict[str, str] = {}
    for name, mode in item.value.items():
        if name not in bot.intents:
            problems.append(f"{mode.where()}: unknown intent {name!r} in answers.intents")
        elif mode.value not in MODES:
            problems.append(f"{mode.where()}: answer mode of {name!r} must be one of {', '.join(MODES)}")
        elif mode.value == "template" and not bot.intents[name].responses:
            problems.append(f"{mode.where()}: intent {name!r} uses 'template' but has no 'response'")
        else:
            modes[name] = str(mode.value)
    return modes


def _parse_knowledge_base(bot: BotSpec, values: dict[str, Any], problems: list[str]) -> None:
    kb = bot.sections.get("knowledge_base")
    if kb is None or kb.value is None:
        return
    if isinstance(kb.value, str):
        folder, where = kb.value, kb
    elif isinstance(kb.value, dict) and isinstance(kb.value.get("folder"), Located):
        folder, where = kb.value["folder"].value, kb.value["folder"]
        for key, item in kb.value.items():
            if key in ("chunk_words", "overlap_sentences"):
                got = _number(item, key, int, problems, 1 if key == "chunk_words" else 0, 10_000)
                if got is not None:
                    values[key] = got
            elif key != "folder":
                problems.append(f"{item.where()}: unknown knowledge_base key {key!r} "
                                "(known: folder, chunk_words, overlap_sentences)")
    else:
        problems.append(f"{kb.where()}: 'knowledge_base' must be a folder path or a mapping with 'folder'")
        return
    if not isinstance(folder, str) or not (bot.directory / folder).is_dir():
        problems.append(f"{where.where()}: knowledge base folder {folder!r} not found in {bot.directory}")
        return
    path = bot.directory / folder
    if not any(p.suffix.lower() in KB_SUFFIXES for p in path.rglob("*")):
        problems.append(f"{where.where()}: knowledge base folder {folder!r} has no .md or .txt documents")
    values["kb_folder"] = folder
