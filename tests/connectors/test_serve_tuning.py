"""``switchboard serve`` tunes its process before loading bots (connectors/cli.py ``tune_serving_process``):
numpy's BLAS on one thread (its thread pool spins after each small per-message matrix product: ~3 ms of CPU
per message, bench/RESULTS.md "Load") and a less frequent young-generation GC. Checked in a fresh process, as
the limits are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

_PROBE = """
import gc, json
from threadpoolctl import threadpool_info
import numpy  # loads OpenBLAS
from bots.settings import Settings
from connectors.cli import tune_serving_process
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
tune_serving_process(Settings())
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after, "gc0": gc.get_threshold()[0], "gen0": Settings().gc_gen0}))
"""


def test_serving_process_runs_blas_on_one_thread_and_collects_young_objects_less_often() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["before"] and max(seen["before"]) == 2  # the pool as numpy starts it here
    assert seen["after"] == [1] * len(seen["after"])
    assert seen["gc0"] == seen["gen0"] != 700
