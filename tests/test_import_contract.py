"""The package directions of DESIGN.md, checked on the source.

* ``bots/`` (the serving runtime) never imports ``training/``, ``connectors/`` or a channel or
  training library: slack_bolt, slack_sdk, aiogram, fastapi, starlette, torch, transformers.
* ``training/`` never imports ``connectors/``, and from ``bots/`` only what makes the served
  artifact and its inputs: bots.artifact (the artifact format), bots.nlu.model, bots.nlu.ngrams,
  bots.nlu.oos and bots.nlu.pipeline (evaluation runs the exported model, its n-gram features, its
  out-of-scope rule and the bot's NLU pipeline through the serving path), bots.nlu.spelling (the
  spelling vocabulary is written into the artifact in the format serving reads),
  bots.answers.retrieval, bots.answers.grounding,
  bots.answers.generation and bots.answers.decoding (answers are evaluated, the generator prompted
  and its export checked exactly as served), and
  the bot definition: bots.botspec, bots.types, bots.errors, bots.yamlspan, with the bot loaders
  bots.loader (bot.yml or a Rasa project) and bots.dialogue.check (a bot is checked before it trains),
  bots.dialogue.rasa_data, bots.dialogue.rasa_domain and bots.dialogue.rasa_yaml (a Rasa NLU or domain
  file given with --data is read as a Rasa project reads it),
  and bots.dialogue.domain with bots.dialogue.policies (the learned next-action model trains on the
  stories featurised exactly as the served policies featurise a conversation).
* No import cycles among the modules of ``bots/``, ``connectors/`` and ``training/``. Every import
  statement counts wherever it is written: inside functions and under ``if TYPE_CHECKING:`` too,
  so a lazy import cannot hide a cycle. Allowed cycles: none.

The lists below are these sentences; ``test_docstring_states_the_allow_lists`` keeps them in step.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TRAINING_MAY_USE = {"bots.artifact", "bots.nlu.model", "bots.nlu.ngrams", "bots.nlu.oos", "bots.nlu.pipeline",
                    "bots.nlu.spelling",
                    "bots.answers.retrieval",
                    "bots.answers.grounding", "bots.answers.generation", "bots.answers.decoding", "bots.botspec",
                    "bots.types", "bots.errors",
                    "bots.yamlspan", "bots.loader", "bots.dialogue.check", "bots.dialogue.rasa_data",
                    "bots.dialogue.rasa_domain", "bots.dialogue.rasa_yaml",
                    "bots.dialogue.domain", "bots.dialogue.policies"}
CHANNEL_LIBRARIES = {"slack_bolt", "slack_sdk", "aiogram", "fastapi", "starlette", "torch", "transformers", "training",
                     "connectors"}
PROJECT_PACKAGES = ("bots", "connectors", "training")
# Strongly connected groups of modules that may import each other, as sorted tuples. Keep empty.
ALLOWED_CYCLES: set[tuple[str, ...]] = set()


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


# ---------------------------------------------------------------- import cycles
def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project packages (a package is its __init__)."""
    found: dict[str, Path] = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def project_imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules ``module`` imports, from every import statement anywhere in the file.
    ``from a.b import c`` depends on ``a.b``, and on ``a.b.c`` too when that is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets.add(source)
            targets.update(f"{source}.{alias.name}" for alias in node.names)
    return {t for t in targets if t in modules and t != module}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: project_imports(module, path, set(files)) for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(tuple(sorted(component)))
    return found


def _path_through(graph: dict[str, set[str]], component: tuple[str, ...]) -> str:
    """One shortest concrete cycle through the first module of ``component`` (a -> b -> a), for the message."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return " -> ".join([*reversed(path), start])
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return " <-> ".join(component)


def test_no_import_cycles_among_project_modules() -> None:
    graph = import_graph()
    assert {"bots.runtime", "connectors.app", "training.answers", "training.generator"} <= set(graph)
    found = cycles(graph)
    unexpected = sorted(_path_through(graph, c) for c in found - ALLOWED_CYCLES)
    assert not unexpected, "import cycles (break them; a function-level import does not): " + "; ".join(unexpected)
    stale = ALLOWED_CYCLES - found
    assert not stale, f"ALLOWED_CYCLES lists cycles that no longer exist: {sorted(stale)}"


def test_cycle_check_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle hidden behind a function-level, relative or TYPE_CHECKING import is found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f() -> None:\n    from . import c\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (package / "d.py").write_text("import pkg.a\n")
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    graph = {m: project_imports(m, package / ("__init__.py" if m == "pkg" else f"{m[4:]}.py"), modules)
             for m in modules}
    assert graph["pkg.b"] == {"pkg", "pkg.c"}
    assert cycles(graph) == {("pkg.a", "pkg.b", "pkg.c")}
    assert _path_through(graph, ("pkg.a", "pkg.b", "pkg.c")) == "pkg.a -> pkg.b -> pkg.c -> pkg.a"


def test_docstring_states_the_allow_lists() -> None:
    doc = " ".join((__doc__ or "").split())
    for name in sorted(TRAINING_MAY_USE | CHANNEL_LIBRARIES - {"training", "connectors"}):
        assert name in doc, f"{name} is allowed but the module docstring does not say so"
    for package in PROJECT_PACKAGES:
        assert f"``{package}/``" in doc
    if ALLOWED_CYCLES:
        for cycle in ALLOWED_CYCLES:
            assert all(module in doc for module in cycle), f"allowed cycle {cycle} is not in the docstring"
    else:
        assert "Allowed cycles: none." in doc
