"""The serving knobs read from SWITCHBOARD_* variables: defaults, overrides, and a clear error
naming the variable for a bad value (start-up stops with it; nothing runs on a wrong setting)."""

from __future__ import annotations

from pathlib import Path

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


def test_an_unknown_variable_is_refused_naming_the_closest_setting() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SWITCHBOARD_NLU_THREAD": "2", "SWITCHBOARD_FROBNICATE": "1", "OTHER_NLU_THREAD": "2"})
    assert info.value.problems == [
        "SWITCHBOARD_FROBNICATE: not a setting (see the configuration table in README.md)",
        "SWITCHBOARD_NLU_THREAD: not a setting (did you mean SWITCHBOARD_NLU_THREADS?)",
    ]


def test_every_problem_is_reported_at_once_and_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SWITCHBOARD_PORT": "abc", "SWITCHBOARD_SLACK_TOKENS": "xoxb-secret",
                           "SWITCHBOARD_WIDGET_ORIGINS": "shop.example"})
    text = "\n".join(info.value.problems)
    assert "SWITCHBOARD_PORT='abc': expected a whole number" in text
    assert "SWITCHBOARD_WIDGET_ORIGINS: 'shop.example' is not an origin" in text
    assert "SWITCHBOARD_SLACK_TOKENS=***: not JSON" in text and "xoxb-secret" not in text


def test_defaults_are_the_fields_defaults_and_every_setting_is_read() -> None:
    import dataclasses

    assert Settings.from_env({}) == Settings()
    # data_dir is fixed to where the process started: custom actions change the working directory as they run
    assert Settings().data_dir == Path.cwd() / "data" and Settings.from_env({"SWITCHBOARD_DATA_DIR": "x/y"}).data_dir \
        == Path.cwd() / "x" / "y"
    # Each field is read from its variable: a non-default value for every one comes through.
    env = {"SWITCHBOARD_DATA_DIR": "/srv/data", "SWITCHBOARD_PORT": "9000", "SWITCHBOARD_HOST": "0.0.0.0",
           "SWITCHBOARD_WIDGET_ORIGINS": "https://Shop.example/, https://b.example",
           "SWITCHBOARD_LOG_LEVEL": "debug", "SWITCHBOARD_LOG_JSON": "false",
           "SWITCHBOARD_SLACK_TOKENS": '{"T1": "xoxb-1"}', "SWITCHBOARD_TELEGRAM_TOKENS": '{"b": "1:A"}'}
    for f in dataclasses.fields(Settings):
        name = f"SWITCHBOARD_{f.name.upper()}"
        if name not in env and isinstance(f.default, int | float) and not isinstance(f.default, bool):
            env[name] = str(f.default + 1)
        elif name not in env:
            env.setdefault(name, "https://set.example/" + "x" * 40)  # a URL, and long enough for any secret
    read = Settings.from_env(env)
    unchanged = [f.name for f in dataclasses.fields(Settings) if getattr(read, f.name) == getattr(Settings(), f.name)]
    assert unchanged == []
    assert read.widget_origins == ("https://shop.example", "https://b.example")
    assert (read.port, read.log_level, read.log_json) == (9000, "DEBUG", False)


def test_dead_settings_are_gone() -> None:
    with pytest.raises(ConfigError, match="SWITCHBOARD_SESSION_SECRET: not a setting"):
        Settings.from_env({"SWITCHBOARD_SESSION_SECRET": "x" * 32})
    assert not {"session_secret", "extra"} & set(Settings.__dataclass_fields__)


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "k8s" / "README.md"]
    texts += sorted((root / "k8s").rglob("*.yaml"))
    mentioned = set()
    for path in texts:
        for name in re.findall(r"SWITCHBOARD_[A-Z0-9_]+", path.read_text()):
            mentioned.add(name.rstrip("_"))
    known = set(Settings.variables())
    assert mentioned - known == set(), "documented but not a setting"
    readme = (root / "README.md").read_text() + (root / "docs" / "channels.md").read_text()
    assert {v for v in known if v not in readme} == set(), "a setting without a line in the configuration docs"
