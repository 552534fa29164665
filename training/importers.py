"""Training data from other tools' files, each into ``NluData``.

- Rasa ``nlu.yml`` (``nlu:`` items with ``intent``/``synonym``/``regex``/``lookup``; examples as
  Rasa's block string of ``- `` lines or a list; ``[text](entity)``, ``[text](entity:value)`` and
  ``[text]{"entity": ..., "role": ..., "group": ..., "value": ...}`` annotations), read by the one Rasa
  data reader a Rasa project's folder is loaded with (bots/dialogue/rasa_data.py), so a file gives the
  same examples, synonyms, notes and errors either way; and ``domain.yml`` (intents, entities,
  responses: checked against the data, never required).
- CSV with a header ``text,intent`` (``category`` or ``label`` is accepted for ``intent``, as in BANKING77).
- The Bitext customer-support CSV (``instruction,intent,entity_type,...,start_offset,end_offset``).

Every problem is reported as ``file:line: reason``, all at once. Rasa files are read as YAML 1.2,
as Rasa reads them (bots/yamlspan.py): ``- intent: yes`` is the intent "yes", never ``True``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from bots.dialogue.rasa_data import read_nlu_file
from bots.dialogue.rasa_domain import parse_domain
from bots.dialogue.rasa_yaml import Findings
from bots.errors import ConfigError
from bots.loader import is_bot_folder, load_bot_folder
from bots.types import Entity
from bots.yamlspan import Located, load_located
from training.data import NluData, Sample, from_bot

_INTENT_COLUMNS = ("intent", "category", "label")


def load_data(path: Path) -> NluData:
    """Any supported file (or a bot folder) by its shape."""
    path = Path(path)
    if path.is_dir():
        if is_bot_folder(path):  # bot.yml, or a Rasa project (its nlu data)
            return from_bot(load_bot_folder(path)[0])
        raise ConfigError(f"{path}: a folder of training data must be a bot folder (bot.yml, or a Rasa project "
                          f"with domain.yml and config.yml)")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        return load_csv(path)
    if path.suffix.lower() in (".yml", ".yaml"):
        if path.name == "bot.yml":
            return from_bot(load_bot_folder(path.parent)[0])
        root = load_located(path, yaml12=True)  # Rasa files are YAML 1.2: `- intent: yes` is "yes"
        if isinstance(root.value, dict) and "nlu" in root.value:
            return load_rasa_nlu(path, root)
        if isinstance(root.value, dict) and "intents" in root.value:
            return load_rasa_domain(path, root)
        raise ConfigError(f"{path}:1: not Rasa training data (expected an 'nlu:' list or a domain with 'intents:')")
    raise ConfigError(f"{path}: unsupported data file (use bot.yml, Rasa .yml, or .csv)")


def load_rasa_nlu(path: Path, root: Located | None = None) -> NluData:
    """A Rasa NLU file, read by the one Rasa data reader (bots/dialogue/rasa_data.py): what a Rasa project
    loads from the same file (examples, entities with roles and groups, synonyms of both forms, regexes and
    lookups checked) with the same notes and errors at the same ``file:line``. A retrieval intent
    (``faq/ask_price``) trains its intent (``faq``), as Rasa's intent classifier learns it."""
    root = root or load_located(path, yaml12=True)
    if not isinstance(root.value, dict) or "nlu" not in root.value:
        raise ConfigError(f"{root.where()}: Rasa NLU data must be a mapping with 'nlu:'")
    data, notes = read_nlu_file(path, root)
    warnings = list(notes)
    for key in ("responses", "stories", "rules"):  # read by a Rasa project's loader, not by --data
        if key in root.value:
            warnings.append(f"{root.value[key].key_where()}: '{key}' is not NLU examples: not used from a data "
                            f"file (put the file in the Rasa project's data/ folder)")
    samples: list[Sample] = []
    for intent, examples in data.examples.items():
        if not examples:  # Rasa warns "Intent '...' has no examples."; a project's check reports it
            warnings.append(f"{data.intent_where[intent]}: intent {intent!r} has no examples")
        samples.extend(Sample(ex.text, intent, ex.entities, ex.where or data.intent_where[intent])
                       for ex in examples)
    return NluData(tuple(samples), dict(data.synonyms), tuple(warnings))


def load_rasa_domain(path: Path, root: Located | None = None) -> NluData:
    """A domain declares intents but holds no examples: read as a Rasa project reads its domain
    (bots/dialogue/rasa_domain.py: ConfigError with every error, its notes as warnings), it loads, and each
    declared intent without examples in the other data becomes a warning."""
    root = root or load_located(path, yaml12=True)
    if not isinstance(root.value, dict) or "intents" not in root.value:
        raise ConfigError(f"{root.where()}: a Rasa domain needs 'intents:'")
    findings = Findings()
    domain, _ = parse_domain([path], findings)
    findings.raise_errors()
    return NluData((), {}, tuple(findings.notes), tuple(domain.intents))


def load_csv(path: Path) -> NluData:
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "instruction" in columns and "start_offset" in columns:
            return _bitext(path, reader)
        text_col = next((c for c in reader.fieldnames or [] if c.strip().lower() == "text"), None)
        intent_col = next((c for c in reader.fieldnames or [] if c.strip().lower() in _INTENT_COLUMNS), None)
        if text_col is None or intent_col is None:
            raise ConfigError(f"{path}:1: CSV header must name a 'text' and an 'intent' column, got {columns}")
        samples, problems = [], []
        line = 1
        for row in reader:
            start = line + 1
            line = reader.line_num
            text, intent = (row.get(text_col) or "").strip(), (row.get(intent_col) or "").strip()
            if not text or not intent:
                problems.append(f"{path}:{start}: both text and intent are required")
                continue
            samples.append(Sample(text, intent, (), f"{path}:{start}"))
    if problems:
        raise ConfigError(problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else []))
    return NluData(tuple(samples))


def _bitext(path: Path, reader: csv.DictReader[str]) -> NluData:
    samples, problems = [], []
    line = 1
    for row in reader:
        start_line = line + 1
        line = reader.line_num
        text, intent = (row.get("instruction") or "").strip(), (row.get("intent") or "").strip()
        if not text or not intent:
            problems.append(f"{path}:{start_line}: instruction and intent are required")
            continue
        entities: tuple[Entity, ...] = ()
        kind = (row.get("entity_type") or "").strip()
        if kind:
            try:
                s, e = int(row.get("start_offset") or ""), int(row.get("end_offset") or "")
            except ValueError:
                problems.append(f"{path}:{start_line}: start_offset and end_offset must be integers")
                continue
            raw = row.get("instruction") or ""
            lead = len(raw) - len(raw.lstrip())
            s, e = s - lead, e - lead
            if not 0 <= s < e <= len(text):
                problems.append(f"{path}:{start_line}: entity offsets {s}..{e} fall outside the text")
                continue
            # The value column holds ids normalised per row (leading zeros cut): not a synonym.
            entities = (Entity(kind, text[s:e], s, e),)
        samples.append(Sample(text, intent, entities, f"{path}:{start_line}"))
    if problems:
        raise ConfigError(problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else []))
    return NluData(tuple(samples))
