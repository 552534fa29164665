"""SECURITY.md names the test that proves each defence: every one of them must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_security_md_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    current_file: str | None = None
    missing = []
    named = 0
    for token in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?|(?<![\w/])::(\w+)|`(test_\w+)`", text):
        path, name, bare, plain = token
        if path:
            current_file = path
            assert (ROOT / path).is_file(), f"SECURITY.md names {path}, which does not exist"
        name = name or bare or plain
        if not name:
            continue
        assert current_file is not None
        tree = ast.parse((ROOT / current_file).read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        named += 1
        if name not in defined:
            missing.append(f"{current_file}::{name}")
    assert not missing, missing
    assert named >= 15
