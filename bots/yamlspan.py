"""YAML with line numbers: load a file into plain Python values while remembering where
each value came from, so that validation errors can say ``file:line: what to fix``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bots.errors import ConfigError


@dataclass(frozen=True)
class Located:
    """A YAML value and its position (1-based line)."""

    value: Any
    line: int
    file: str

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _to_located(node: yaml.Node, file: str) -> Located:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key = _to_located(key_node, file)
            if not isinstance(key.value, str | int | float | bool):
                raise ConfigError(f"{file}:{key.line}: mapping keys must be plain names")
            name = str(key.value)
            if name in out:
                raise ConfigError(f"{file}:{key.line}: duplicate key {name!r} (first at line {out[name].line})")
            out[name] = _to_located(value_node, file)
        return Located(out, line, file)
    if isinstance(node, yaml.SequenceNode):
        return Located([_to_located(n, file) for n in node.value], line, file)
    # Scalars: resolve tags the way safe_load would.
    loader = yaml.SafeLoader("")
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


def load_located(path: Path, *, text: str | None = None) -> Located:
    """Parse ``path`` (or ``text`` attributed to it). Syntax errors become ConfigError with
    the line YAML reports."""
    file = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{file}: file not found") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{file}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    if node is None:
        return Located({}, 1, file)
    return _to_located(node, file)


def plain(item: Located) -> Any:
    """Strip positions: the plain value."""
    v = item.value
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v
