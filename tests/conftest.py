"""Shared fixtures: a tiny bot trained once per test session, and apps serving it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
TINY_BOT = ROOT / "tests" / "data" / "tiny_bot"
ADMIN_TOKEN = "test-admin-token-0123456789"

pytest_plugins = ["tests.fixtures.mongo"]


@pytest.fixture(scope="session")
def tiny_bot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/tiny_bot trained (fast mode) into a temporary copy."""
    from training.cli import main as training_main

    bot_dir = tmp_path_factory.mktemp("bots") / "tiny"
    shutil.copytree(TINY_BOT, bot_dir)
    code = training_main(["train", str(bot_dir), "--fast", "--seed", "0"])
    assert code == 0, "training the tiny test bot failed"
    return bot_dir


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[Callable[[str], Path]]:
    """``tmp_path_factory.mktemp`` for module-scoped fixtures, whose folders go when the module is done.

    A trained artifact is about 150 MB: kept to the end of the run, the suite's folders filled 11 GB of
    disk, and a CI machine with less free failed half way. As ``tmp_path_retention_policy = "failed"``
    keeps a failed test's ``tmp_path``, the folders stay when one of the module's tests failed.
    """
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    from bots.settings import Settings

    return Settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, nlu_max_wait_ms=0.0)


@pytest.fixture
def web_client(tiny_bot_dir: Path, settings) -> Iterator:  # type: ignore[no-untyped-def]
    """A TestClient of an app serving the tiny bot with the embedded store; waits until ready."""
    import time

    from fastapi.testclient import TestClient

    from connectors.app import create_app

    app = create_app(settings, [tiny_bot_dir])
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        yield client
