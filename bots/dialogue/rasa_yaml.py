"""Reading Rasa's YAML files: the findings collector and the small typed readers the Rasa loaders share.

A Rasa project is read whole before anything is refused: every problem goes into ``Findings``
(``errors``: the bot cannot load; ``notes``: it loads, and the note says what Switchboard does not
do or does differently, ``file:line: not supported: ...``). The loader raises one ConfigError with
every error at the end, so a user fixes a project in one pass instead of one line per run.

Rasa reads its files as YAML 1.2 (``yes``/``no``/``on``/``off`` are text, not booleans):
``read_yaml`` loads them with bots.yamlspan's ``yaml12`` reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bots.botspec import block_examples
from bots.errors import ConfigError
from bots.yamlspan import Located, load_located

_ENV = re.compile(r"\$\{([^}:]+)\}")


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Names defined with an error (a slot, response, form, ...): the checks treat them as declared, so
    # one mistake is reported once, not again at every place the name is used.
    broken: set[str] = field(default_factory=set)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def note(self, where: str, message: str) -> None:
        text = f"{where}: {message}"
        if text not in self.notes:
            self.notes.append(text)

    def unsupported(self, where: str, what: str) -> None:
        self.note(where, f"not supported: {what}")

    def raise_errors(self) -> None:
        if self.errors:
            raise ConfigError(self.errors)


def read_yaml(path: Path, findings: Findings) -> Located | None:
    """The file as located YAML 1.2, or None (with its error recorded) when it cannot be read."""
    try:
        return load_located(path, yaml12=True)
    except ConfigError as exc:
        findings.errors.extend(exc.problems)
        return None


def as_mapping(item: Located, what: str, findings: Findings) -> dict[str, Located] | None:
    if item.value is None:
        return {}
    if not isinstance(item.value, dict):
        findings.error(item.key_where(), f"{what} must be a mapping")
        return None
    return item.value  # type: ignore[no-any-return]


def read_mapping(path: Path, what: str, findings: Findings) -> dict[str, Located] | None:
    """A file whose top level is a mapping (``what`` names it in the error), or None when it cannot be read
    or is something else (recorded); an empty file is an empty mapping."""
    root = read_yaml(path, findings)
    return None if root is None else as_mapping(root, what, findings)


def check_version(top: dict[str, Located], findings: Findings) -> None:
    """A file's ``version:``: text (an error otherwise); another major than 3 is noted and read as 3.x."""
    if "version" in top:
        v = top["version"]
        if not isinstance(v.value, str):
            findings.error(v.key_where(), "'version' must be text, e.g. \"3.1\" (quoted)")
        elif not v.value.startswith("3"):
            findings.note(v.key_where(), f"written for Rasa {v.value}: read as Rasa 3.x")


def as_list(item: Located, what: str, findings: Findings) -> list[Located] | None:
    if item.value is None:
        return []
    if not isinstance(item.value, list):
        findings.error(item.key_where(), f"{what} must be a list")
        return None
    return item.value  # type: ignore[no-any-return]


def check_keys(fields: dict[str, Located], what: str, known: tuple[str, ...], findings: Findings,
               unsupported: dict[str, str] | None = None, ignored: str | None = None) -> None:
    """Keys outside ``known``: a note for the ones Rasa knows and Switchboard does not run (with the
    reason), an error for any other (a typo Rasa would refuse too). Where Rasa takes any other key and
    ignores it (``ignored`` says how), such a key is a note saying so, not an error."""
    for key, value in fields.items():
        if key in known:
            continue
        if unsupported is not None and key in unsupported:
            findings.unsupported(value.key_where(), f"{what}: '{key}' ({unsupported[key]})")
        elif ignored is not None:
            findings.note(value.key_where(), f"{what}: '{key}' is not a setting of it: not read ({ignored})")
        else:
            findings.error(value.key_where(), f"{what}: unknown key '{key}' (known: {', '.join(known)})")


def name_of(item: Located, what: str, findings: Findings) -> str | None:
    """A non-empty name (intent, entity, slot, action, ...). Numbers are names too (``- 42``)."""
    value = item.value
    if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
        hint = ""
        if isinstance(value, bool):  # Rasa reads YAML 1.2: only true/false are booleans (`yes` is a name)
            hint = f": YAML reads {str(value).lower()} as a boolean (write the name in quotes)"
        elif value is None:
            hint = ": it is empty (or null)"
        findings.error(item.key_where(), f"{what} must be a name (text){hint}")
        return None
    return str(value).strip()


def names_of(item: Located, what: str, findings: Findings) -> list[tuple[str, Located]]:
    """One name or a list of names (``intent: greet`` or ``intent: [greet, hello]``)."""
    raw = item.value if isinstance(item.value, list) else [item]
    out: list[tuple[str, Located]] = []
    for x in raw:
        name = name_of(x, what, findings)
        if name is not None:
            out.append((name, x))
    return out


def boolean(item: Located, what: str, findings: Findings) -> bool | None:
    if not isinstance(item.value, bool):
        findings.error(item.key_where(), f"{what} must be true or false")
        return None
    return item.value


def number(item: Located, what: str, findings: Findings, *, low: float = float("-inf"),
           high: float = float("inf")) -> float | None:
    value = item.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        if low == float("-inf") and high == float("inf"):
            bounds = ""
        elif high == float("inf"):
            bounds = f" of at least {low:g}"
        else:
            bounds = f" between {low:g} and {high:g}"
        findings.error(item.key_where(), f"{what} must be a number{bounds}")
        return None
    return float(value)


def text_of(item: Located, what: str, findings: Findings) -> str | None:
    if isinstance(item.value, bool) or not isinstance(item.value, str | int | float):
        findings.error(item.key_where(), f"{what} must be text")
        return None
    return str(item.value)


def expand_env(text: str, where: str, what: str, findings: Findings) -> str:
    """``${VAR}`` replaced by the environment variable, as Rasa reads endpoints and credentials."""
    import os

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            findings.error(where, f"{what}: environment variable {m.group(1)} is not set")
            return m.group(0)
        return value

    return _ENV.sub(sub, text)


def plain_json(item: Located) -> Any:
    """A located value without positions (for custom payloads and metadata)."""
    v = item.value
    if isinstance(v, dict):
        return {k: plain_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain_json(x) for x in v]
    return v


def example_lines(item: Located, what: str, findings: Findings) -> list[tuple[str, str]]:
    """Examples as Rasa writes them: a block of ``- `` lines, a list of texts, or a list of
    ``{text: ..., metadata: ...}``. Each as (text, file:line)."""
    out: list[tuple[str, str]] = []
    if isinstance(item.value, str):
        for line, text in block_examples(item):
            where = f"{item.file}:{line}"
            if text is None:
                # Rasa's reader warns and skips such a line (RasaYAMLReader._parse_multiline_example),
                # and trains the rest: a project that trains in Rasa trains here, with the line named.
                findings.note(where, f"{what}: this line does not start with '- ': skipped, as Rasa skips it")
            elif not text:
                findings.error(where, f"{what}: empty example")
            else:
                out.append((text, where))
        return out
    if isinstance(item.value, list):
        for x in item.value:
            value: Any = x.value
            if isinstance(value, dict):
                if "text" not in value:
                    findings.error(x.key_where(), f"{what}: an example given as a mapping needs 'text'")
                    continue
                check_keys(value, what, ("text", "metadata"), findings)
                if "metadata" in value:
                    findings.unsupported(value["metadata"].key_where(),
                                         f"{what}: example metadata (only custom NLU components read it)")
                value = value["text"].value
            if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
                findings.error(x.key_where(), f"{what}: each example must be non-empty text")
                continue
            out.append((str(value).strip(), x.key_where()))
        return out
    findings.error(item.key_where(), f"{what}: 'examples' must be a block of '- ' lines")
    return []
