"""``switchboard serve`` tunes its process before loading bots (connectors/cli.py ``tune_serving_process``):
numpy's BLAS on one thread (its thread pool spins after each small per-message matrix product: ~3 ms of CPU
per message, bench/RESULTS.md "Load"), the tokenizer's own thread pool off (TOKENIZERS_PARALLELISM) and a less
frequent young-generation GC. Checked in a fresh process, as the limits are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

# As `switchboard serve` runs it: numpy (OpenBLAS) is not loaded yet when the process is tuned; the bots
# load it later. threadpoolctl only reaches libraries already loaded, so the tuning must load it itself.
_PROBE = """
import gc, json, os, sys
from threadpoolctl import threadpool_info
from bots.settings import Settings
from connectors.cli import tune_serving_process
loaded_before = "numpy" in sys.modules
tune_serving_process(Settings())
import numpy  # what the bots load
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"loaded_before": loaded_before, "after": after, "gc0": gc.get_threshold()[0],
                  "gen0": Settings().gc_gen0, "tokenizers": os.environ.get("TOKENIZERS_PARALLELISM")}))
"""
_POOL = """
import json
from threadpoolctl import threadpool_info
import numpy
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
"""


def test_serving_process_tunes_blas_tokenizer_and_gc() -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"}
    pool = subprocess.run([sys.executable, "-c", _POOL], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert pool.returncode == 0, pool.stderr
    assert json.loads(pool.stdout) == [2]  # the pool as numpy starts it here, untuned
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["loaded_before"] is False  # as in the server: the tuning itself has to load OpenBLAS
    assert seen["after"] == [1]
    assert seen["gc0"] == seen["gen0"] != 700
    assert seen["tokenizers"] == "false"  # a batch's few texts are encoded in the NLU worker, not on a pool
