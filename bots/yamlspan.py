"""YAML with line numbers: load a file into plain Python values while remembering where
each value came from, so that validation errors can say ``file:line: what to fix``.

``yaml12=True`` reads plain scalars as YAML 1.2's core schema does (as Rasa's loader, ruamel in
1.2 mode, reads its files): only ``true``/``false`` are booleans, so ``yes``, ``no``, ``on``,
``off``, ``y`` and ``n`` stay text (an intent named ``yes`` must not become ``True``), ``010``
is ten, ``0o10`` eight, and ``1:20`` or ``2024-01-01`` stay text. bot.yml is read this way too
(bots/loader.py, bots/botspec.py): ``response: no`` is the word "no", and a setting that wants a
boolean and is given ``yes`` is refused at its line by that setting's check.

Mapping keys are names: a plain key that a schema would turn into a boolean or a number (``yes:``,
``true:``, ``off:``, ``010:``) is read as the text written, in both modes, so an intent ``yes:``
is "yes" and never ``True``; a null key (``~:``, ``null:``) is refused with its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bots.errors import ConfigError


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core schema resolution of plain scalars."""


def _construct_int12(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 10)


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
):
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int12)


@dataclass(frozen=True)
class Located:
    """A YAML value and its position (1-based line)."""

    value: Any
    line: int
    file: str
    key_line: int = 0   # a mapping's value: the line of its key (a block value starts on the next line)

    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def key_where(self) -> str:
        """``file:line`` of the key naming this value (``slots:`` entries, ``forms:``...), else of the value."""
        return f"{self.file}:{self.key_line or self.line}"


def _to_located(node: yaml.Node, file: str, loader_cls: type[yaml.SafeLoader] = yaml.SafeLoader) -> Located:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key = _to_located(key_node, file, loader_cls)
            if isinstance(key.value, bool | int | float) and isinstance(key_node, yaml.ScalarNode):
                name = str(key_node.value)  # the name as written: `yes:` is "yes", never True
            elif isinstance(key.value, str):
                name = key.value
            else:
                raise ConfigError(f"{file}:{key.line}: mapping keys must be plain names")
            if name in out:
                raise ConfigError(f"{file}:{key.line}: duplicate key {name!r} (first at line {out[name].line})")
            value = _to_located(value_node, file, loader_cls)
            out[name] = Located(value.value, value.line, value.file, key.line)
        return Located(out, line, file)
    if isinstance(node, yaml.SequenceNode):
        return Located([_to_located(n, file, loader_cls) for n in node.value], line, file)
    # Scalars: resolve tags the way safe_load would (the loader class composed them with its resolvers).
    loader = loader_cls("")
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag (`!custom`): only plain YAML is read
        raise ConfigError(f"{file}:{line}: invalid YAML: {exc.problem}") from None
    finally:
        loader.dispose()
    if isinstance(value, str) and any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ConfigError(f"{file}:{line}: text contains a lone UTF-16 surrogate (e.g. an escaped emoji half "
                          "like \\ud83d): write the character itself")
    return Located(value, line, file)


_MARKDOWN_NLU = re.compile(r"^##\s*(intent|synonym|regex|lookup)\s*:", re.MULTILINE)
_MARKDOWN_STORY = re.compile(r"^##\s*\S.*\n(?:\s*(?:<!--.*)?\n)*\s*\*\s*\S", re.MULTILINE)
_MARKDOWN_HINT = (" (the file is written in Rasa 1's Markdown format, `## intent:` sections or `## story` headings "
                  "with `* intent` lines; Rasa 3 reads YAML only, as here: Rasa 2's `rasa data convert` converts it)")


def _rasa_markdown(text: str) -> bool:
    """Whether a Rasa file that does not parse as YAML is Rasa 1's Markdown training data (NLU sections or stories),
    which Rasa 3 refuses too (its YAML reader: ``YamlSyntaxException``)."""
    return bool(_MARKDOWN_NLU.search(text) or _MARKDOWN_STORY.search(text))


def load_located(path: Path, *, text: str | None = None, yaml12: bool = False) -> Located:
    """Parse ``path`` (or ``text`` attributed to it). Syntax errors become ConfigError with
    the line YAML reports. ``yaml12``: plain scalars resolved by YAML 1.2's core schema (Rasa files)."""
    loader_cls: type[yaml.SafeLoader] = Yaml12Loader if yaml12 else yaml.SafeLoader
    file = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{file}: file not found") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        hint = _MARKDOWN_HINT if yaml12 and _rasa_markdown(text) else ""
        raise ConfigError(f"{file}:{line}: invalid YAML: {exc.problem or exc.context}{hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    if node is None:
        return Located({}, 1, file)
    return _to_located(node, file, loader_cls)


def plain(item: Located) -> Any:
    """Strip positions: the plain value."""
    v = item.value
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v
