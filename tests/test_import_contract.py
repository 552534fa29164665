"""The package directions of DESIGN.md, checked on the source: bots/ never imports training/ or
a channel library; training/ never imports connectors/ and from bots/ only the artifact format."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# bots.nlu.model and bots.answers.*: evaluation runs the exported artifact through the serving path,
# and the generator is prompted exactly as it is served.
TRAINING_MAY_USE = {"bots.artifact", "bots.nlu.model", "bots.answers.retrieval", "bots.answers.grounding",
                    "bots.answers.generation", "bots.botspec", "bots.types", "bots.errors", "bots.yamlspan"}
CHANNEL_LIBRARIES = {"slack_bolt", "slack_sdk", "aiogram", "fastapi", "starlette", "torch", "transformers", "training",
                     "connectors"}


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_bots_imports_no_training_connectors_or_channel_libraries() -> None:
    bad = {
        f"{file}: {name}"
        for file, names in imports_of("bots").items()
        for name in names
        if name.split(".")[0] in CHANNEL_LIBRARIES
    }
    assert not bad, sorted(bad)


def test_training_never_imports_connectors_and_only_the_artifact_format_from_bots() -> None:
    bad = set()
    for file, names in imports_of("training").items():
        for name in names:
            top = name.split(".")[0]
            if top == "connectors" or (top == "bots" and name not in TRAINING_MAY_USE):
                bad.add(f"{file}: {name}")
    assert not bad, sorted(bad)


def test_serving_process_never_imports_torch(tiny_bot_dir: Path, tmp_path: Path) -> None:
    code = f"""
import sys, time
from fastapi.testclient import TestClient
from bots.settings import Settings
from connectors.app import create_app
app = create_app(Settings(data_dir={str(tmp_path)!r}), [{str(tiny_bot_dir)!r}])
with TestClient(app) as client:
    deadline = time.monotonic() + 30
    while client.get('/readyz').status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = client.post('/bots/tiny/webhooks/web', json={{'conversation_id': 'c', 'message_id': 'm', 'text': 'hello'}})
    assert r.status_code == 200, r.text
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'training'))
print(heavy)
sys.exit(1 if heavy else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
