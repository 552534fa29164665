"""The serving knobs read from SWITCHBOARD_* variables: defaults, overrides, and a clear error
naming the variable for a bad value (start-up stops with it; nothing runs on a wrong setting)."""

from __future__ import annotations

import pytest

from bots.errors import ConfigError
from bots.settings import Settings


def test_serving_defaults_and_overrides() -> None:
    default = Settings.from_env({})
    assert (default.nlu_workers, default.nlu_max_batch, default.state_cache, default.gc_gen0) == (2, 16, 1000, 50_000)
    tuned = Settings.from_env({"SWITCHBOARD_NLU_WORKERS": "3", "SWITCHBOARD_NLU_MAX_BATCH": "8",
                               "SWITCHBOARD_STATE_CACHE": "0", "SWITCHBOARD_GC_GEN0": "700"})
    assert (tuned.nlu_workers, tuned.nlu_max_batch, tuned.state_cache, tuned.gc_gen0) == (3, 8, 0, 700)


@pytest.mark.parametrize(("name", "value"), [
    ("SWITCHBOARD_GC_GEN0", "lots"), ("SWITCHBOARD_GC_GEN0", "10"), ("SWITCHBOARD_NLU_WORKERS", "0"),
    ("SWITCHBOARD_STATE_CACHE", "-1"), ("SWITCHBOARD_NLU_MAX_BATCH", "1.5"),
])
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
