"""TrainConfig: frozen, validated, unknown keys are errors."""

from __future__ import annotations

import dataclasses

import pytest

from bots.errors import ConfigError
from training.config import TrainConfig


def test_defaults_round_trip() -> None:
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]


def test_unknown_keys_and_bad_values_are_all_reported() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"epoch": 3, "batch_size": "big", "lr_head": -1.0}, where="bot.yml:40")
    problems = err.value.problems
    assert any("bot.yml:40: unknown training key 'epoch'" in p for p in problems)
    assert any("'batch_size' must be int" in p for p in problems)


def test_validation_of_ranges() -> None:
    with pytest.raises(ConfigError, match="lr_head must be positive"):
        TrainConfig(lr_head=0.0)
    with pytest.raises(ConfigError, match="mode must be one of"):
        TrainConfig.from_dict({"mode": "slow"})
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        TrainConfig().with_overrides(epochs=0)


def test_overrides_skip_none() -> None:
    cfg = TrainConfig().with_overrides(epochs=None, seed=7, mode="fast")
    assert (cfg.epochs, cfg.seed, cfg.mode) == (TrainConfig().epochs, 7, "fast")
    assert TrainConfig.from_dict({"lr_head": 1}).lr_head == 1.0  # ints are fine for floats
