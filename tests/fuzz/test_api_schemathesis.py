"""Schemathesis against the app's own OpenAPI schema, on a real server process: every public
and admin operation, each generated request sent without auth and with a valid admin
token. Zero 5xx, and every 4xx says why (a JSON ``detail``).

Bounded in CI by SWITCHBOARD_FUZZ_EXAMPLES (examples per operation, default 60; each is
sent twice). For a release run: SWITCHBOARD_FUZZ_EXAMPLES=2000 pytest tests/fuzz.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import ADMIN_TOKEN
from tests.fixtures.server import ServeProcess

EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "60"))
SENT: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_server(tiny_bot_dir: Path, module_tmp: Callable[[str], Path]) -> Iterator[ServeProcess]:
    data = module_tmp("fuzz")
    env = {"SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN, "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    with ServeProcess([tiny_bot_dir], data_dir=data, env=env) as server:
        yield server
    log = server.log()
    assert "Traceback" not in log, log


def _operations(server: ServeProcess) -> list:  # type: ignore[type-arg]
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _check(response, label: str) -> None:  # type: ignore[no-untyped-def]
    status = response.status_code
    SENT[f"{label} {status // 100}xx"] += 1
    request = f"{response.request.method} {response.request.url}"
    assert status < 500, f"{status} for {request}: {response.text[:500]}"
    if 400 <= status < 500:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = None
        assert detail, f"{status} without a reason for {request}: {response.text[:300]}"


def test_every_operation_with_and_without_auth(fuzz_server: ServeProcess) -> None:
    operations = _operations(fuzz_server)
    assert len(operations) >= 3, [op.label for op in operations]
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            _check(case.call(base_url=fuzz_server.url, timeout=30), "anonymous")
            _check(case.call(base_url=fuzz_server.url, timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), "admin")

        run()
        SENT["operations"] += 1


def test_zz_fuzz_report() -> None:
    """Prints how many requests the fuzzer sent (runs last in this module)."""
    total = sum(SENT.values())
    print(f"schemathesis sent {total} requests: {dict(sorted(SENT.items()))}")
    assert total > 0
